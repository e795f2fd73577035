"""Perceptual quality: the SSIMULACRA2 score of an encode, and the search for the lowest
encoder setting that meets a target.

SSIMULACRA2 (PyPI `ssimulacra2`, pinned; numpy + scipy): 100 = identical, ~90 visually
lossless, ~70 "high quality" web, ~50 medium. Chosen over butteraugli and DSSIM because it is
the metric the issue's figures and the JPEG XL project tune against, and the only one of the
three with a maintained pure-wheel Python package (no native build). It is not cheap: the
package's float64 code takes ~0.13 CPU-s and ~0.1-0.2 GB for a 512² image, so the worker scores
samples (`targeted`), never a 12 MP image, and with `Reference` in float32, channels first:
~0.044 CPU-s a score (measured on book-beside-flowers.jpg's sample), within 0.04 of the
float64 score on the corpus (five photos, JPEG/WebP/AVIF at q40-90). One `Reference` per
sample is shared by the searches of every format (`shared`).

The search (`search`): start from a per-format setting that the study found typical for the
target, step by the study's points per setting unit, then interpolate between the highest
failing and the lowest passing setting (regula falsi) until they are `STEP` apart, a passing
trial is within `CLOSE` of the target, or `MAX_TRIALS` trials are scored. The lowest passing
setting wins; when none passes, the highest tried (its score says it fell short).

Imported by the worker's imaging only (numpy and scipy stay out of the gateway and the client).
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyvips
from ssimulacra2 import ssimulacra2 as reference_impl

METRIC: Final = "ssimulacra2"
# Side of a centre crop (bench/quality_study.py compares it with the pipeline's sample).
CROP: Final = 512
# At most this many crops are encoded and scored per format and width.
MAX_TRIALS: Final = 4
# Stop when the lowest passing and highest failing settings are this close,
STEP: Final = 2
# or when a passing trial scores at most this many points above the target: a setting closer
# to the target would save ~1-2 % of the format's bytes for one more encode and score (on the
# corpus this stops 8 of 41 trials early; bench/quality.py).
CLOSE: Final = 1.0

Pixels = npt.NDArray[np.floating[Any]]

# One score at a time in the process, and none beside a full-size encode that holds this too
# (`exclusive`): a 512² score held ~60-90 MB of float64 arrays (measured: peak RSS of a 12 MP
# JPEG job +62 MB with a target; float32 halves it), and an AVIF encode ~18-27 MB per
# megapixel, on a 512 MB worker.
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


def _rgb8(image: pyvips.Image) -> npt.NDArray[np.uint8]:
    """sRGB samples as uint8 HxWx3; alpha composited onto mid grey (as the reference tool does
    with a 0.5 background)."""
    if image.hasalpha():
        image = image.flatten(background=[128] * (image.bands - 1))
    if image.bands < 3:
        image = image.colourspace("srgb")
    if image.format != "uchar":
        image = image.cast("uchar")
    rgb: npt.NDArray[np.uint8] = np.asarray(image.numpy(), dtype=np.uint8)[:, :, :3]
    return rgb


# The package's sRGB curve for every 8-bit sample, computed by its own function (float64).
_LINEAR: Final = reference_impl.srgb_to_linear(np.arange(256, dtype=np.float64))
# Its opsin absorbance constants as Python floats: a NumPy float64 scalar would promote float32
# arrays to float64 (NEP 50).
_MATRIX: Final = [float(v) for v in reference_impl.kOpsinAbsorbanceMatrix]
_BIAS: Final = float(reference_impl.kOpsinAbsorbanceBias[0])
_CBRT_BIAS: Final = float(np.cbrt(_BIAS))
_SIGMA: Final = 1.5
_C2: Final = float(reference_impl.kC2)


def _linear(rgb8: npt.NDArray[np.uint8], dtype: type[np.floating[Any]]) -> Pixels:
    linear: Pixels = _LINEAR.astype(dtype)[rgb8]
    return linear


def _xyb(linear: Pixels) -> Pixels:
    """`make_positive_xyb(linear_rgb_to_xyb(linear))` in `linear`'s precision (the package's
    are float64 only), channels first: 3xWxH. The package's planes are transposed too (its
    `linear.T`), which matters to the last digit: its blur's zero padding is along the width."""
    r, g, b = linear.T
    m = _MATRIX
    mixed = [
        np.cbrt(np.maximum(m[3 * row] * r + m[3 * row + 1] * g + m[3 * row + 2] * b + _BIAS, 0))
        - _CBRT_BIAS
        for row in range(3)
    ]
    x = 0.5 * (mixed[0] - mixed[1])
    y = 0.5 * (mixed[0] + mixed[1])
    xyb: Pixels = np.stack([x * 14.0 + 0.42, y + 0.01, (mixed[2] - y) + 0.55])
    return xyb


def _gaussian_taps() -> tuple[float, ...]:
    """The half (centre first) of the normalised kernel scipy's `gaussian_filter` builds for
    the package's sigma and `truncate=3.33`: radius `int(3.33 * 1.5 + 0.5)` = 5."""
    radius = int(3.33 * _SIGMA + 0.5)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (offsets / _SIGMA) ** 2)
    kernel /= kernel.sum()
    return tuple(float(tap) for tap in kernel[radius:])


_TAPS: Final = _gaussian_taps()


def _convolve(padded: Pixels, axis: int, length: int) -> Pixels:
    """`padded` (`len(_TAPS) - 1` extra samples each side along `axis`) convolved with the
    symmetric kernel: each pair of samples at the same distance is added, then weighted once."""
    radius = len(_TAPS) - 1

    def along(start: int) -> Pixels:
        index: list[slice] = [slice(None)] * padded.ndim
        index[axis] = slice(start, start + length)
        window: Pixels = padded[tuple(index)]
        return window

    out: Pixels = along(radius) * padded.dtype.type(_TAPS[0])
    pair = np.empty_like(out)
    for distance in range(1, radius + 1):
        np.add(along(radius - distance), along(radius + distance), out=pair)
        pair *= padded.dtype.type(_TAPS[distance])
        out += pair
    return out


def _blur(planes: Pixels) -> Pixels:
    """The package's `blur_image` on channel-first planes, in their precision: zero padding
    along the width (axis 1, what the package pads), the reflecting Gaussian of scipy's
    `gaussian_filter` along the height (axis 2). Written as shifted slices rather than
    `ndimage.gaussian_filter`, which filters float32 in float64 and was ~45 % of a score:
    3.3x faster on a 512² sample, within 4e-7 of it in float32 and 1e-15 in float64 (the
    package's score to 1e-9: tests/imaging/test_quality_target.py)."""
    radius = len(_TAPS) - 1
    planes_n, width, height = planes.shape
    # scipy's "reflect" (numpy's "symmetric": the edge sample repeated), by hand: np.pad was
    # ~6 % of a score.
    tall = np.empty((planes_n, width, height + 2 * radius), planes.dtype)
    tall[:, :, radius : radius + height] = planes
    tall[:, :, :radius] = planes[:, :, radius - 1 :: -1]
    tall[:, :, radius + height :] = planes[:, :, : height - radius - 1 : -1]
    along_height = _convolve(tall, 2, height)
    wide = np.zeros((planes_n, width + 2 * radius, height), planes.dtype)
    wide[:, radius : radius + width] = along_height
    return _convolve(wide, 1, width)


def _mean_and_4_norm(planes: Pixels) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per plane: the mean, and the 4th root of the mean 4th power (the package's pooling)."""
    squared = planes * planes
    mean = planes.mean((1, 2), dtype=np.float64)
    norm = (squared * squared).mean((1, 2), dtype=np.float64) ** 0.25
    return mean, norm


def _ssim_map(m1: Pixels, m2: Pixels, s11: Pixels, s22: Pixels, s12: Pixels) -> Pixels:
    """The package's `ssim_map` on channel-first planes."""
    averages = np.zeros(6)
    num_m = 1.0 - (m1 - m2) * (m1 - m2)
    num_s = 2.0 * (s12 - m1 * m2) + _C2
    denom_s = (s11 - m1 * m1) + (s22 - m2 * m2) + _C2
    d = np.maximum(1.0 - (num_m * num_s / denom_s), 0.0)
    averages[::2], averages[1::2] = _mean_and_4_norm(d)
    return averages


def _edge_diff_map(img1: Pixels, mu1: Pixels, img2: Pixels, mu2: Pixels) -> Pixels:
    """The package's `edge_diff_map` on channel-first planes: ringing (edges the source does
    not have), then blurring (edges it lost)."""
    averages = np.zeros(12)
    d1 = (1.0 + np.abs(img2 - mu2)) / (1.0 + np.abs(img1 - mu1)) - 1.0
    averages[::4], averages[1::4] = _mean_and_4_norm(np.maximum(d1, 0.0))
    averages[2::4], averages[3::4] = _mean_and_4_norm(np.maximum(-d1, 0.0))
    return averages


def _downsample(image: Pixels) -> Pixels:
    """The package's `downsample(image, 2, 2)`, vectorised: each output pixel the mean of its
    2x2 block, of the 1 or 2 pixels there are at an odd edge."""
    height, width, bands = image.shape
    tall, wide = -(-height // 2), -(-width // 2)
    padded = np.zeros((2 * tall, 2 * wide, bands), dtype=image.dtype)
    padded[:height, :width] = image
    counts = np.zeros((2 * tall, 2 * wide, 1), dtype=image.dtype)
    counts[:height, :width] = 1
    sums = padded.reshape(tall, 2, wide, 2, bands).sum(axis=(1, 3))
    small: Pixels = sums / counts.reshape(tall, 2, wide, 2, 1).sum(axis=(1, 3))
    return small


@dataclass
class _Scale:
    image: Pixels  # positive XYB
    mu: Pixels
    sigma_sq: Pixels


class Reference:
    """The source side of SSIMULACRA2, computed once and scored against many trials.

    The steps of `ssimulacra2.compute_ssimulacra2` in its order, with its `ssim_map`,
    `edge_diff_map` and score weights; the colour conversion, blur and downsample are redone
    here so they keep `dtype`: float64 gives the package's score to the last digit, float32
    (what the worker uses) the same within 0.01 on the corpus at about half the CPU
    (bench/quality_study.py, tests/imaging/test_quality_target.py). The reference's blurs are
    not redone for every trial (~40 % of a score)."""

    def __init__(self, image: pyvips.Image, dtype: type[np.floating[Any]] = np.float64) -> None:
        self.dtype = dtype
        with _SCORING:
            self._prepare(image)

    def _prepare(self, image: pyvips.Image) -> None:
        self.width = int(image.width)
        self.height = int(image.height)
        self._scales: list[_Scale] = []
        linear = _linear(_rgb8(image), self.dtype)
        for scale in range(reference_impl.kNumScales):
            if linear.shape[0] < 8 or linear.shape[1] < 8:
                break
            if scale:
                linear = _downsample(linear)
                if linear.shape[0] < 8 or linear.shape[1] < 8:
                    break
            xyb = _xyb(linear)
            self._scales.append(_Scale(xyb, _blur(xyb), _blur(xyb * xyb)))

    def score(self, distorted: pyvips.Image) -> float:
        """SSIMULACRA2 of `distorted` (decoded, the reference's size) against the reference."""
        if (int(distorted.width), int(distorted.height)) != (self.width, self.height):
            raise ValueError("the distorted image is not the reference's size")
        with _SCORING:
            return self._score(distorted)

    def _score(self, distorted: pyvips.Image) -> float:
        result = reference_impl.Msssim()
        linear = _linear(_rgb8(distorted), self.dtype)
        for index, ref in enumerate(self._scales):
            if index:
                linear = _downsample(linear)
            xyb = _xyb(linear)
            mu = _blur(xyb)
            scale = reference_impl.MsssimScale()
            scale.avg_ssim = _ssim_map(
                ref.mu, mu, ref.sigma_sq, _blur(xyb * xyb), _blur(ref.image * xyb)
            )
            scale.avg_edgediff = _edge_diff_map(ref.image, ref.mu, xyb, mu)
            result.scales.append(scale)
        return float(result.score())

    def score_bytes(self, data: bytes) -> float:
        """The score of an encoded file (an output format) of the reference's size."""
        return self.score(decode(data))


# References shared by the searches of one image's formats (and `reuse`): the same sample of
# the same pixels is prepared once, not once per format. Keyed by a digest of the pixels; at
# most `_SHARED_MAX` kept (~13 MB each for a 512² float32 sample); `forget` empties it at the
# end of a conversion, so no pixels of a job outlive it.
_SHARED: dict[bytes, Reference] = {}
_SHARED_MAX: Final = 2


def shared(image: pyvips.Image) -> Reference:
    """The float32 `Reference` of `image` (a small sample), prepared once per job."""
    pixels = image.write_to_memory()
    digest = hashlib.blake2b(pixels, digest_size=16)
    digest.update(f"{image.width}x{image.height}x{image.bands}{image.format}".encode())
    key = digest.digest()
    with _SCORING:
        found = _SHARED.pop(key, None) or Reference(image, np.float32)
        while len(_SHARED) >= _SHARED_MAX:
            del _SHARED[next(iter(_SHARED))]  # the least recently used
        _SHARED[key] = found
        return found


def forget() -> None:
    """Drop the shared references (the end of a conversion)."""
    with _SCORING:
        _SHARED.clear()


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
        if passing == setting and result.score - target <= CLOSE:
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
