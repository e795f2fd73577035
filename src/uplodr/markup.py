"""Ready-to-paste `<picture>` markup for one converted image: a pure function of its variants.

    picture(variants, alt, sizes=None) -> str

`variants` are the answer's variant objects (`url`, `format`, `role`, `width`, `height`,
`size_bytes`: the answer JSON of POST /v1/images, or anything shaped like it). The result:

    <picture>
      <source type="image/avif" srcset="…-480w.avif 480w, ….avif 4032w" sizes="…">
      <source type="image/webp" srcset="…-480w.webp 480w, ….webp 4032w" sizes="…">
      <img src="….jpg" srcset="…-480w.jpg 480w, ….jpg 4032w" sizes="…" width="4032"
           height="3024" alt="…" loading="lazy" decoding="async">
    </picture>

- a `<source>` per modern format present, only those that were made, SMALLEST FIRST by the
  full-size variant's `size_bytes` (a browser takes the first type it decodes, so it gets the
  fewest bytes it can show; with a quality target every format is at the same look, issue 17).
  Without sizes, or on a tie, the usual order: JPEG XL, AVIF, WebP. Each `srcset` lists every
  width of that format including the full size, in ascending order;
- the `<img>` is the fallback every browser understands: JPEG when the preset makes it (else
  the first of WebP, AVIF, PNG that exists, and that format then gets no `<source>` of its own),
  `src` the full size, `width`/`height` the full size's intrinsic size (no layout shift);
- `sizes` defaults to "(max-width: Wpx) 100vw, Wpx" (W = the full width): the image fills a
  narrower viewport and is never shown larger than it is. Pass the page's own layout instead;
- `alt` is escaped, as is every attribute, and made one line of text HTML allows: control
  characters, surrogates and noncharacters (parse errors in HTML) are dropped, tabs and line
  breaks become spaces; URLs in `srcset` get spaces and commas percent-encoded (they would end
  a candidate).

The thumbnail and the kept original are not candidates (the original keeps its metadata and may
be a format browsers do not show, HEIC). Pure: no imaging, no I/O; the gateway calls it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

# An alt text is a description of the image for people who cannot see it: a sentence or two
# (WCAG advises short text; a longer description belongs in the page). The cap keeps the answer's
# markup and the gateway's work bounded; the gateway refuses more (?alt=), the CLI before sending.
MAX_ALT_CHARS: Final = 1000
# <source> formats; when the variants' sizes do not say which is smaller, in this order.
SOURCE_FORMATS: Final[tuple[str, ...]] = ("jxl", "avif", "webp")
# The <img> fallback: the first of these that exists.
FALLBACK_FORMATS: Final[tuple[str, ...]] = ("jpeg", "webp", "avif", "png", "jxl")
MIME_TYPES: Final[dict[str, str]] = {
    "jxl": "image/jxl",
    "avif": "image/avif",
    "webp": "image/webp",
    "jpeg": "image/jpeg",
    "png": "image/png",
}
CANDIDATE_ROLES: Final = frozenset({"full", "width"})


class MarkupError(ValueError):
    """The variants hold nothing a page can show (no full-size variant)."""


@dataclass(frozen=True)
class Candidate:
    url: str
    format: str
    role: str
    width: int
    height: int
    size_bytes: float  # infinite when the variant does not say

    @classmethod
    def of(cls, variant: Mapping[str, object]) -> Candidate:
        width, height = variant.get("width"), variant.get("height")
        size = variant.get("size_bytes")
        return cls(
            url=str(variant.get("url", "")),
            format=str(variant.get("format", "")),
            role=str(variant.get("role", "")),
            width=width if isinstance(width, int) else 0,
            height=height if isinstance(height, int) else 0,
            size_bytes=size if isinstance(size, int) and not isinstance(size, bool) else math.inf,
        )


def plain_text(text: str) -> str:
    """`text` as one line HTML accepts in an attribute: whitespace controls become spaces;
    other controls, surrogates and noncharacters (parse errors) are dropped."""
    kept = []
    for char in text:
        if char in "\t\n\r\f":
            kept.append(" ")
        elif not _refused(ord(char)):
            kept.append(char)
    return "".join(kept)


def _refused(code: int) -> bool:
    controls = code < 0x20 or 0x7F <= code <= 0x9F
    surrogate = 0xD800 <= code <= 0xDFFF
    noncharacter = 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE
    return controls or surrogate or noncharacter


def _attr(value: str | int) -> str:
    return html.escape(plain_text(str(value)), quote=True)


def _srcset_url(url: str) -> str:
    return "".join("%20" if c.isspace() else "%2C" if c == "," else c for c in url)


def _srcset(candidates: list[Candidate]) -> str:
    return ", ".join(f"{_srcset_url(c.url)} {c.width}w" for c in candidates)


def default_sizes(width: int) -> str:
    return f"(max-width: {width}px) 100vw, {width}px"


def picture(
    variants: Iterable[Mapping[str, object]], alt: str = "", sizes: str | None = None
) -> str:
    """The `<picture>` element for these variants (see the module's docstring).

    Raises MarkupError when there is no full-size variant in a format a browser shows (only the
    original kept, say): then there is nothing to mark up."""
    by_format: dict[str, dict[int, Candidate]] = {}
    full: dict[str, Candidate] = {}
    for variant in variants:
        candidate = Candidate.of(variant)
        if candidate.role not in CANDIDATE_ROLES or candidate.format not in MIME_TYPES:
            continue
        if not candidate.url or candidate.width < 1:
            continue
        by_format.setdefault(candidate.format, {})[candidate.width] = candidate
        if candidate.role == "full":
            full[candidate.format] = candidate
    fallback = next((name for name in FALLBACK_FORMATS if name in full), None)
    if fallback is None:
        raise MarkupError("no full-size variant in a format a browser shows")
    main = full[fallback]
    sizes = sizes if sizes is not None else default_sizes(main.width)
    sets = {
        name: sorted(found.values(), key=lambda c: c.width) for name, found in by_format.items()
    }

    sources = sorted(
        (name for name in SOURCE_FORMATS if name in full and name != fallback),
        key=lambda name: (full[name].size_bytes, SOURCE_FORMATS.index(name)),
    )
    lines = ["<picture>"]
    for name in sources:
        lines.append(
            f'  <source type="{MIME_TYPES[name]}" srcset="{_attr(_srcset(sets[name]))}" '
            f'sizes="{_attr(sizes)}">'
        )
    lines.append(
        f'  <img src="{_attr(main.url)}" srcset="{_attr(_srcset(sets[fallback]))}" '
        f'sizes="{_attr(sizes)}" width="{main.width}" height="{main.height}" '
        f'alt="{_attr(alt)}" loading="lazy" decoding="async">'
    )
    lines.append("</picture>")
    return "\n".join(lines)
