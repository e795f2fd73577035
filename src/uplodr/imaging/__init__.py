"""Image conversion for uplodr: sniff, check, decode once, encode web variants.

    configure_vips()                     once per process (probe/convert also call it)
    sniff(head) -> format | None         magic bytes only; allow-list
    probe(path, limits) -> ImageInfo     header only; raises Unsupported/Corrupt/LimitExceeded
    convert(path, preset, limits) -> Conversion
                                         variants (full size, widths, thumbnail), intrinsic
                                         size, placeholder, what the header said

libvips (pyvips) does the pipeline; pillow-heif decodes HEIC (`heif`) and Pillow writes animated
AVIF (`animated_avif`): the worker's libraries, never loaded by the gateway. Run workers with
MALLOC_ARENA_MAX=2 (see `uplodr.imaging.vips`). What each format is (magic bytes, decoder,
alpha, animation, MIME type, roles) comes from the pure `uplodr.formats`.

Animated input: the WebP and AVIF variants stay animated; the JPEG and PNG-thumbnail variants
are the first frame (`EncodedVariant.animated` tells which).

Time limit: `ImageLimits.max_seconds` kills libvips decoding and the WebP/JPEG/PNG encoders at
the next tile; an AVIF encode already inside aom (or libavif), and a HEIC decode inside
libde265, cannot be interrupted and finish first (bounded by the limits: at the default effort
0 an AVIF of 4096 px takes ~1 CPU-s, a 12 MP HEIC decodes in ~0.3 s).
"""

from uplodr.imaging.convert import Conversion, convert
from uplodr.imaging.encode import EncodedVariant
from uplodr.imaging.limits import DEFAULT_LIMITS, ImageLimits
from uplodr.imaging.probe import ImageInfo, probe
from uplodr.imaging.sniff import ALLOWED_FORMATS, SNIFF_BYTES, ImageFormat, sniff
from uplodr.imaging.vips import configure_vips

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_LIMITS",
    "SNIFF_BYTES",
    "Conversion",
    "EncodedVariant",
    "ImageFormat",
    "ImageInfo",
    "ImageLimits",
    "configure_vips",
    "convert",
    "probe",
    "sniff",
]
