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
and `winners` decides on its real bytes. Mid-search (`hopeless`), a trial that falls short of
the goal already bounds the sample from below (the setting found is higher, its bytes no fewer):
when that bound loses, the search stops there (Landscape_6.jpg's WebP: after 2 trials, not 4;
bench/quality.py). A format waits (up to the job's time left) for the
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
            if not self._judged(fmt):
                return None
            earlier = self._order[: self._order.index(fmt)]
            if not self._recorded.wait_for(
                lambda: self._cancelled or all(f in self._samples for f in earlier), timeout=wait
            ):
                return None
            if self._cancelled:
                return None
            return self._against(fmt, sample_bytes, "")

    def hopeless(self, fmt: str, at_least: int) -> str | None:
        """Mid-search: `fmt`'s sample will hold at least `at_least` bytes (a trial that fell
        short of the goal; a higher setting is not smaller). Its reason, recorded, when that
        already cannot win; else None, without waiting (its `verdict` still comes)."""
        with self._recorded:
            if fmt in self._samples or not self._judged(fmt):
                return None
            earlier = self._order[: self._order.index(fmt)]
            if self._cancelled or not all(f in self._samples for f in earlier):
                return None
            reason = self._against(fmt, at_least, "at most ")
            if reason is not None:
                self._samples[fmt] = at_least  # the formats after it wait for a record
                self._recorded.notify_all()
            return reason

    def _judged(self, fmt: str) -> bool:
        return self._margin > SLACK and fmt in self._order

    def _against(self, fmt: str, sample_bytes: int, bound: str) -> str | None:
        """The reason `fmt` at `sample_bytes` loses to every format it may fall back to (it
        then counts as a loser), else None. Holds the lock; the earlier formats are recorded."""
        earlier = self._order[: self._order.index(fmt)]
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
            f"its sample at the quality target is {bound}{savings[fallback]:.0f} % below "
            f"{fallback}'s, far from {self._margin} %: not encoded at full size"
        )

    def cancel(self) -> None:
        """The job failed: no format waits any longer (its encode then stops on the deadline)."""
        with self._recorded:
            self._cancelled = True
            self._recorded.notify_all()


class NotAWinner(Exception):
    """A format skipped before its full-size encode; `str()` is the one-line reason."""
