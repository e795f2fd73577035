"""Perceptual quality: the SSIMULACRA2 score of an encode, and the search for the lowest
encoder setting that meets a target.

SSIMULACRA2 (PyPI `ssimulacra2`, pinned; numpy + scipy): 100 = identical, ~90 visually
lossless, ~70 "high quality" web, ~50 medium. Chosen over butteraugli and DSSIM because it is
the metric the issue's figures and the JPEG XL project tune against, and the only one of the
three with a maintained pure-wheel Python package (no native build). It is not cheap: ~0.1 CPU-s
and ~0.1-0.2 GB for a 512² image, so the worker scores samples (`targeted`), never a 12 MP image.

The search (`search`): start from a per-format setting that the study found typical for the
target, step by the study's points per setting unit, then interpolate between the highest
failing and the lowest passing setting (regula falsi) until they are `STEP` apart or
`MAX_TRIALS` trials are scored. The lowest passing setting wins; when none passes, the highest
tried (its score says it fell short).

Imported by the worker's imaging only (numpy and scipy stay out of the gateway and the client).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pyvips
from ssimulacra2 import ssimulacra2 as reference_impl

METRIC: Final = "ssimulacra2"
# Side of a centre crop (bench/quality_study.py compares it with the pipeline's sample).
CROP: Final = 512
# At most this many crops are encoded and scored per format and width.
MAX_TRIALS: Final = 4
# Stop when the lowest passing and highest failing settings are this close.
STEP: Final = 2

Pixels = npt.NDArray[np.float64]

# One score at a time in the process, and none beside a full-size encode that holds this too
# (`exclusive`): a 512² score holds ~60-90 MB of float64 arrays (measured: peak RSS of a 12 MP
# JPEG job +62 MB with a target), and an AVIF encode ~18-27 MB per megapixel, on a 512 MB worker.
# Measured on book-beside-flowers.jpg: without it the targeted job peaked at 595 MB.
_SCORING = threading.RLock()


def exclusive() -> threading.RLock:
    """The lock a memory-heavy step holds so that no score runs beside it."""
    return _SCORING


def centre_crop(image: pyvips.Image, side: int = CROP) -> pyvips.Image:
    """The centre `side`² of `image` (its whole width or height when smaller), in memory.
    Offsets are multiples of 16 so JPEG blocks and chroma subsampling line up with the full
    image's."""
    width, height = min(side, int(image.width)), min(side, int(image.height))
    left = (int(image.width) - width) // 2 // 16 * 16
    top = (int(image.height) - height) // 2 // 16 * 16
    return image.crop(left, top, width, height).copy_memory()


def _rgb(image: pyvips.Image) -> Pixels:
    """sRGB samples 0..255 as float64 HxWx3; alpha composited onto mid grey (as the reference
    tool does with a 0.5 background)."""
    if image.hasalpha():
        image = image.flatten(background=[128] * (image.bands - 1))
    if image.bands < 3:
        image = image.colourspace("srgb")
    if image.format != "uchar":
        image = image.cast("uchar")
    array = np.asarray(image.numpy(), dtype=np.float64)
    rgb: Pixels = array[:, :, :3]
    return rgb


def _xyb(linear: Pixels) -> Pixels:
    xyb: Pixels = reference_impl.make_positive_xyb(reference_impl.linear_rgb_to_xyb(linear))
    return xyb


@dataclass
class _Scale:
    image: Pixels  # positive XYB
    mu: Pixels
    sigma_sq: Pixels


class Reference:
    """The source side of SSIMULACRA2, computed once and scored against many trials.

    The same steps as `ssimulacra2.compute_ssimulacra2` (its own functions, in its order),
    split so a search does not redo the reference's blurs for every trial (~40 % of a score)."""

    def __init__(self, image: pyvips.Image) -> None:
        with _SCORING:
            self._prepare(image)

    def _prepare(self, image: pyvips.Image) -> None:
        self.width = int(image.width)
        self.height = int(image.height)
        self._scales: list[_Scale] = []
        linear = reference_impl.srgb_to_linear(_rgb(image))
        for scale in range(reference_impl.kNumScales):
            if linear.shape[0] < 8 or linear.shape[1] < 8:
                break
            if scale:
                linear = reference_impl.downsample(linear, 2, 2)
                if linear.shape[0] < 8 or linear.shape[1] < 8:
                    break
            xyb = _xyb(linear)
            blur = reference_impl.blur_image
            self._scales.append(_Scale(xyb, blur(xyb), blur(xyb * xyb)))

    def score(self, distorted: pyvips.Image) -> float:
        """SSIMULACRA2 of `distorted` (decoded, the reference's size) against the reference."""
        if (int(distorted.width), int(distorted.height)) != (self.width, self.height):
            raise ValueError("the distorted image is not the reference's size")
        with _SCORING:
            return self._score(distorted)

    def _score(self, distorted: pyvips.Image) -> float:
        blur = reference_impl.blur_image
        result = reference_impl.Msssim()
        linear = reference_impl.srgb_to_linear(_rgb(distorted))
        for index, ref in enumerate(self._scales):
            if index:
                linear = reference_impl.downsample(linear, 2, 2)
            xyb = _xyb(linear)
            mu = blur(xyb)
            scale = reference_impl.MsssimScale()
            scale.avg_ssim = reference_impl.ssim_map(
                ref.mu, mu, ref.sigma_sq, blur(xyb * xyb), blur(ref.image * xyb)
            )
            scale.avg_edgediff = reference_impl.edge_diff_map(ref.image, ref.mu, xyb, mu)
            result.scales.append(scale)
        return float(result.score())

    def score_bytes(self, data: bytes) -> float:
        """The score of an encoded file (an output format) of the reference's size."""
        return self.score(decode(data))


# A JPEG XL codestream, and the ISO BMFF container's signature box.
_JXL_SIGNATURES: Final = (b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")


def decode(data: bytes) -> pyvips.Image:
    """An encoded variant as pixels: libvips reads every output format but JPEG XL
    (pyvips-binary has no jxlload), which is read back with the library that wrote it."""
    if not data.startswith(_JXL_SIGNATURES):
        return pyvips.Image.new_from_buffer(data, "")
    import imagecodecs  # loaded on first use, as the JPEG XL encoder loads it

    pixels = imagecodecs.jpegxl_decode(data)  # uint8, as the encoder wrote it
    height, width = pixels.shape[:2]
    bands = 1 if pixels.ndim == 2 else int(pixels.shape[2])
    # libvips reads the array's own buffer (it keeps a reference): no second copy of a 24 MP
    # image's 72 MB beside the first (tests/hostile/test_memory_cap.py, JPEG XL at 24 MP).
    image: pyvips.Image = pyvips.Image.new_from_memory(
        pixels.data, int(width), int(height), bands, "uchar"
    )
    return image


@dataclass(frozen=True)
class Trial:
    setting: int
    score: float
    size: int  # bytes of the encoded crop


@dataclass(frozen=True)
class Found:
    setting: int
    score: float  # of the crop at `setting`
    trials: tuple[Trial, ...]


def search(
    trial: Callable[[int], Trial],
    target: float,
    start: int,
    slope: float,
    low: int = 1,
    high: int = 100,
    max_trials: int = MAX_TRIALS,
) -> Found:
    """The lowest setting in low..high whose trial scores at least `target`, assuming the
    score grows with the setting. `slope`: expected score points per setting unit."""
    tried: dict[int, Trial] = {}
    failing, passing = low - 1, high + 1  # highest failing, lowest passing setting
    setting = min(max(start, low), high)
    while len(tried) < max_trials:
        result = tried[setting] = trial(setting)
        if result.score >= target:
            passing = min(passing, setting)
        else:
            failing = max(failing, setting)
        if passing - failing <= STEP or (passing == low) or (failing == high):
            break
        setting = _next(tried, target, slope, failing, passing, low, high)
        if setting in tried:
            break
    chosen = tried[passing] if passing in tried else max(tried.values(), key=_by_setting)
    return Found(chosen.setting, chosen.score, tuple(tried.values()))


def _by_setting(trial: Trial) -> int:
    return trial.setting


def _next(
    tried: dict[int, Trial],
    target: float,
    slope: float,
    failing: int,
    passing: int,
    low: int,
    high: int,
) -> int:
    """The next setting to try, strictly between the failing and passing bounds: interpolated
    between them once both are tried (regula falsi), else a step from the trial nearest the
    target by the study's slope; rounded up (a miss below costs another trial); kept next to
    a bound it would step past."""
    lower = max(failing, low - 1)
    upper = min(passing, high + 1)
    if failing in tried and passing in tried:
        below, above = tried[failing], tried[passing]
        rise = (above.score - below.score) / (above.setting - below.setting)
        slope = rise if rise > 0.05 else slope
        guess = math.ceil(below.setting + (target - below.score) / slope)
    else:
        nearest = min(tried.values(), key=lambda t: abs(t.score - target))
        guess = math.ceil(nearest.setting + (target - nearest.score) / slope)
    guess = min(max(guess, lower + 1), upper - 1)  # a step past a bound stops next to it
    return min(max(guess, low), high)
