"""The conversion pipeline as named steps, one job each (after imgproxy's `processing/`).

Shared by every variant, run once per image:

    scale_on_load   decode while shrinking to the preset's long side (shrink-on-load), auto-orient,
                    and import the embedded ICC profile (or libvips' CMYK fallback) into sRGB,
                    all in one streaming pass, so a 24 MP JPEG never sits in memory at full size;
                    colour given by CICP numbers instead of a profile (AVIF, HEIC) is mapped to
                    sRGB on the way (`colour`); HEIC pixels come from pillow-heif (`heif`), the
                    rest of the pass is the same
    decode          evaluate that pass once into memory (`copy_memory`), under the deadline
    to_srgb8        sRGB (or grey) with 8-bit samples, whatever the pass left
    strip_metadata  drop EXIF, XMP, IPTC, ICC, orientation and comments (outputs are plain sRGB)

Then per variant, on the shared decoded image (cheap, lazy views):

    first_frame     one frame of an animation, for formats/variants that cannot animate
    flatten         alpha composited onto a background colour, for formats without alpha
    fit_width       a width variant's or the thumbnail's width, never enlarged (every frame)
"""

from __future__ import annotations

import logging
from pathlib import Path

import pyvips

from uplodr import formats
from uplodr.errors import CorruptImage
from uplodr.imaging import colour, heif
from uplodr.imaging.deadline import Deadline
from uplodr.imaging.probe import ImageInfo

log = logging.getLogger(__name__)

# Fields that describe pixels or animation: everything else is metadata and is dropped.
_KEEP_FIELDS = frozenset(
    {
        "width", "height", "bands", "format", "coding", "interpretation",
        "xoffset", "yoffset", "xres", "yres", "page-height", "n-pages", "delay", "loop",
    }
)  # fmt: skip


def scale_on_load(path: Path, info: ImageInfo, max_long_side: int) -> pyvips.Image:
    """A lazy image: shrink-on-load to fit max_long_side (never enlarge), oriented, sRGB."""
    if info.heif is not None:  # HEIC: decoded here, by libheif (cannot be cut short)
        return _fit(heif.decode_primary(path, info.heif), info, max_long_side)
    if info.cicp is not None and not info.cicp.is_srgb:
        return _fit(_load(path, info), info, max_long_side)
    options = "fail_on=truncated"
    if info.animated:  # probe counts frames only for formats with animated_input
        options += ",n=-1"  # every frame; the box applies to each frame
    source = pyvips.Source.new_from_file(str(path))
    try:
        # Shrink-on-load may already decode (JPEG's DCT scaling), so a truncated file can
        # fail here as well as in decode().
        return pyvips.Image.thumbnail_source(
            source,
            max_long_side,
            height=max_long_side,
            size="down",
            option_string=options,
            export_profile="srgb",
        )
    except pyvips.Error as error:
        log.debug("load of %s failed: %s", info.format, error)
        raise corrupt(info) from None


def _load(path: Path, info: ImageInfo) -> pyvips.Image:
    """A lazy image at full size, as stored: for colour that thumbnail's ICC pass cannot map."""
    loader = formats.get(info.format).loaders[0]
    try:
        source = pyvips.Source.new_from_file(str(path))
        image: pyvips.Image = pyvips.Operation.call(
            f"{loader}_source", source, access="sequential", fail_on="truncated"
        )
    except pyvips.Error as error:
        log.debug("load of %s failed: %s", info.format, error)
        raise corrupt(info) from None
    return image


def _fit(image: pyvips.Image, info: ImageInfo, max_long_side: int) -> pyvips.Image:
    """Pixels already loaded (or loading lazily), shrunk to fit max_long_side, as sRGB: the
    attached ICC profile imported by thumbnail's colour pass, or the CICP description mapped
    after a shrink that keeps every bit (thumbnail would cut 16-bit samples to 8 first)."""
    if info.cicp is not None and not info.cicp.is_srgb:
        return colour.to_srgb8(shrink(image, max_long_side), info.cicp)
    profile = {"export_profile": "srgb"} if image.get_typeof("icc-profile-data") else {}
    return image.thumbnail_image(max_long_side, height=max_long_side, size="down", **profile)


def shrink(image: pyvips.Image, max_long_side: int) -> pyvips.Image:
    """Shrink to fit `max_long_side` (never enlarge), keeping the sample format; alpha is
    premultiplied while resampling, as thumbnail does."""
    scale = max_long_side / max(image.width, image.height)
    if scale >= 1:
        return image
    if not image.hasalpha():
        return image.resize(scale)
    sample_format = image.format
    return image.premultiply().resize(scale).unpremultiply().cast(sample_format)


def corrupt(info: ImageInfo) -> CorruptImage:
    label = formats.get(info.format).label
    return CorruptImage(f"the {label} image data is truncated or corrupt and cannot be decoded")


def decode(image: pyvips.Image, info: ImageInfo, deadline: Deadline) -> pyvips.Image:
    """Run the decode once into memory; truncated or corrupt data -> CorruptImage."""
    try:
        return materialize(image, deadline)
    except pyvips.Error as error:
        log.debug("decode of %s failed: %s", info.format, error)
        raise corrupt(info) from None


def materialize(image: pyvips.Image, deadline: Deadline) -> pyvips.Image:
    """Compute a lazy image into memory once, killed (LimitExceeded) when time is up."""
    watched = deadline.watch(image)
    try:
        computed = watched.copy_memory()
    except pyvips.Error:
        deadline.check()
        raise
    deadline.check()
    return computed


def to_srgb8(image: pyvips.Image) -> pyvips.Image:
    """sRGB or grey, 8 bits per sample (thumbnail's ICC pass already does most of this)."""
    if image.interpretation not in ("srgb", "b-w"):
        image = image.colourspace("srgb")
    if image.format != "uchar":
        image = image.cast("uchar")
    return image


def strip_metadata(image: pyvips.Image) -> pyvips.Image:
    image = image.copy()
    for name in image.get_fields():
        if name not in _KEEP_FIELDS:
            image.remove(name)
    return image


def prepare(path: Path, info: ImageInfo, max_long_side: int, deadline: Deadline) -> pyvips.Image:
    """The shared, decoded, in-memory image every variant is encoded from."""
    image = scale_on_load(path, info, max_long_side)
    image = decode(image, info, deadline)
    image = to_srgb8(image)
    return strip_metadata(image)


def page_height(image: pyvips.Image) -> int:
    if image.get_typeof("page-height"):
        height = int(image.get("page-height"))
        if 0 < height <= image.height and image.height % height == 0:
            return height
    return int(image.height)


def frame_count(image: pyvips.Image) -> int:
    return int(image.height) // page_height(image)


def first_frame(image: pyvips.Image) -> pyvips.Image:
    if frame_count(image) == 1:
        return image
    frame = image.crop(0, 0, image.width, page_height(image))
    for name in ("page-height", "n-pages", "delay", "loop"):
        if frame.get_typeof(name):
            frame.remove(name)
    return frame


def flatten(image: pyvips.Image, background: tuple[int, int, int]) -> pyvips.Image:
    if not image.hasalpha():
        return image
    colour = list(background) if image.bands > 2 else [round(sum(background) / 3)]
    return image.flatten(background=colour).cast("uchar")


def fit_width(image: pyvips.Image, width: int) -> pyvips.Image:
    """Shrink to `width` (keeping the aspect ratio, handling alpha); never enlarge."""
    if image.width <= width:
        return image
    return image.thumbnail_image(width, height=image.height, size="down")
