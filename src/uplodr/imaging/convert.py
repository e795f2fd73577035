"""One uploaded image in, its web variants out: probe, decode once, encode in two threads.

Animated input (GIF, animated WebP) stays animated in the WebP variant only. libvips cannot
write animated AVIF (it would write the frames as separate, unrelated images), so the AVIF
variant is the FIRST FRAME, as are the JPEG and the PNG thumbnail; each variant's `animated`
field says which is which.
"""

from __future__ import annotations

import logging
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path

import pyvips

from uplodr import formats
from uplodr.errors import UplodrError
from uplodr.formats import FULL, THUMBNAIL, VariantSpec
from uplodr.imaging import pipeline
from uplodr.imaging.deadline import Deadline
from uplodr.imaging.encode import EncodedVariant, encode
from uplodr.imaging.limits import ImageLimits
from uplodr.imaging.probe import probe
from uplodr.imaging.vips import release_memory
from uplodr.preset import Preset

log = logging.getLogger(__name__)

# Two cores: the encoders release the GIL, AVIF alone keeps both busy part of the time.
ENCODE_THREADS = 2


def convert(path: Path, preset: Preset, limits: ImageLimits) -> list[EncodedVariant]:
    """The variants of the image at `path`: `preset.formats` in order, then the thumbnail.

    Raises UnsupportedImage, CorruptImage or LimitExceeded (size, frames, time).
    """
    try:
        return _convert(path, preset, limits)
    finally:
        release_memory()


def _convert(path: Path, preset: Preset, limits: ImageLimits) -> list[EncodedVariant]:
    deadline = Deadline(limits.max_seconds)
    info = probe(path, limits)
    decoded = pipeline.prepare(path, info, preset.max_long_side, deadline)

    jobs: list[tuple[VariantSpec, pyvips.Image]] = []
    for name in preset.formats:
        spec = VariantSpec(formats.get(name), FULL)
        jobs.append((spec, _for_format(decoded, spec.format, preset)))
    if preset.thumbnail_width:
        spec = VariantSpec(formats.thumbnail_format(), THUMBNAIL)
        thumb = pipeline.fit_width(pipeline.first_frame(decoded), preset.thumbnail_width)
        jobs.append((spec, _for_format(thumb, spec.format, preset)))

    variants = _encode_all(jobs, preset, deadline)
    log.debug(
        "converted %s %dx%d x%d in %.2fs",
        formats.get(info.format).label,
        info.width,
        info.height,
        info.frames,
        limits.max_seconds - deadline.remaining(),
    )
    return variants


def _for_format(image: pyvips.Image, fmt: formats.Format, preset: Preset) -> pyvips.Image:
    """The shared image as this format can carry it: one frame unless it writes animations,
    alpha flattened onto the preset's background unless it keeps transparency."""
    if not fmt.animated_output:
        image = pipeline.first_frame(image)
    if not fmt.alpha:
        image = pipeline.flatten(image, preset.jpeg_background)
    return image


def _encode_all(
    jobs: list[tuple[VariantSpec, pyvips.Image]], preset: Preset, deadline: Deadline
) -> list[EncodedVariant]:
    # The slowest encodes (one-at-a-time formats: AVIF) start first, so the other thread does
    # the rest meanwhile.
    order = sorted(range(len(jobs)), key=lambda i: not jobs[i][0].format.one_at_a_time)
    pool = ThreadPoolExecutor(ENCODE_THREADS, thread_name_prefix="uplodr-encode")
    futures: dict[int, Future[EncodedVariant]] = {}
    try:
        for i in order:
            spec, image = jobs[i]
            frames = pipeline.frame_count(image)
            futures[i] = pool.submit(
                _encode_one, spec, deadline.watch(image), preset, frames, deadline
            )
        done, pending = wait(futures.values(), deadline.remaining(), FIRST_EXCEPTION)
        if pending:
            deadline.abort()
            for future in done:
                future.result()  # a real error beats "too slow"
            raise deadline.error()
        return [futures[i].result() for i in range(len(jobs))]
    except BaseException:
        deadline.abort()  # stop the other encoder too
        raise
    finally:
        pool.shutdown(wait=not deadline.tripped, cancel_futures=True)


def _encode_one(
    spec: VariantSpec, image: pyvips.Image, preset: Preset, frames: int, deadline: Deadline
) -> EncodedVariant:
    deadline.check()
    try:
        variant = encode(spec, image, preset, frames, slot_wait=deadline.remaining())
    except pyvips.Error as error:
        deadline.check()  # killed by the deadline: LimitExceeded
        log.warning("encoding the %s variant failed: %s", spec.label, error)
        raise UplodrError(f"could not encode the {spec.label} variant") from None
    deadline.check()
    return variant
