"""One uploaded image in, its web variants out: probe, decode once, encode in two threads.

    full size   every format of the preset's `formats`, capped at `max_long_side`
    widths      the same formats again at each of the preset's `widths` smaller than the full
                size (never enlarged), each shrunk once from the decoded image
    thumbnail   PNG (or WebP: `thumbnail_format`), first frame; never larger than the first
                full-size variant stored (narrower if it would be)
    quality     with the preset's quality target (the default), each WebP/AVIF/JPEG variant at
                the fewest bytes that meet it (`targeted`); a JPEG upload at the output size
                may stand in for its JPEG, losslessly optimized (`reuse`); a format that does not
                win by the preset's `format_margin` is dropped and said so (`winners`), one
                whose search's sample shows it cannot before its full encode (`rivals`)
    placeholder ThumbHash, BlurHash and a data URL, from the first frame (`placeholder`)

Animated input (GIF, animated WebP) stays animated in the WebP and AVIF variants (AVIF through
Pillow's libavif, libvips writes no AVIF sequences); the JPEG and the PNG thumbnail are the
FIRST FRAME. Each variant's `animated` field says which is which.

A preset that keeps only the original (`Preset.encodes` false) is probed (sniffed, header
checked against the limits) and nothing is decoded: its size is the header's.

Encodes run in two threads. The one-at-a-time formats (AVIF, JPEG XL) run as one chain, full
sizes first, in one thread, while the other thread encodes everything else: a width variant of
AVIF never holds a thread waiting for the shared slot.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import pyvips

from uplodr import formats
from uplodr.errors import UplodrError
from uplodr.formats import FULL, THUMBNAIL, WIDTH, VariantSpec
from uplodr.imaging import pipeline, placeholder, quality, reuse, winners
from uplodr.imaging.deadline import Deadline
from uplodr.imaging.encode import EncodedVariant, encode
from uplodr.imaging.limits import ImageLimits
from uplodr.imaging.placeholder import Placeholder
from uplodr.imaging.probe import ImageInfo, probe
from uplodr.imaging.rivals import SUPPORT, Rivals
from uplodr.imaging.vips import release_memory
from uplodr.preset import Preset

log = logging.getLogger(__name__)

# Two cores: the encoders release the GIL, AVIF alone keeps both busy part of the time.
ENCODE_THREADS = 2
# Encodes of a thumbnail made narrower to stay within the full-size variant's bytes.
THUMBNAIL_TRIES = 4


@dataclass(frozen=True)
class Conversion:
    """What one image became."""

    # Full-size formats in the preset's order, then each width (ascending) in the same format
    # order, then the thumbnail. Empty when only the original is kept.
    variants: list[EncodedVariant]
    # Intrinsic size of the full-size output (one frame): what `<img width height>` says.
    width: int
    height: int
    placeholder: Placeholder | None  # None when nothing was decoded (original only)
    source: ImageInfo  # the upload as its header describes it (sniffed format, size)
    # Formats the preset asked for and not stored (they did not win by its format_margin).
    skipped: list[winners.Skipped] = field(default_factory=list)


def convert(path: Path, preset: Preset, limits: ImageLimits) -> Conversion:
    """The variants of the image at `path`, as `preset` asks for them.

    Raises UnsupportedImage, CorruptImage or LimitExceeded (size, frames, time).
    """
    try:
        return _convert(path, preset, limits)
    finally:
        quality.forget()
        release_memory()


def _convert(path: Path, preset: Preset, limits: ImageLimits) -> Conversion:
    deadline = Deadline(limits.max_seconds)
    info = probe(path, limits)
    if not preset.encodes:
        width, height = info.display_size
        return Conversion([], width, height, None, info)
    decoded = pipeline.prepare(path, info, preset.max_long_side, deadline)
    still = pipeline.first_frame(decoded)

    full = [formats.get(name) for name in preset.formats]
    jobs: list[tuple[VariantSpec, pyvips.Image]] = [
        (VariantSpec(fmt, FULL), _for_format(decoded, fmt, preset)) for fmt in full
    ]
    for width in preset.widths:
        if width >= decoded.width:  # never enlarged: the full size is the largest
            continue
        sized = pipeline.materialize(pipeline.fit_width(decoded, width), deadline)
        jobs += [(VariantSpec(fmt, WIDTH, width), _for_format(sized, fmt, preset)) for fmt in full]
    if preset.thumbnail_width:
        spec = VariantSpec(formats.get(preset.thumbnail_format), THUMBNAIL)
        thumb = pipeline.fit_width(still, preset.thumbnail_width)
        jobs.append((spec, _for_format(thumb, spec.format, preset)))

    hint = placeholder.make(still, preset.jpeg_background)
    transparent = bool(decoded.hasalpha())
    rivals = None  # an animation's formats are not searched: nothing to compare
    if preset.quality and preset.format_margin and pipeline.frame_count(decoded) == 1:
        rivals = Rivals(preset.formats, preset.format_margin, transparent)
    variants = _encode_all(jobs, preset, deadline, rivals)
    skipped = [winners.Skipped(v.format, v.skipped) for v in variants if v.skipped]
    if skipped:  # not encoded at full size: no width variants of it either
        losers = {skip.format for skip in skipped}
        variants = [v for v in variants if v.format not in losers or v.role == "thumbnail"]
    if preset.quality is not None:
        variants = [
            reuse.better(path, v, decoded, preset.quality.target) if reuse.reusable(info, v) else v
            for v in variants
        ]
        variants, dropped = winners.keep_winners(variants, preset.format_margin, transparent)
        skipped = sorted([*skipped, *dropped], key=lambda skip: preset.formats.index(skip.format))
    if preset.thumbnail_width:
        variants[-1] = _thumbnail_within_full(variants, still, preset, deadline)
    log.debug(
        "converted %s %dx%d x%d into %d variants in %.2fs",
        formats.get(info.format).label,
        info.width,
        info.height,
        info.frames,
        len(variants),
        limits.max_seconds - deadline.remaining(),
    )
    return Conversion(
        variants, int(decoded.width), pipeline.page_height(decoded), hint, info, skipped
    )


def _thumbnail_within_full(
    variants: list[EncodedVariant], still: pyvips.Image, preset: Preset, deadline: Deadline
) -> EncodedVariant:
    """The thumbnail (the last variant), never larger than the first full-size variant stored,
    in the preset's order (WebP by default; AVIF where WebP did not win by `format_margin`,
    then smaller than the WebP would have been): a PNG thumbnail as wide as the full size (a small
    upload) is several times its lossy WebP (sample-16bit.png: 107 KB against 18.7 KB), so it
    is made narrower, in the same settings, until it is not. Bytes follow the pixel count, so
    each try shrinks the width by the square root of the excess; one try is usually enough.
    Below a few pixels PNG's fixed overhead alone may exceed a tiny WebP: the last try is
    kept."""
    thumb = variants[-1]
    if not preset.formats:
        return thumb
    limit = len(variants[0].data)  # full sizes come first, in the preset's order
    spec = VariantSpec(formats.get(preset.thumbnail_format), THUMBNAIL)
    for _ in range(THUMBNAIL_TRIES):
        if len(thumb.data) <= limit or thumb.width <= 1:
            break
        width = max(1, math.floor(thumb.width * math.sqrt(limit / len(thumb.data)) * 0.95))
        image = _for_format(pipeline.fit_width(still, width), spec.format, preset)
        thumb = _encode_one(spec, deadline.watch(image), preset, 1, deadline)
    return thumb


def _for_format(image: pyvips.Image, fmt: formats.Format, preset: Preset) -> pyvips.Image:
    """The shared image as this format can carry it: one frame unless it writes animations,
    alpha flattened onto the preset's background unless it keeps transparency."""
    if not fmt.animated_output:
        image = pipeline.first_frame(image)
    if not fmt.alpha:
        image = pipeline.flatten(image, preset.jpeg_background)
    return image


def _chains(jobs: list[tuple[VariantSpec, pyvips.Image]]) -> list[list[int]]:
    """Job indices grouped into what one thread runs in a row: all encodes of the one-at-a-time
    formats (AVIF, JPEG XL) as one chain, in the jobs' order (full sizes first), started first
    — they share one slot, so a second chain would only hold a thread waiting — and every other
    encode on its own, the full sizes of the more widely decoded formats first (the JPEG before
    the WebP: a WebP that cannot win against it is then known before its full encode,
    `rivals`)."""
    slow: list[int] = []
    rest: list[list[int]] = []
    for index, (spec, _) in enumerate(jobs):
        if spec.format.one_at_a_time:
            slow.append(index)
        else:
            rest.append([index])
    rest.sort(key=lambda chain: _fallbacks_first(jobs[chain[0]][0]))
    return [slow, *rest] if slow else rest


def _fallbacks_first(spec: VariantSpec) -> int:
    """Full sizes in SUPPORT order (most widely decoded first), before every other job."""
    if spec.role.name == "full" and spec.format.name in SUPPORT:
        return SUPPORT.index(spec.format.name)
    return len(SUPPORT)


def _encode_all(
    jobs: list[tuple[VariantSpec, pyvips.Image]],
    preset: Preset,
    deadline: Deadline,
    rivals: Rivals | None = None,
) -> list[EncodedVariant]:
    pool = ThreadPoolExecutor(ENCODE_THREADS, thread_name_prefix="uplodr-encode")
    results: dict[int, EncodedVariant] = {}

    def run(chain: list[int]) -> None:
        for index in chain:
            spec, image = jobs[index]
            frames = pipeline.frame_count(image)
            watched = deadline.watch(image)
            full = spec.role.name == "full"
            results[index] = _encode_one(
                spec, watched, preset, frames, deadline, rivals if full else None
            )

    futures: list[Future[None]] = []
    try:
        futures = [pool.submit(run, chain) for chain in _chains(jobs)]
        done, pending = wait(futures, deadline.remaining(), FIRST_EXCEPTION)
        for future in done:
            future.result()  # a real error beats "too slow"
        if pending:
            deadline.abort()
            raise deadline.error()
        return [results[i] for i in range(len(jobs))]
    except BaseException:
        deadline.abort()  # stop the other encoder too
        if rivals is not None:
            rivals.cancel()  # and a format waiting for a fallback that will not come
        raise
    finally:
        pool.shutdown(wait=not deadline.tripped, cancel_futures=True)


def _encode_one(
    spec: VariantSpec,
    image: pyvips.Image,
    preset: Preset,
    frames: int,
    deadline: Deadline,
    rivals: Rivals | None = None,
) -> EncodedVariant:
    deadline.check()
    try:
        variant = encode(spec, image, preset, frames, deadline.remaining(), rivals)
    except pyvips.Error as error:
        deadline.check()  # killed by the deadline: LimitExceeded
        log.warning("encoding the %s variant failed: %s", spec.label, error)
        raise UplodrError(f"could not encode the {spec.label} variant") from None
    except (OSError, ValueError) as error:  # Pillow's AVIF encoder (animations)
        deadline.check()
        log.warning("encoding the %s variant failed: %s", spec.label, error)
        raise UplodrError(f"could not encode the {spec.label} variant") from None
    deadline.check()
    return variant
