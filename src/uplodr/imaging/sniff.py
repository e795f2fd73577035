"""Recognise an allowed image format from its first bytes (never from a name or a MIME type)."""

from __future__ import annotations

from typing import Final, Literal

ImageFormat = Literal["jpeg", "png", "webp", "gif", "avif", "heif"]

# The allow-list, in the order error messages name them.
ALLOWED_FORMATS: Final[tuple[ImageFormat, ...]] = ("jpeg", "png", "webp", "gif", "avif", "heif")

# Enough for every signature below, including an ISO-BMFF `ftyp` box with a few compatible brands.
SNIFF_BYTES: Final = 64

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
