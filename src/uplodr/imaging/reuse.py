"""Never worse than the upload: the upload itself, losslessly optimized, as its format's variant.

A JPEG upload is often already a web JPEG (book-beside-flowers.jpg: a 12 MP photo at about q70,
1.58 MB); re-encoding it at the same size only adds a generation of loss, and at a fixed q82 it
was 1.82 MB. When the upload is a JPEG at the output size, upright (EXIF orientation 1) and of
one frame, its entropy coding is optimized by MozJPEG's `jpegtran -optimize -copy none`
(PyPI `mozjpeg-lossless-optimization`: every marker dropped — EXIF, XMP, ICC, comments — the
DCT coefficients untouched). Its pixels as a browser then shows them (no ICC profile: sRGB) are
scored against the decoded source, so an upload in another colour space (Adobe RGB) fails the
target and is re-encoded instead; otherwise the smaller of it and the targeted encode is served.

Optimizing costs ~0.4 CPU-s for a 12 MP JPEG and saves 0.3-9 % of its bytes on the corpus (most
of that metadata), so it is only tried when the upload is at most `REACH` times the targeted
encode's bytes. Whenever the encode is the larger, the upload is tried, so a served JPEG is never
larger than a web JPEG upload; book-beside-flowers.jpg (1.58 MB; its JPEG at 75 is 1.44 MB, 9.5 %
less) skips it.

WebP uploads are not reused: no maintained library strips a WebP's metadata losslessly.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import mozjpeg_lossless_optimization
import pyvips

from uplodr.imaging import quality, targeted
from uplodr.imaging.encode import EncodedVariant
from uplodr.imaging.probe import ImageInfo
from uplodr.imaging.targeted import Receipt

log = logging.getLogger(__name__)

# The upload is optimized only when it is at most this many times the targeted encode's bytes.
REACH = 1.05


def reusable(info: ImageInfo, variant: EncodedVariant) -> bool:
    """True when the upload could stand in for `variant`: same format, size, one frame."""
    return (
        info.format == "jpeg"
        and variant.format == "jpeg"
        and variant.role == "full"
        and info.orientation == 1
        and info.frames == 1
        and (info.width, info.height) == (variant.width, variant.height)
        and variant.quality is not None
    )


def better(
    path: Path, variant: EncodedVariant, decoded: pyvips.Image, target: float
) -> EncodedVariant:
    """`variant`, or the optimized upload when that meets `target` in fewer bytes."""
    if path.stat().st_size > REACH * len(variant.data):
        return variant
    try:
        data = mozjpeg_lossless_optimization.optimize(path.read_bytes())
    except ValueError as error:  # MozJPEG could not read it: keep the encode
        log.debug("lossless optimization of the upload failed: %s", error)
        return variant
    if len(data) >= len(variant.data):
        return variant
    shown = pyvips.Image.new_from_buffer(data, "")
    if (int(shown.width), int(shown.height)) != (int(decoded.width), int(decoded.height)):
        return variant
    tiles = targeted.sample(decoded)
    reference = quality.shared(tiles)
    score = reference.score(targeted.sample(shown)) - targeted.sample_bias(decoded, tiles)
    if score < target - targeted.BELOW:
        return variant
    receipt = Receipt(quality.METRIC, round(min(score, 100.0), 1), None, 1, 0.0, "upload")
    return replace(variant, data=data, quality=receipt)
