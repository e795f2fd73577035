"""Encode one variant of the decoded image to bytes, with the preset's settings.

One encoder function per output format of `uplodr.formats`, registered under the format's name
with `@encoder("webp")`; importing this module fails if an output format has no encoder (or an
encoder no output format). Encoders release the GIL, so variants are encoded in threads. A
format marked `one_at_a_time` (AVIF: ~18-27 MB per output megapixel, and both cores) has one
encode running at a time in the process. An encoder of a format with `animated_output` gets the
frames stacked vertically (`page-height`) and writes them all: WebP through libvips, AVIF
through Pillow's libavif (`animated_avif`), stills through libvips.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import pyvips

from uplodr.errors import LimitExceeded
from uplodr.formats import RoleName, VariantSpec, output_formats
from uplodr.imaging import animated_avif, pipeline, targeted
from uplodr.imaging.rivals import NotAWinner, Rivals
from uplodr.imaging.targeted import Receipt
from uplodr.imaging.vips import release_memory
from uplodr.preset import Preset

Encoder = Callable[[pyvips.Image, Preset], bytes]

# At most this many distinct colours and the thumbnail is written as a (lossless) palette PNG.
PALETTE_COLOURS: Final = 256
# Error diffusion of a quantised thumbnail (libvips' default is 1.0): at libimagequant effort 1,
# half the dither keeps effort 7's SSIMULACRA2 score (full dither loses 1-2 points to its
# noise) and compresses better (bench/thumbnail.py).
PALETTE_DITHER: Final = 0.5

ENCODERS: dict[str, Encoder] = {}

# The preset setting (a whole number, higher = better looking and bigger) that a quality
# target's search drives, per format: a format listed here is encoded at the fewest bytes that
# meet the preset's target (`imaging.targeted`); one not listed is encoded as its settings say.
QUALITY_SETTING: Final[dict[str, str]] = {
    "webp": "webp_quality",
    "avif": "avif_quality",
    "jpeg": "jpeg_quality",
    "jxl": "jxl_quality",
}


def encoder(name: str) -> Callable[[Encoder], Encoder]:
    """Register the function that writes format `name` (a `Format.name`)."""

    def register(function: Encoder) -> Encoder:
        ENCODERS[name] = function
        return function

    return register


@dataclass(frozen=True)
class EncodedVariant:
    format: str  # a `Format.name`: "webp", "avif", "jpeg", "png"
    role: RoleName  # "full", "thumbnail", ...
    suffix: str  # of its key: "" full size, "-thumb" the thumbnail, "-480w" a width variant
    ext: str  # "webp", "avif", "jpg", "png"
    mime_type: str
    width: int
    height: int  # of one frame
    data: bytes
    encode_seconds: float
    animated: bool
    name: str  # "webp", "webp-480w", "thumbnail" (VariantSpec.label): for logs and figures
    # The quality it was delivered at, when the preset has a target (None: fixed settings).
    quality: Receipt | None = None
    # Why it was not encoded at full size (`rivals`: it could not win); then `data` is empty.
    skipped: str | None = None


# `keep="none"`: no EXIF/XMP/IPTC/ICC in any output (they are sRGB, the web's default).
@encoder("webp")
def _webp(image: pyvips.Image, preset: Preset) -> bytes:
    data: bytes = image.webpsave_buffer(
        Q=preset.webp_quality, effort=preset.webp_effort, keep="none"
    )
    return data


@encoder("avif")
def _avif(image: pyvips.Image, preset: Preset) -> bytes:
    if pipeline.frame_count(image) > 1:
        if image.bands < 3:
            image = image.colourspace("srgb")
        return animated_avif.encode(
            image,
            pipeline.page_height(image),
            quality=preset.avif_quality,
            effort=preset.avif_animation_effort,
        )
    data: bytes = image.heifsave_buffer(
        compression="av1", Q=preset.avif_quality, effort=preset.avif_effort, keep="none"
    )
    return data


@encoder("jpeg")
def _jpeg(image: pyvips.Image, preset: Preset) -> bytes:
    data: bytes = image.jpegsave_buffer(
        Q=preset.jpeg_quality, interlace=True, optimize_coding=True, keep="none"
    )
    return data


@encoder("jxl")
def _jxl(image: pyvips.Image, preset: Preset) -> bytes:
    # Imported on first use: NumPy and imagecodecs add ~15 MB and 40-70 ms to a worker's start,
    # which a worker that writes no JPEG XL does not pay.
    import imagecodecs
    import numpy as np

    # libvips' buffer viewed as an array without a copy; libjxl runs on both cores and
    # releases the GIL. No metadata is written (sRGB, as every output).
    pixels = np.frombuffer(image.write_to_memory(), dtype=np.uint8).reshape(
        int(image.height), int(image.width), int(image.bands)
    )
    data = bytes(
        imagecodecs.jpegxl_encode(
            pixels, level=preset.jxl_quality, effort=preset.jxl_effort, numthreads=2
        )
    )
    del pixels
    # libjxl frees ~10 MB per megapixel in pieces glibc keeps in its heap: without the trim the
    # next heavy encode (AVIF) was stacked on top of them now and then (a 24 MP photo's job at
    # 522 MB VmHWM instead of ~410 MB, tests/hostile/test_memory_cap.py).
    release_memory()
    return data


@encoder("png")
def _png(image: pyvips.Image, preset: Preset) -> bytes:
    image = image.copy_memory()  # small; read twice (colour count, then encode)
    if fits_palette(image):  # a palette loses nothing
        data: bytes = image.pngsave_buffer(
            compression=preset.png_compression, palette=True, Q=100, dither=0, keep="none"
        )
    elif preset.png_palette_quality:
        # Quantised to 256 colours (libimagequant): a 12 MP photo's 800 px thumbnail is
        # ~0.55 MB instead of ~1.1 MB in full colour, at ~0.15 s of one core (effort 1).
        data = image.pngsave_buffer(
            compression=preset.png_compression,
            palette=True,
            Q=preset.png_palette_quality,
            effort=preset.png_palette_effort,
            dither=PALETTE_DITHER,
            keep="none",
        )
    else:
        data = image.pngsave_buffer(compression=preset.png_compression, keep="none")
    return data


def _check_encoders() -> None:
    wanted = {fmt.name for fmt in output_formats()}
    if wanted != set(ENCODERS):
        missing = ", ".join(sorted(wanted - set(ENCODERS))) or "none"
        extra = ", ".join(sorted(set(ENCODERS) - wanted)) or "none"
        raise RuntimeError(
            f"every output format of uplodr.formats needs one @encoder: missing {missing}; "
            f"not an output format: {extra}"
        )


_check_encoders()

# Process-wide: one encode at a time of all `one_at_a_time` formats together (memory: an AVIF
# and a JPEG XL encode side by side would not fit a 24 MP photo's job in 512 MB).
_HEAVY_SLOT: Final = threading.BoundedSemaphore(1)
SLOTS: Final[dict[str, threading.BoundedSemaphore]] = {
    fmt.name: _HEAVY_SLOT for fmt in output_formats() if fmt.one_at_a_time
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
    spec: VariantSpec,
    image: pyvips.Image,
    preset: Preset,
    frames: int,
    slot_wait: float,
    rivals: Rivals | None = None,
) -> EncodedVariant:
    """Encode `image` (already prepared for this variant). `frames` > 1 means animated.

    A `one_at_a_time` format waits up to `slot_wait` s for its slot (LimitExceeded after).
    `rivals` (full sizes with a target): a format that cannot win is not encoded, its variant
    empty with the reason in `skipped`."""
    fmt = spec.format
    save = ENCODERS[fmt.name]
    slot = SLOTS.get(fmt.name)
    if slot is not None and not slot.acquire(timeout=slot_wait):
        raise LimitExceeded(
            f"timed out waiting for the {fmt.label} encoder (one heavy encoder runs at a time)"
        )
    try:
        start = time.perf_counter()
        setting = QUALITY_SETTING.get(fmt.name)
        receipt = None
        skipped = None
        if preset.quality is None or setting is None or frames > 1:
            data = save(image, preset)
        else:
            target = preset.quality.target
            heavy = slot is not None  # a one-at-a-time format: its encode is the memory peak
            try:
                data, receipt = targeted.encode(
                    image, preset, setting, target, save, heavy, rivals, slot_wait
                )
            except NotAWinner as loser:
                data, skipped = b"", str(loser)
        seconds = time.perf_counter() - start
    finally:
        if slot is not None:
            slot.release()
    return EncodedVariant(
        format=fmt.name,
        role=spec.role.name,
        suffix=spec.suffix,
        ext=fmt.ext,
        mime_type=fmt.mime_type,
        width=int(image.width),
        height=int(image.height) // frames,
        data=data,
        encode_seconds=seconds,
        animated=frames > 1,
        name=spec.label,
        quality=receipt,
        skipped=skipped,
    )
