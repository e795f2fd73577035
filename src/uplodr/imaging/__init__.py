"""Image conversion for uplodr: sniff, check, decode once, encode web variants (pyvips only).

    configure_vips()                     once per process (probe/convert also call it)
    sniff(head) -> format | None         magic bytes only; allow-list
    probe(path, limits) -> ImageInfo     header only; raises Unsupported/Corrupt/LimitExceeded
    convert(path, preset, limits) -> [EncodedVariant]

Run workers with MALLOC_ARENA_MAX=2 (see `uplodr.imaging.vips`). What each format is (magic
bytes, loaders, alpha, animation, MIME type, roles) comes from the pure `uplodr.formats`.

Animated input: the WebP variant stays animated; libvips cannot write animated AVIF, so the AVIF,
JPEG and PNG-thumbnail variants are the first frame (`EncodedVariant.animated` tells which).

Time limit: `ImageLimits.max_seconds` kills libvips decoding and the WebP/JPEG/PNG encoders at
the next tile; an AVIF encode already inside aom cannot be interrupted and finishes first
(bounded by the preset's long-side cap: ~5 s at 4096 px on 2 cores).
"""

from uplodr.imaging.convert import convert
from uplodr.imaging.encode import EncodedVariant
from uplodr.imaging.limits import DEFAULT_LIMITS, ImageLimits
from uplodr.imaging.probe import ImageInfo, probe
from uplodr.imaging.sniff import ALLOWED_FORMATS, SNIFF_BYTES, ImageFormat, sniff
from uplodr.imaging.vips import configure_vips

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_LIMITS",
    "SNIFF_BYTES",
    "EncodedVariant",
    "ImageFormat",
    "ImageInfo",
    "ImageLimits",
    "configure_vips",
    "convert",
    "probe",
    "sniff",
]
