"""A format that cannot win is not encoded at full size: the searches' sample bytes, shared
between the formats of one conversion.

`winners` decides on the full-size bytes, after every encode; by then a format it drops has cost
its full-size encode (WebP on book-beside-flowers.jpg: ~1 CPU-s of the 12 MP job, encoded to be
thrown away). Each targeted search ends with the bytes of the sample at the setting found; the
sample's ratio between two formats predicts the full-size ratio (measured on six corpus images,
bench/quality.py: within ±1 point for JPEG/AVIF, within 7 for WebP, whose segment quantisers
follow the whole image). So once the format it falls back to has recorded its sample, a format
whose sample is not even `margin - SLACK` percent smaller is skipped before its full encode, and
the answer says why. Only a clear loser is skipped: one the prediction leaves in doubt is encoded
and `winners` decides on its real bytes. A format waits (up to the job's time left) for the
formats before it to record theirs: `convert` starts their encodes first, and none of them waits
for a later one, so the wait ends (a fallback that failed ends the job; an animation, whose
formats are not searched, gets no `Rivals`).
"""

from __future__ import annotations

import threading
from typing import Final

from uplodr import formats

# Most widely decoded first. A format falls back to the nearest kept one before it; the first
# of these that a preset makes is always kept. A format not listed is always kept.
SUPPORT: Final[tuple[str, ...]] = ("jpeg", "webp", "avif", "jxl")
# Percentage points the sample's saving may be below the full size's (measured up to 7, WebP).
SLACK: Final = 8


class Rivals:
    """The sample bytes each format's search ended with, in one conversion."""

    def __init__(self, asked: tuple[str, ...], margin_percent: int, transparent: bool) -> None:
        # The formats that compete (for a transparent image, only those with alpha; see
        # `winners`), in SUPPORT order.
        self._order = [
            name
            for name in SUPPORT
            if name in asked and (formats.get(name).alpha or not transparent)
        ]
        self._margin = margin_percent
        self._samples: dict[str, int] = {}
        self._losers: set[str] = set()
        self._recorded = threading.Condition()
        self._cancelled = False

    def verdict(self, fmt: str, sample_bytes: int, wait: float) -> str | None:
        """Record `fmt`'s sample bytes; a one-line reason when it cannot win (skip its full
        encode), else None. Waits up to `wait` s for the formats before it (else None)."""
        with self._recorded:
            self._samples[fmt] = sample_bytes
            self._recorded.notify_all()
            if self._margin <= SLACK or fmt not in self._order:
                return None
            earlier = self._order[: self._order.index(fmt)]
            if not self._recorded.wait_for(
                lambda: self._cancelled or all(f in self._samples for f in earlier), timeout=wait
            ):
                return None
            if self._cancelled:
                return None
            before = [f for f in earlier if f not in self._losers]
            if not before:
                return None
            # `winners` may still drop any of them: a loser against every one it may fall back to
            savings = {f: 100 * (1 - sample_bytes / self._samples[f]) for f in before}
            if max(savings.values()) >= self._margin - SLACK:
                return None
            self._losers.add(fmt)
            fallback = before[-1]
            return (
                f"its sample at the quality target is {savings[fallback]:.0f} % below "
                f"{fallback}'s, far from {self._margin} %: not encoded at full size"
            )

    def cancel(self) -> None:
        """The job failed: no format waits any longer (its encode then stops on the deadline)."""
        with self._recorded:
            self._cancelled = True
            self._recorded.notify_all()


class NotAWinner(Exception):
    """A format skipped before its full-size encode; `str()` is the one-line reason."""
