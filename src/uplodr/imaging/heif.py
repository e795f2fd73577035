"""HEIF files through libheif's own reader (pillow-heif): the header of any HEIF/AVIF file, and
the pixels of HEIC (HEVC), which pyvips-binary's libheif cannot decode.

Why pillow-heif and not pi-heif (its decode-only sibling, 1.5 MB instead of 5.7 MB): the newest
pi-heif (1.4.0) bundles libde265 1.1.0 and libheif 1.23.0, pillow-heif 1.8.1 libde265 1.1.3 and
libheif 1.23.6; libde265 1.1.1 and 1.1.2 were security releases, and the HEVC decoder is the part
that parses a stranger's bytes. The API is the same, so switching back is one import.

What is read, and what is not:
- the *primary* image only. A burst (several top-level images) gives its primary; the others are
  never decoded. Thumbnails, depth maps and auxiliary images (alpha aside: HDR gain maps, Apple's
  portrait mattes) are not even wrapped (pillow-heif options off), so nothing of them reaches an
  output;
- the header first: `read_header` opens the file without decoding a pixel, so the size (after
  the HEIF transforms), bit depth and colour description are checked against the limits before
  `decode_primary` runs. libheif's own security limits refuse absurd files on open, and since
  1.22 it refuses a decoded image whose size differs from what its header declared;
- truncation: libheif decodes a grid image whose tiles are missing (pillow-heif does not ask
  for strict decoding) and fills the gaps, so a HEIC cut short would convert "fine". The file's
  top-level boxes are walked first: one that claims to end past the end of the file is
  refused as truncated;
- orientation: libheif applies the HEIF transforms (`irot`, `imir`, `clap`) while decoding, and
  the header size is the transformed one. HEIF says those transforms are the orientation, so an
  EXIF orientation tag is ignored (it is stripped with the rest of the metadata) and never
  applied a second time;
- colour: the ICC profile (phones write Display P3) is attached to the pixels for libvips to
  convert to sRGB; without one, the `nclx` description is returned for `uplodr.imaging.colour`.

Measured (IMG_2682.heic, iPhone 7, 4032x3024, 8-bit, Display P3): header 2 ms, decode 0.33 s and
36 MB of pixels, in 2 decoder threads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pillow_heif
import pyvips

from uplodr.errors import CorruptImage, LimitExceeded, UnsupportedImage
from uplodr.imaging.colour import Cicp

log = logging.getLogger(__name__)

# The worker has 2 cores; libde265 decodes tiles of a grid image in these threads.
DECODE_THREADS: Final = 2

# pillow-heif mode -> (bands, libvips format, interpretation). 10/12-bit images arrive scaled
# to 16 bits; a premultiplied mode ("RGBa") is unpremultiplied here.
_MODES: Final[dict[str, tuple[int, str, str]]] = {
    "RGB": (3, "uchar", "srgb"),
    "RGBA": (4, "uchar", "srgb"),
    "RGBa": (4, "uchar", "srgb"),
    "RGB;16": (3, "ushort", "rgb16"),
    "RGBA;16": (4, "ushort", "rgb16"),
    "RGBa;16": (4, "ushort", "rgb16"),
    "L": (1, "uchar", "b-w"),
    "LA": (2, "uchar", "b-w"),
    "La": (2, "uchar", "b-w"),
    "I;16": (1, "ushort", "grey16"),
    "L;16": (1, "ushort", "grey16"),
    "LA;16": (2, "ushort", "grey16"),
    "La;16": (2, "ushort", "grey16"),
}

_configured = False


def _configure() -> None:
    global _configured
    if not _configured:
        pillow_heif.options.THUMBNAILS = False
        pillow_heif.options.DEPTH_IMAGES = False
        pillow_heif.options.AUX_IMAGES = False
        pillow_heif.options.DECODE_THREADS = DECODE_THREADS
        _configured = True


@dataclass(frozen=True)
class HeifHeader:
    """What the header of a HEIF/AVIF file says about its primary image."""

    width: int  # after the HEIF transforms
    height: int
    images: int  # top-level images (a burst has several; only the primary is used)
    mode: str  # pillow-heif's pixel mode of the primary: "RGB", "RGBA;16", ...
    bit_depth: int
    icc_profile: bytes | None
    cicp: Cicp | None  # from the nclx box, when there is no ICC profile

    @property
    def bands(self) -> int:
        return _MODES[self.mode][0] if self.mode in _MODES else 3

    @property
    def has_alpha(self) -> bool:
        return self.bands in (2, 4)


# A HEIF file has a handful of top-level boxes (ftyp, meta, mdat, maybe free/idat).
MAX_TOP_LEVEL_BOXES: Final = 256


def check_boxes(path: Path, label: str = "HEIF") -> None:
    """Walk the top-level ISO-BMFF boxes: CorruptImage when one ends past the end of the file
    (an upload cut short) or the structure is not one of boxes."""
    size = path.stat().st_size
    offset = 0
    with path.open("rb") as file:
        for _ in range(MAX_TOP_LEVEL_BOXES):
            if offset == size:
                return
            file.seek(offset)
            head = file.read(16)
            if len(head) < 8:
                break
            length = int.from_bytes(head[:4], "big")
            if length == 0:  # the last box runs to the end of the file
                return
            if length == 1:  # a 64-bit size follows the type
                if len(head) < 16:
                    break
                length = int.from_bytes(head[8:16], "big")
            if length < 8 or offset + length > size:
                break
            offset += length
    raise CorruptImage(f"the {label} image data is truncated or corrupt and cannot be decoded")


def _open(path: Path, label: str) -> pillow_heif.HeifFile:
    _configure()
    try:
        return pillow_heif.open_heif(path, convert_hdr_to_8bit=False)
    except (ValueError, EOFError, SyntaxError, RuntimeError, OSError) as error:
        raise _error(error, label, "header") from None


def _error(
    error: Exception, label: str, part: str
) -> CorruptImage | LimitExceeded | UnsupportedImage:
    """libheif's reasons, as a client may see them (libheif's text goes to the log)."""
    text = str(error)
    log.debug("libheif refused the %s: %s", part, text)
    lowered = text.lower()
    if "security limit" in lowered or "exceeds the maximum" in lowered:
        return LimitExceeded(f"the {label} image exceeds the decoder's safety limits ({part})")
    if "unsupported codec" in lowered or "no decoding plugin" in lowered:
        return UnsupportedImage(
            f"the {label} image is coded in a format that cannot be decoded here (HEVC and AV1 can)"
        )
    return CorruptImage(f"the {label} image {part} is truncated or corrupt and cannot be read")


def read_header(path: Path, label: str = "HEIF") -> HeifHeader:
    """The primary image's header, no pixel decoded. Raises CorruptImage (or LimitExceeded for
    a file past libheif's own limits); messages call the file a `label` image."""
    check_boxes(path, label)
    heif = _open(path, label)
    if len(heif) == 0:
        raise CorruptImage("the HEIF file holds no image")
    primary = heif[heif.primary_index]
    info: dict[str, Any] = dict(primary.info)
    icc = info.get("icc_profile") or None
    nclx = info.get("nclx_profile")
    cicp = None
    if nclx and not icc:
        light = info.get("content_light_level") or {}
        peak = light.get("max_content_light_level") or None
        cicp = Cicp.from_nclx(nclx, float(peak) if peak else None)
    width, height = primary.size
    return HeifHeader(
        width=int(width),
        height=int(height),
        images=len(heif),
        mode=str(primary.mode),
        bit_depth=int(info.get("bit_depth", 8)),
        icc_profile=bytes(icc) if icc else None,
        cicp=cicp,
    )


def decode_primary(path: Path, header: HeifHeader) -> pyvips.Image:
    """The primary image's pixels (HEVC), oriented, as a libvips image in memory with its ICC
    profile attached. Raises CorruptImage for truncated or corrupt data."""
    if header.mode not in _MODES:
        raise UnsupportedImage(f"HEIF images with {header.mode} pixels cannot be decoded here")
    heif = _open(path, "HEIF")
    primary = heif[heif.primary_index]
    try:
        data = primary.data
        stride = primary.stride
    except (ValueError, EOFError, SyntaxError, RuntimeError, OSError) as error:
        raise _error(error, "HEIF", "data") from None
    width, height = (int(side) for side in primary.size)
    if (width, height) != (header.width, header.height) or primary.mode != header.mode:
        raise CorruptImage("the HEIF image decoded to another size than its header declared")
    bands, sample_format, interpretation = _MODES[primary.mode]
    row = width * bands * (2 if sample_format == "ushort" else 1)
    if stride != row:  # pillow-heif removes the stride padding; just in case it did not
        view = memoryview(data)
        data = b"".join(view[y * stride : y * stride + row] for y in range(height))
    image = pyvips.Image.new_from_memory(data, width, height, bands, sample_format)
    image = image.copy(interpretation=interpretation)
    if primary.mode.split(";")[0].endswith("a"):  # premultiplied alpha
        image = image.unpremultiply().cast(sample_format).copy(interpretation=interpretation)
    if header.icc_profile:
        image.set_type(pyvips.GValue.blob_type, "icc-profile-data", header.icc_profile)
    return image
