"""Colour described by CICP codes (an AVIF's or HEIC's `nclx` box) mapped to 8-bit sRGB.

An ICC profile is handled by libvips (lcms) like in every other format. A file without one may
instead name its primaries and transfer function by number (ITU-T H.273): phones and HDR
exports write Display P3 (primaries 12) or BT.2020 (9) with the sRGB (13), PQ (16) or HLG (18)
transfer. libvips reads such pixels as if they were sRGB: wide-gamut colours come out dull,
and PQ-coded HDR comes out dark and flat. So, when the description is not already sRGB:

    1. code values -> linear light, one lookup table per file (the transfer's EOTF; PQ and HLG
       in nits over the BT.2408 reference white of 203 nits, so SDR white is 1.0);
    2. HDR only: highlights above 0.8 rolled off smoothly (extended Reinhard on the largest
       channel, hue kept) so the content's peak (its MaxCLL, else 1000 nits) lands on white;
    3. linear RGB in the file's primaries -> linear sRGB, one 3x3 matrix computed from the
       primaries' chromaticities (Bradford-adapted when the white point is not D65);
    4. libvips' scRGB -> sRGB: the sRGB curve, 8 bits, out-of-gamut values clipped.

Every step is a libvips operation on the shrunk image, evaluated in the one decode pass.
Measured on `10bit-HDR-P3-nclx.avif` (P3, PQ, MaxCLL 712 nits), against colour-science's
reference conversion: see tests/imaging/test_colour.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import pyvips

Matrix = tuple[tuple[float, ...], ...]
Xy = tuple[float, float]

# H.273 colour primaries with the BT.709 / sRGB chromaticities (1) or unspecified (2).
SRGB_PRIMARIES: Final = frozenset({1, 2})
# H.273 transfer characteristics that are sRGB or close enough to show as sRGB (BT.709/601/2020
# SDR curves differ from sRGB by < 1 % of a code value in the mid-tones).
SRGB_TRANSFERS: Final = frozenset({1, 2, 6, 13, 14, 15})
PQ: Final = 16
HLG: Final = 18

# ITU-R BT.2408: HDR reference ("graphics") white; SDR white maps here.
REFERENCE_WHITE_NITS: Final = 203.0
# When the file states no content peak: what most HDR content is mastered to.
DEFAULT_PEAK_NITS: Final = 1000.0
# Relative luminance above which HDR highlights are compressed.
KNEE: Final = 0.8

D65: Final[Xy] = (0.3127, 0.3290)
SRGB_PRIMARY_XY: Final[tuple[Xy, Xy, Xy]] = ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06))


@dataclass(frozen=True)
class Cicp:
    """A colour description by numbers (ITU-T H.273) and the chromaticities they stand for."""

    primaries: int
    transfer: int
    red: Xy
    green: Xy
    blue: Xy
    white: Xy
    # The content's brightest pixel in nits (HDR metadata), if the file says.
    peak_nits: float | None = None

    @property
    def is_srgb(self) -> bool:
        return self.primaries in SRGB_PRIMARIES and self.transfer in SRGB_TRANSFERS

    @property
    def is_hdr(self) -> bool:
        return self.transfer in (PQ, HLG)

    @classmethod
    def from_nclx(cls, nclx: Mapping[str, object], peak_nits: float | None = None) -> Cicp:
        """From libheif's nclx description (pillow-heif's `info["nclx_profile"]`)."""

        def xy(name: str) -> Xy:
            x, y = nclx[f"color_primary_{name}_x"], nclx[f"color_primary_{name}_y"]
            assert isinstance(x, float | int) and isinstance(y, float | int)
            return float(x), float(y)

        primaries, transfer = nclx["color_primaries"], nclx["transfer_characteristics"]
        assert isinstance(primaries, int) and isinstance(transfer, int)
        return cls(
            primaries=primaries,
            transfer=transfer,
            red=xy("red"),
            green=xy("green"),
            blue=xy("blue"),
            white=xy("white"),
            peak_nits=peak_nits,
        )


def to_srgb8(image: pyvips.Image, cicp: Cicp) -> pyvips.Image:
    """`image` (1 or 3 colour bands, 8- or 16-bit, alpha last), whose pixels are coded as
    `cicp` says, as 8-bit sRGB (or grey) with the alpha kept."""
    if image.format not in ("uchar", "ushort"):
        image = image.cast("ushort")
    colour_bands = 3 if image.bands >= 3 else 1
    alpha = image[colour_bands:] if image.bands > colour_bands else None
    colour = image[0:colour_bands]
    linear = colour.maplut(_eotf_table(cicp, image.format))
    if cicp.transfer == HLG:
        linear = _hlg_ootf(linear, cicp)
    if cicp.is_hdr:
        peak = (cicp.peak_nits or DEFAULT_PEAK_NITS) / REFERENCE_WHITE_NITS
        linear = roll_off(linear, peak)
    if colour_bands == 3:
        linear = linear.recomb([list(row) for row in to_srgb_matrix(cicp)])
    else:
        linear = linear.bandjoin([linear, linear])
    srgb = linear.copy(interpretation="scrgb").colourspace("srgb")
    if colour_bands == 1:
        srgb = srgb[0].copy(interpretation="b-w")
    if alpha is not None:
        srgb = srgb.bandjoin((alpha / (257 if image.format == "ushort" else 1)).cast("uchar"))
    return srgb


# -- 1. transfer functions --------------------------------------------------------------------


def eotf(code: float, transfer: int) -> float:
    """Linear light (1.0 = SDR white) for a code value 0..1 of an H.273 transfer function.
    Unknown codes are read as sRGB."""
    if transfer == PQ:
        return _pq_nits(code) / REFERENCE_WHITE_NITS
    if transfer == HLG:  # scene light 0..1; the display's OOTF is applied per pixel
        return _hlg_scene(code)
    if transfer == 8:
        return code
    if transfer == 4:
        return float(code**2.2)
    if transfer == 5:
        return float(code**2.8)
    if transfer in (1, 6, 14, 15):  # BT.709's OETF, inverted
        return code / 4.5 if code < 0.081 else float(((code + 0.099) / 1.099) ** (1 / 0.45))
    return code / 12.92 if code <= 0.04045 else float(((code + 0.055) / 1.055) ** 2.4)


def _pq_nits(code: float) -> float:
    """SMPTE ST 2084 (PQ) EOTF: code value 0..1 -> nits."""
    m1, m2 = 2610 / 16384, 2523 / 4096 * 128
    c1, c2, c3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    p = float(code ** (1 / m2))
    return 10000.0 * float((max(p - c1, 0.0) / (c2 - c3 * p)) ** (1 / m1))


def _hlg_scene(code: float) -> float:
    """ARIB STD-B67 / BT.2100 HLG inverse OETF: code value 0..1 -> scene light 0..1."""
    a = 0.17883277
    b = 1 - 4 * a
    c = 0.5 - a * math.log(4 * a)
    return code * code / 3 if code <= 0.5 else (math.exp((code - c) / a) + b) / 12


def _eotf_table(cicp: Cicp, sample_format: str) -> pyvips.Image:
    """A lookup table (1 x 256 or 1 x 65536, float) from code values to linear light."""
    size = 65536 if sample_format == "ushort" else 256
    values = [eotf(i / (size - 1), cicp.transfer) for i in range(size)]
    return pyvips.Image.new_from_list([values]).cast("float")


def _hlg_ootf(scene: pyvips.Image, cicp: Cicp) -> pyvips.Image:
    """BT.2100 HLG OOTF for a 1000-nit display (system gamma 1.2), in units of SDR white."""
    gamma = 1.2
    luminance = scene.recomb([list(_rgb_to_xyz(cicp)[1])]) if scene.bands == 3 else scene
    gain = (luminance ** (gamma - 1)) * (DEFAULT_PEAK_NITS / REFERENCE_WHITE_NITS)
    return scene * gain


# -- 2. HDR highlights ------------------------------------------------------------------------


def roll_off_value(m: float, peak: float) -> float:
    """The tone curve on the largest channel: identity up to KNEE, then an extended-Reinhard
    shoulder that meets white (1.0) at `peak` with a continuous slope."""
    if peak <= 1.0 or m <= KNEE:
        return m
    x, top = (m - KNEE) / (1 - KNEE), (peak - KNEE) / (1 - KNEE)
    return KNEE + (1 - KNEE) * x * (1 + x / (top * top)) / (1 + x)


def roll_off(linear: pyvips.Image, peak: float) -> pyvips.Image:
    """Scale each pixel so that its largest channel follows `roll_off_value` (hue kept)."""
    if peak <= 1.0:
        return linear
    bands = linear.bandsplit()
    largest = bands[0] if len(bands) == 1 else bands[0].bandrank(bands[1:], index=len(bands) - 1)
    top = (peak - KNEE) / (1 - KNEE)
    x = (largest - KNEE) / (1 - KNEE)
    mapped = x * (x / (top * top) + 1) / (x + 1) * (1 - KNEE) + KNEE
    scale = (largest > KNEE).ifthenelse(mapped / largest, 1.0)
    return linear * scale


# -- 3. primaries -----------------------------------------------------------------------------


def _xyz(xy: Xy) -> tuple[float, float, float]:
    x, y = xy
    return x / y, 1.0, (1 - x - y) / y


def _mul(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> Matrix:
    return tuple(
        tuple(sum((a[i][k] * b[k][j] for k in range(3)), 0.0) for j in range(3)) for i in range(3)
    )


def _inverse(m: Sequence[Sequence[float]]) -> Matrix:
    (a, b, c), (d, e, f), (g, h, i) = m
    det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)
    return (
        ((e * i - f * h) / det, (c * h - b * i) / det, (b * f - c * e) / det),
        ((f * g - d * i) / det, (a * i - c * g) / det, (c * d - a * f) / det),
        ((d * h - e * g) / det, (b * g - a * h) / det, (a * e - b * d) / det),
    )


def _rgb_to_xyz_of(primaries: Sequence[Xy], white: Xy) -> Matrix:
    """The RGB -> XYZ matrix of a colour space (SMPTE RP 177), white's Y = 1."""
    columns = _inverse(tuple(zip(*(_xyz(p) for p in primaries), strict=True)))
    xw, yw, zw = _xyz(white)
    scale = [sum(columns[i][k] * v for k, v in enumerate((xw, yw, zw))) for i in range(3)]
    rows = tuple(zip(*(_xyz(p) for p in primaries), strict=True))
    return tuple(tuple(rows[i][j] * scale[j] for j in range(3)) for i in range(3))


def _rgb_to_xyz(cicp: Cicp) -> Matrix:
    return _rgb_to_xyz_of((cicp.red, cicp.green, cicp.blue), cicp.white)


_BRADFORD: Final[Matrix] = (
    (0.8951, 0.2664, -0.1614),
    (-0.7502, 1.7135, 0.0367),
    (0.0389, -0.0685, 1.0296),
)


def _adapt_to_d65(white: Xy) -> Matrix:
    """Bradford chromatic adaptation from `white` to D65 (identity when it is D65)."""
    source = [sum(r * v for r, v in zip(row, _xyz(white), strict=True)) for row in _BRADFORD]
    target = [sum(r * v for r, v in zip(row, _xyz(D65), strict=True)) for row in _BRADFORD]
    gains = [[target[i] / source[i] if i == j else 0.0 for j in range(3)] for i in range(3)]
    return _mul(_inverse(_BRADFORD), _mul(gains, _BRADFORD))


def to_srgb_matrix(cicp: Cicp) -> Matrix:
    """Linear RGB in the file's primaries -> linear sRGB."""
    xyz = _mul(_adapt_to_d65(cicp.white), _rgb_to_xyz(cicp))
    return _mul(_inverse(_rgb_to_xyz_of(SRGB_PRIMARY_XY, D65)), xyz)
