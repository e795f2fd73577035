"""Recognise an allowed image format from its first bytes (never from a name or a MIME type).

Pure Python with no libvips: the gateway sniffs a spooled upload here and refuses a non-image
(415) before it pays for a machine; the worker sniffs again in `uplodr.imaging` (which
re-exports this module) and libvips itself blocks every loader outside the allow-list, so a file
that slips past one check still meets the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

from uplodr.errors import UnsupportedImage

ImageFormat = Literal["jpeg", "png", "webp", "gif", "avif", "heif"]

# The allow-list, in the order error messages name them.
ALLOWED_FORMATS: Final[tuple[ImageFormat, ...]] = ("jpeg", "png", "webp", "gif", "avif", "heif")

# Enough for every signature below, including an ISO-BMFF `ftyp` box with a few compatible brands.
SNIFF_BYTES: Final = 64

FORMAT_NAMES: Final[dict[ImageFormat, str]] = {
    "jpeg": "JPEG",
    "png": "PNG",
    "webp": "WebP",
    "gif": "GIF",
    "avif": "AVIF",
    "heif": "HEIF",
}
ALLOWED_TEXT: Final = ", ".join(FORMAT_NAMES[f] for f in ALLOWED_FORMATS)
UNSUPPORTED_MESSAGE: Final = f"not an allowed image format; allowed formats are {ALLOWED_TEXT}"

_AVIF_BRANDS: Final = frozenset({b"avif", b"avis"})
# Brands that say "the primary image is HEVC" (HEIC); mif1/msf1 only say "some HEIF".
_HEVC_BRANDS: Final = frozenset(
    {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"}
)
_HEIF_BRANDS: Final = _HEVC_BRANDS | {b"mif1", b"msf1"}


def sniff(head: bytes) -> ImageFormat | None:
    """The format of an image whose file starts with `head`, or None if it is not allowed.

    Only magic bytes are used. `head` should hold the first SNIFF_BYTES bytes of the file (fewer
    if the file is shorter); extra bytes are ignored.
    """
    head = bytes(head[:SNIFF_BYTES])
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return _sniff_isobmff(head)


def _sniff_isobmff(head: bytes) -> ImageFormat | None:
    """AVIF and HEIF are ISO-BMFF files whose first box is `ftyp`, naming brands."""
    if len(head) < 16 or head[4:8] != b"ftyp":
        return None
    box_size = int.from_bytes(head[:4], "big")
    if box_size < 16 or box_size % 4:
        return None
    # major brand at 8..12, minor version at 12..16, then compatible brands
    end = min(box_size, len(head))
    major = head[8:12]
    if major in _AVIF_BRANDS:
        return "avif"
    if major in _HEVC_BRANDS:
        return "heif"
    brands = [major] + [head[i : i + 4] for i in range(16, end - 3, 4)]
    if any(brand in _AVIF_BRANDS for brand in brands):
        return "avif"
    if any(brand in _HEIF_BRANDS for brand in brands):
        return "heif"
    return None


def read_head(path: Path) -> bytes:
    """The first SNIFF_BYTES bytes of the file at `path` (fewer if it is shorter)."""
    with path.open("rb") as file:
        return file.read(SNIFF_BYTES)


def sniff_file(path: Path) -> ImageFormat:
    """The allowed format of the file at `path`; UnsupportedImage (the same message the worker
    gives) if its first bytes are not one."""
    fmt = sniff(read_head(path))
    if fmt is None:
        raise UnsupportedImage(UNSUPPORTED_MESSAGE)
    return fmt
