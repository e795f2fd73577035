"""Recognise an allowed image format from its first bytes (never from a name or a MIME type).

Pure Python with no libvips: the gateway sniffs a spooled upload here and refuses a non-image
(415) before it pays for a machine; the worker sniffs again in `uplodr.imaging` (which
re-exports this module) and libvips itself blocks every loader outside the allow-list, so a file
that slips past one check still meets the others. The signatures are the input formats' `magic`
and `brands` in `uplodr.formats`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from uplodr import formats
from uplodr.errors import UnsupportedImage

ImageFormat = str  # a format's name in `uplodr.formats` ("jpeg", "png", ...)

# The allow-list, in the order error messages name them.
ALLOWED_FORMATS: Final[tuple[ImageFormat, ...]] = tuple(f.name for f in formats.input_formats())

# Enough for every signature, including an ISO-BMFF `ftyp` box with a few compatible brands.
SNIFF_BYTES: Final = 64

ALLOWED_TEXT: Final = ", ".join(f.label for f in formats.input_formats())
UNSUPPORTED_MESSAGE: Final = f"not an allowed image format; allowed formats are {ALLOWED_TEXT}"


def sniff(head: bytes) -> ImageFormat | None:
    """The format of an image whose file starts with `head`, or None if it is not allowed.

    Only magic bytes are used. `head` should hold the first SNIFF_BYTES bytes of the file (fewer
    if the file is shorter); extra bytes are ignored.
    """
    head = bytes(head[:SNIFF_BYTES])
    for fmt in formats.input_formats():
        if fmt.has_magic(head):
            return fmt.name
    found = formats.by_brand(_ftyp_brands(head))
    return found.name if found is not None and found.is_input else None


def unsupported_message(head: bytes) -> str:
    """What to tell an uploader whose file is not an allowed format: named when it is one that
    is recognised only to be refused (a JPEG XL upload), the allow-list otherwise."""
    refused = formats.refused_format(bytes(head[:SNIFF_BYTES]))
    if refused is None:
        return UNSUPPORTED_MESSAGE
    return f"{refused.label} is an output format only; allowed formats are {ALLOWED_TEXT}"


def _ftyp_brands(head: bytes) -> list[bytes]:
    """The brands of an ISO-BMFF file whose first box is `ftyp`: major first, then the
    compatible ones within the box; [] for any other file."""
    if len(head) < 16 or head[4:8] != b"ftyp":
        return []
    box_size = int.from_bytes(head[:4], "big")
    if box_size < 16 or box_size % 4:
        return []
    # major brand at 8..12, minor version at 12..16, then compatible brands
    end = min(box_size, len(head))
    return [head[8:12]] + [head[i : i + 4] for i in range(16, end - 3, 4)]


def read_head(path: Path) -> bytes:
    """The first SNIFF_BYTES bytes of the file at `path` (fewer if it is shorter)."""
    with path.open("rb") as file:
        return file.read(SNIFF_BYTES)


def sniff_file(path: Path) -> ImageFormat:
    """The allowed format of the file at `path`; UnsupportedImage (the same message the worker
    gives) if its first bytes are not one."""
    head = read_head(path)
    fmt = sniff(head)
    if fmt is None:
        raise UnsupportedImage(unsupported_message(head))
    return fmt
