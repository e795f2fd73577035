"""Encode one variant of the decoded image to bytes, with the preset's settings.

Encoders release the GIL, so variants are encoded in threads. AVIF needs ~18-27 MB per output
megapixel (and both cores), so at most one AVIF encode runs at a time in the process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

import pyvips

from uplodr.errors import LimitExceeded
from uplodr.preset import Preset

VariantName = Literal["webp", "avif", "jpeg", "thumbnail"]

# Process-wide: one AVIF encode at a time (memory).
AVIF_SLOT: Final = threading.BoundedSemaphore(1)

# At most this many distinct colours and the thumbnail is written as a (lossless) palette PNG.
PALETTE_COLOURS: Final = 256


@dataclass(frozen=True)
class EncodedVariant:
    name: VariantName
    suffix: str  # "" for full-size variants, "-thumb" for the thumbnail
    ext: str  # "webp", "avif", "jpg", "png"
    mime_type: str
    width: int
    height: int  # of one frame
    data: bytes
    encode_seconds: float
    animated: bool


@dataclass(frozen=True)
class _Codec:
    ext: str
    mime_type: str
    suffix: str
    save: Callable[[pyvips.Image, Preset], bytes]


# `keep="none"`: no EXIF/XMP/IPTC/ICC in any output (they are sRGB, the web's default).
def _webp(image: pyvips.Image, preset: Preset) -> bytes:
    data: bytes = image.webpsave_buffer(
        Q=preset.webp_quality, effort=preset.webp_effort, keep="none"
    )
    return data


def _avif(image: pyvips.Image, preset: Preset) -> bytes:
    data: bytes = image.heifsave_buffer(
        compression="av1", Q=preset.avif_quality, effort=preset.avif_effort, keep="none"
    )
    return data


def _jpeg(image: pyvips.Image, preset: Preset) -> bytes:
    data: bytes = image.jpegsave_buffer(
        Q=preset.jpeg_quality, interlace=True, optimize_coding=True, keep="none"
    )
    return data


def _png(image: pyvips.Image, preset: Preset) -> bytes:
    image = image.copy_memory()  # small; read twice (colour count, then encode)
    if fits_palette(image):  # a palette loses nothing
        data: bytes = image.pngsave_buffer(
            compression=preset.png_compression, palette=True, Q=100, dither=0, keep="none"
        )
    elif preset.png_palette_quality:
        # Quantised to 256 colours (libimagequant): a photo's 800 px thumbnail is ~0.3 MB
        # instead of ~1.1 MB in full colour, at ~0.9 s of one core.
        data = image.pngsave_buffer(
            compression=preset.png_compression,
            palette=True,
            Q=preset.png_palette_quality,
            keep="none",
        )
    else:
        data = image.pngsave_buffer(compression=preset.png_compression, keep="none")
    return data


CODECS: Final[dict[VariantName, _Codec]] = {
    "webp": _Codec("webp", "image/webp", "", _webp),
    "avif": _Codec("avif", "image/avif", "", _avif),
    "jpeg": _Codec("jpg", "image/jpeg", "", _jpeg),
    "thumbnail": _Codec("png", "image/png", "-thumb", _png),
}


def fits_palette(image: pyvips.Image) -> bool:
    """True when the image has at most 256 distinct colours, so a palette PNG loses nothing.

    Photos stop after a few hundred pixels; flat artwork and GIF frames are scanned in full
    (a 800 px thumbnail is < 2 MB of samples).
    """
    data = image.write_to_memory()
    step = int(image.bands)
    seen: set[bytes] = set()
    for start in range(0, len(data), step):
        seen.add(data[start : start + step])
        if len(seen) > PALETTE_COLOURS:
            return False
    return True


def encode(
    name: VariantName, image: pyvips.Image, preset: Preset, frames: int, avif_wait: float
) -> EncodedVariant:
    """Encode `image` (already prepared for this variant). `frames` > 1 means animated."""
    codec = CODECS[name]
    if name == "avif":
        if not AVIF_SLOT.acquire(timeout=avif_wait):
            raise LimitExceeded("timed out waiting for the AVIF encoder (one runs at a time)")
        try:
            start = time.perf_counter()
            data = codec.save(image, preset)
        finally:
            AVIF_SLOT.release()
    else:
        start = time.perf_counter()
        data = codec.save(image, preset)
    seconds = time.perf_counter() - start
    return EncodedVariant(
        name=name,
        suffix=codec.suffix,
        ext=codec.ext,
        mime_type=codec.mime_type,
        width=int(image.width),
        height=int(image.height) // frames,
        data=data,
        encode_seconds=seconds,
        animated=frames > 1,
    )
