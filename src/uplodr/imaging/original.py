"""The kept original, repacked losslessly when the preset asks for it: a JPEG as JPEG XL.

    repack(path, source_format) -> Repacked | None

libjxl's JPEG recompression keeps the JPEG's DCT coefficients and its bitstream details, so the
JPEG XL file decodes back to the uploaded JPEG byte for byte (`djxl photo.jxl photo.jpg`, or
imagecodecs' `jpegxl_decode_jpeg`) and is ~20 % smaller (docs/formats.md "JPEG XL"). The
restored bytes are compared with the upload before the JPEG XL file is used: a JPEG libjxl
cannot repack (CMYK, arithmetic coding, a broken stream) or does not restore exactly stays as
it came, so keeping an original never loses a byte of it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from uplodr import formats
from uplodr.formats import Format

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Repacked:
    format: Format  # the format the original is stored in (JPEG XL)
    data: bytes


def repack(path: Path, source_format: str) -> Repacked | None:
    """The upload at `path` (sniffed as `source_format`) repacked losslessly, or None when no
    format repacks it or this file cannot be (then the upload is kept as it came)."""
    target = next((fmt for fmt in formats.REGISTRY if source_format in fmt.repacks), None)
    if target is None:
        return None
    import imagecodecs  # on first use, as in `encode`: ~15 MB a worker need not load

    original = path.read_bytes()
    try:
        data = bytes(imagecodecs.jpegxl_encode_jpeg(original, numthreads=2))
        restored = imagecodecs.jpegxl_decode_jpeg(data, numthreads=2)
    except imagecodecs.JpegxlError as error:
        log.info("the original stays a JPEG: libjxl cannot repack it (%s)", str(error)[:120])
        return None
    if bytes(restored) != original:
        log.warning("the original stays a JPEG: its JPEG XL does not restore it byte for byte")
        return None
    return Repacked(target, data)
