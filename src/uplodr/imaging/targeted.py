"""Encode one variant at the fewest bytes that meet the preset's quality target.

Trials are cheap: a SAMPLE of the image — four 256² tiles from its four quarters, joined into
one 512² image — is encoded alone at a trial setting and scored against the same sample of the
source (`quality.search`, ~0.05 CPU-s a score). The full image is then encoded once, at the
setting found.

For JPEG and AVIF the sample encoded alone IS what the full encode holds there (fixed
quantisers, tiles on 16 px block boundaries: measured within 0.1 point), so the last trial's score
is the served one. WebP's segment quantisers follow the whole image's statistics, so a crop
encoded alone can look better or worse than the same pixels in the full encode (up to ~10 points
on Landscape_6.jpg): its full encode is decoded, the sample cut from it and scored; when that
misses, the search runs again once with the target moved by the measured offset and the full
image is encoded a second time, and the smaller encode that meets the target wins. A format not
in `EXACT_SAMPLE` (a new one) is checked the same way.

A sample scores higher than the whole image (SSIMULACRA2 pools the worst regions and coarse
scales of the whole): by 1.7-3.8 points on the corpus (bench/quality_study.py, docs/benchmarks.md).
The search aims that much higher, and the receipt is the sample's score less that bias: an
estimate of the whole image's score at 1:1, within ±2 of it on the corpus. The bias shrinks as
the sample covers more of the image (none when it is the whole image): `SAMPLE_BIAS` times the
share of the image outside the sample. (A whole 12 MP score
needs gigabytes with this metric's numpy implementation; four 512² tiles agree within ±1.1 but
cost 0.5 CPU-s and ~0.5 GB a score.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import pyvips

from uplodr.imaging import quality
from uplodr.imaging.rivals import NotAWinner, Rivals
from uplodr.preset import Preset

# A full encode that scores at least target - BELOW is kept; one above target + ABOVE is
# searched again lower (bytes wasted).
BELOW: Final = 1.0
ABOVE: Final = 3.0
TILE: Final = 256
# Sample score minus whole-image score, measured on the corpus (see above).
SAMPLE_BIAS: Final = 2.0
# Formats whose sample encoded alone scores as the same sample of the full encode (measured).
EXACT_SAMPLE: Final = frozenset({"jpeg", "avif"})

# Per format: the setting that meets SSIMULACRA2 75 on a typical corpus photo, and the score
# points per setting unit around it (bench/quality_study.py). Only the search's first guess.
PRIOR: Final[dict[str, tuple[int, float]]] = {
    "webp": (78, 0.7),
    "avif": (61, 0.75),
    "jpeg": (66, 0.75),
    "jxl": (71, 0.7),  # libjxl effort 4, measured on Landscape_6's sample (q70: 74.5, q75: 78.6)
}
DEFAULT_PRIOR: Final = (75, 0.7)


@dataclass(frozen=True)
class Receipt:
    """The quality a variant was delivered at."""

    metric: str  # "ssimulacra2"
    score: float  # of the served bytes, on the sample, rounded to 0.1
    setting: int | None  # the encoder setting used (the format's quality); None: the upload
    encodes: int  # sample trials plus full-size encodes
    saved: float  # share of bytes saved against the preset's fixed setting (sample estimate)
    source: str = "encoded"  # "encoded", or "upload": the upload losslessly optimized


def sample(image: pyvips.Image, tile: int = TILE) -> pyvips.Image:
    """Four `tile`² tiles centred in the image's quarters, joined 2x2 (the whole image when it
    is not larger than two tiles each way). Offsets are multiples of 16 (JPEG blocks)."""
    width, height = int(image.width), int(image.height)
    if width <= 2 * tile and height <= 2 * tile:
        return image.copy_memory()
    side_w, side_h = min(tile, width // 2), min(tile, height // 2)
    tiles = []
    for y in (height // 4, 3 * height // 4):
        for x in (width // 4, 3 * width // 4):
            left = max(0, min(width - side_w, (x - side_w // 2) // 16 * 16))
            top = max(0, min(height - side_h, (y - side_h // 2) // 16 * 16))
            tiles.append(image.crop(left, top, side_w, side_h))
    joined: pyvips.Image = pyvips.Image.arrayjoin(tiles, across=2)
    return joined.copy_memory()


def sample_bias(image: pyvips.Image, tiles: pyvips.Image) -> float:
    """How much higher the sample `tiles` of `image` is expected to score than the whole."""
    covered = (int(tiles.width) * int(tiles.height)) / (int(image.width) * int(image.height))
    return SAMPLE_BIAS * max(0.0, 1 - covered)


def encode(
    image: pyvips.Image,
    preset: Preset,
    setting_name: str,
    target: float,
    save: Callable[[pyvips.Image, Preset], bytes],
    heavy: bool = False,
    rivals: Rivals | None = None,
    rivals_wait: float = 0.0,
) -> tuple[bytes, Receipt]:
    """The full-size encode of `image` with the fewest bytes that scores `target`, by driving
    the preset's `setting_name` (e.g. "webp_quality"). `heavy`: its full-size encode needs so
    much memory (AVIF) that no score may run beside it. `rivals`: the other formats' sample
    bytes, waited for up to `rivals_wait` s; NotAWinner when this format cannot win by the
    preset's margin (no full encode)."""
    fixed = int(getattr(preset, setting_name))
    fmt = setting_name.removesuffix("_quality")
    at_75, slope = PRIOR.get(fmt, DEFAULT_PRIOR)
    start = round(at_75 + (target - 75) / slope)
    tiles = sample(image)
    reference = quality.shared(tiles)
    bias = sample_bias(image, tiles)
    trials: dict[int, quality.Trial] = {}

    def at(setting: int) -> Preset:
        return preset.with_changes(**{setting_name: setting})

    def trial(setting: int) -> quality.Trial:
        if setting not in trials:
            data = save(tiles, at(setting))
            trials[setting] = quality.Trial(setting, reference.score_bytes(data), len(data))
            if rivals is not None and not fulls and trials[setting].score < goal:
                # the setting found is higher, its sample no smaller: lost already?
                reason = rivals.hopeless(fmt, len(data))
                if reason is not None:
                    raise NotAWinner(reason)
        return trials[setting]

    goal = target + bias
    fulls: list[tuple[bytes, float, int]] = []  # data, estimated whole score, setting
    for _round in range(2):
        found = quality.search(trial, goal, start, slope, max_trials=quality.MAX_TRIALS)
        if rivals is not None and not fulls:
            reason = rivals.verdict(fmt, trials[found.setting].size, rivals_wait)
            if reason is not None:
                raise NotAWinner(reason)
        if any(setting == found.setting for _, _, setting in fulls):
            break
        with quality.exclusive() if heavy else contextlib.nullcontext():
            data = save(image, at(found.setting))
        if fmt in EXACT_SAMPLE:
            fulls.append((data, found.score - bias, found.setting))
            break
        with quality.exclusive():  # the whole decoded image, then its score
            decoded = quality.decode(data)
            served = reference.score(sample(decoded)) - bias
            del decoded
        fulls.append((data, served, found.setting))
        if target - BELOW <= served <= target + ABOVE:
            break
        # the trials' measured offset from what was served
        goal = target + (trials[found.setting].score - served)
        start = found.setting
    meeting = [full for full in fulls if full[1] >= target - BELOW]
    data, served, setting = (
        min(meeting, key=lambda full: len(full[0])) if meeting else max(fulls, key=_score)
    )
    fixed_size = len(save(tiles, at(fixed))) if fixed not in trials else trials[fixed].size
    saved = 1 - trials[setting].size / fixed_size if fixed_size else 0.0
    receipt = Receipt(
        quality.METRIC, round(served, 1), setting, len(trials) + len(fulls), round(saved, 3)
    )
    return data, receipt


def _score(full: tuple[bytes, float, int]) -> float:
    return full[1]
