"""A format only where it wins: drop a format whose full-size variant is not at least the
preset's `format_margin` smaller than the next more widely decoded format that is kept.

At one quality target the formats cost different bytes for the same look (bench/quality_study.py:
at SSIMULACRA2 75, AVIF effort 0 is 10-25 % below JPEG, while WebP is about JPEG's size or
larger). A `<source>` that saves little still costs a stored object, a request path and an
encode; the browser falls back to the next format. Only with a quality target: at fixed
settings the formats are not at the same look, so their bytes say nothing — which is also why
a variant encoded without a receipt (an animation: its WebP and AVIF keep every frame at the
fixed settings, its JPEG is one frame) neither competes nor is compared against: it is kept.
Likewise for a transparent image a format without alpha (JPEG, flattened onto the background:
the flat background costs next to nothing) is no baseline for the formats that keep the alpha:
they compete among themselves, the JPEG stays as the last fallback (measured on
alpha-premultiply-2048x1536-paper.png: compared with its flattened JPEG, WebP and AVIF were both
dropped, and with them the transparency).

Width variants follow their format's full-size decision, so a `srcset` never mixes.
"""

from __future__ import annotations

from dataclasses import dataclass

from uplodr import formats
from uplodr.imaging.encode import EncodedVariant
from uplodr.imaging.rivals import SUPPORT


@dataclass(frozen=True)
class Skipped:
    """A format asked for and not stored, and why (one line)."""

    format: str
    reason: str


def keep_winners(
    variants: list[EncodedVariant], margin_percent: int, transparent: bool = False
) -> tuple[list[EncodedVariant], list[Skipped]]:
    """`variants` without the formats that do not win by `margin_percent`, and why not
    (0: every variant kept). `transparent`: the image has alpha."""
    if margin_percent == 0:
        return variants, []
    full = {
        v.format: v
        for v in variants
        if v.role == "full"
        and v.quality is not None
        and (formats.get(v.format).alpha or not transparent)
    }
    skipped: list[Skipped] = []
    kept: EncodedVariant | None = None
    for name in SUPPORT:
        variant = full.get(name)
        if variant is None:
            continue
        if kept is None:
            kept = variant
            continue
        limit = len(kept.data) * (100 - margin_percent) / 100
        if len(variant.data) <= limit:
            kept = variant
            continue
        saved = 1 - len(variant.data) / len(kept.data)
        skipped.append(
            Skipped(
                name,
                f"{len(variant.data):,} bytes is not {margin_percent} % below "
                f"{kept.format}'s {len(kept.data):,} at the same quality target "
                f"({saved:.0%} smaller)",
            )
        )
    dropped = {skip.format for skip in skipped}
    return [v for v in variants if v.format not in dropped or v.role == "thumbnail"], skipped
