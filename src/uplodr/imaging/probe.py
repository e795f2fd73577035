"""Identify an image and check it against the limits from its header alone (no pixel decoded).

libvips reads the header of every format it decodes; libheif (pillow-heif) reads the header of
HEIC, which libvips never sees, and the colour description (`nclx`) of AVIF, which libvips does
not report."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

import pyvips

from uplodr import formats
from uplodr.errors import CorruptImage, LimitExceeded, UnsupportedImage
from uplodr.imaging.colour import Cicp
from uplodr.imaging.heif import HeifHeader, read_header
from uplodr.imaging.limits import ImageLimits
from uplodr.imaging.sniff import ImageFormat, read_head, sniff
from uplodr.imaging.vips import configure_vips
from uplodr.sniff import ALLOWED_TEXT, unsupported_message

log = logging.getLogger(__name__)

# libheif as built into pyvips-binary decodes AV1 only; HEVC (HEIC) is patent-encumbered and
# left out. HEIC is sniffed by its brands and decoded by pillow-heif; a file labelled AVIF whose
# header says another compression is refused.
_HEIF_LOADER: Final = "heifload"
_HEIF_DECODES: Final = "av1"


@dataclass(frozen=True)
class ImageInfo:
    format: ImageFormat
    width: int  # as stored, of one frame
    height: int  # as stored, of one frame
    frames: int  # animation frames that will be decoded (1 for a still)
    bands: int
    has_alpha: bool
    interpretation: str  # libvips name: srgb, cmyk, b-w, rgb16, grey16, ...
    sample_format: str  # libvips name: uchar, ushort, ...
    orientation: int  # EXIF orientation 1-8 (1 when absent)
    has_icc_profile: bool
    file_size: int
    # Colour given by numbers (an AVIF's or HEIC's nclx box) and no ICC profile; None = sRGB.
    cicp: Cicp | None = None
    # The libheif header of a HEIC, whose pixels pillow-heif decodes (None for libvips formats).
    heif: HeifHeader | None = None

    @property
    def animated(self) -> bool:
        return self.frames > 1

    @property
    def pixels(self) -> int:
        return self.width * self.height * self.frames

    @property
    def display_size(self) -> tuple[int, int]:
        """Width and height once auto-oriented (orientations 5-8 swap the sides)."""
        if self.orientation in (5, 6, 7, 8):
            return self.height, self.width
        return self.width, self.height


def probe(path: Path, limits: ImageLimits) -> ImageInfo:
    """Sniff, open the header with the one loader for that format, and check the limits.

    Raises UnsupportedImage, CorruptImage or LimitExceeded.
    """
    configure_vips()
    head = read_head(path)
    fmt = sniff(head)
    if fmt is None:
        raise UnsupportedImage(unsupported_message(head))
    label = formats.get(fmt).label
    if formats.get(fmt).decoder == "pillow-heif":
        info = _heif_info(read_header(path, label), fmt, path.stat().st_size)
        check_limits(info, limits)
        return info
    header = _open_header(path, fmt)
    info = _info(header, fmt, path.stat().st_size)
    _check_codec(header, info)
    check_limits(info, limits)
    if formats.get(fmt).brands and not info.has_icc_profile:  # AVIF: colour by numbers?
        info = replace(info, cicp=read_header(path, label).cicp)
    return info


def _heif_info(header: HeifHeader, fmt: ImageFormat, file_size: int) -> ImageInfo:
    sixteen = header.bit_depth > 8
    grey = header.bands < 3
    return ImageInfo(
        format=fmt,
        width=header.width,
        height=header.height,
        frames=1,  # a burst's other top-level images are not decoded
        bands=header.bands,
        has_alpha=header.has_alpha,
        interpretation=("grey16" if sixteen else "b-w")
        if grey
        else ("rgb16" if sixteen else "srgb"),
        sample_format="ushort" if sixteen else "uchar",
        orientation=1,  # libheif applies the HEIF transforms; the header size is after them
        has_icc_profile=header.icc_profile is not None,
        file_size=file_size,
        cicp=header.cicp,
        heif=header,
    )


def _open_header(path: Path, fmt: ImageFormat) -> pyvips.Image:
    try:
        source = pyvips.Source.new_from_file(str(path))
        loader = formats.get(fmt).loaders[0]
        return pyvips.Operation.call(
            f"{loader}_source", source, access="sequential", fail_on="truncated"
        )
    except pyvips.Error as error:
        log.debug("header of %s rejected by libvips: %s", fmt, error)
        raise CorruptImage(
            f"the {formats.get(fmt).label} header is truncated or corrupt and cannot be read"
        ) from None


def _field(image: pyvips.Image, name: str, default: int) -> int:
    return int(image.get(name)) if image.get_typeof(name) else default


def _info(header: pyvips.Image, fmt: ImageFormat, file_size: int) -> ImageInfo:
    # A HEIF file's extra images are separate pictures, not frames: only the primary is used.
    pages = _field(header, "n-pages", 1) if formats.get(fmt).animated_input else 1
    return ImageInfo(
        format=fmt,
        width=header.width,
        height=header.height,
        frames=max(1, pages),
        bands=header.bands,
        has_alpha=bool(header.hasalpha()),
        interpretation=str(header.interpretation),
        sample_format=str(header.format),
        orientation=_field(header, "orientation", 1),
        has_icc_profile=bool(header.get_typeof("icc-profile-data")),
        file_size=file_size,
    )


def _check_codec(header: pyvips.Image, info: ImageInfo) -> None:
    if formats.get(info.format).loaders[0] == _HEIF_LOADER and header.get_typeof(
        "heif-compression"
    ):
        compression = str(header.get("heif-compression"))
        if compression != _HEIF_DECODES:
            label = formats.get(info.format).label
            raise UnsupportedImage(
                f"a file labelled {label} but compressed with {compression.upper()} cannot be "
                f"decoded here (HEVC must be labelled HEIC); allowed formats are {ALLOWED_TEXT}"
            )


def check_limits(info: ImageInfo, limits: ImageLimits) -> None:
    size = f"{info.width}x{info.height} px"
    if max(info.width, info.height) > limits.max_side:
        raise LimitExceeded(
            f"image is {size}; the longest side may be at most {limits.max_side} px"
        )
    if info.frames > limits.max_frames:
        raise LimitExceeded(
            f"image has {info.frames} frames; at most {limits.max_frames} are allowed"
        )
    frames = f" x {info.frames} frames" if info.animated else ""
    if info.pixels > limits.max_pixels:
        raise LimitExceeded(
            f"image is {size}{frames} = {info.pixels / 1e6:.1f} MP; "
            f"the limit is {limits.max_pixels / 1e6:g} MP"
        )
    if info.animated and info.pixels > limits.max_animated_pixels:
        raise LimitExceeded(
            f"animation is {size}{frames} = {info.pixels / 1e6:.1f} MP; "
            f"the limit for animations is {limits.max_animated_pixels / 1e6:g} MP"
        )
