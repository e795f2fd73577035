"""ThumbHash (Evan Wallace's image placeholder format): encode a small RGBA image to ~25 bytes,
and render such a hash back to a ~32 px image. Pure Python, no dependencies.

The format, as the reference implementation (github.com/evanw/thumbhash) defines it: the image
is composited over its own average colour and split into luminance L, yellow-blue P, red-green Q
and (if not opaque) alpha A; each channel's lowest DCT coefficients are kept, quantised to 4 bits
and scaled by the channel's largest coefficient. Bytes 0-2 hold the DC terms, the luminance
scale and the alpha flag; bytes 3-4 the L component count of the shorter side, the P and Q
scales and the landscape flag (together they give the aspect ratio); byte 5 the alpha DC and
scale when there is alpha; then two AC coefficients per byte, low nibble first.

The PyPI `thumbhash-python` pins Pillow < 11, so it cannot be a dependency here. This encoder is
checked against the reference decoder (the npm `thumbhash` package, run with node) in
tests/imaging/test_placeholder.py. Sums are separable (rows first), so a 32x32 image costs a few
milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

MAX_SIDE: Final = 100  # the format's limit on the encoded image


def _round(value: float) -> int:
    """JavaScript's Math.round (halves go up), which the format's quantisation uses."""
    return math.floor(value + 0.5)


def _cosines(count: int, size: int) -> list[list[float]]:
    """cos(pi / size * k * (i + 0.5)) for k < count, i < size: the DCT basis along one axis."""
    return [[math.cos(math.pi / size * k * (i + 0.5)) for i in range(size)] for k in range(count)]


def _components(nx: int, ny: int) -> list[tuple[int, int]]:
    """The (cx, cy) pairs a channel keeps, in the format's order: a triangle of low frequencies."""
    return [(cx, cy) for cy in range(ny) for cx in range(nx) if cx * ny < nx * (ny - cy)]


def _encode_channel(
    channel: Sequence[float], w: int, h: int, nx: int, ny: int
) -> tuple[float, list[float], float]:
    """DC term, AC terms normalised to 0..1, and the AC scale of one channel."""
    fx, fy = _cosines(nx, w), _cosines(ny, h)
    rows = [channel[y * w : (y + 1) * w] for y in range(h)]
    # row_dot[cx][y] = sum over x of channel[x, y] * fx[cx][x]
    row_dot = [
        [sum(v * c for v, c in zip(row, fx[cx], strict=True)) for row in rows] for cx in range(nx)
    ]
    dc, ac, scale = 0.0, [], 0.0
    for cx, cy in _components(nx, ny):
        f = sum(d * c for d, c in zip(row_dot[cx], fy[cy], strict=True)) / (w * h)
        if cx or cy:
            ac.append(f)
            scale = max(scale, abs(f))
        else:
            dc = f
    if scale:
        ac = [0.5 + 0.5 / scale * f for f in ac]
    return dc, ac, scale


def encode(w: int, h: int, rgba: bytes) -> bytes:
    """The ThumbHash of a w x h image given as RGBA bytes (not premultiplied), w, h <= 100."""
    if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE):
        raise ValueError(f"a ThumbHash is made from at most {MAX_SIDE}x{MAX_SIDE} px, not {w}x{h}")
    if len(rgba) != w * h * 4:
        raise ValueError("rgba must hold w * h * 4 bytes")
    n = w * h
    alphas = [rgba[i + 3] / 255 for i in range(0, 4 * n, 4)]
    total = sum(alphas)
    average = [0.0, 0.0, 0.0]
    if total:
        for band in range(3):
            weighted = sum(a * rgba[4 * i + band] for i, a in enumerate(alphas))
            average[band] = weighted / 255 / total
    has_alpha = total < n
    limit = 5 if has_alpha else 7
    lx = max(1, _round(limit * w / max(w, h)))
    ly = max(1, _round(limit * h / max(w, h)))

    # composite over the average colour, then L, P, Q
    l_, p_, q_ = [0.0] * n, [0.0] * n, [0.0] * n
    for i, a in enumerate(alphas):
        r, g, b = (average[k] * (1 - a) + a / 255 * rgba[4 * i + k] for k in range(3))
        l_[i] = (r + g + b) / 3
        p_[i] = (r + g) / 2 - b
        q_[i] = r - g

    l_dc, l_ac, l_scale = _encode_channel(l_, w, h, max(3, lx), max(3, ly))
    p_dc, p_ac, p_scale = _encode_channel(p_, w, h, 3, 3)
    q_dc, q_ac, q_scale = _encode_channel(q_, w, h, 3, 3)
    landscape = w > h
    header24 = (
        _round(63 * l_dc)
        | _round(31.5 + 31.5 * p_dc) << 6
        | _round(31.5 + 31.5 * q_dc) << 12
        | _round(31 * l_scale) << 18
        | int(has_alpha) << 23
    )
    header16 = (
        (ly if landscape else lx)
        | _round(63 * p_scale) << 3
        | _round(63 * q_scale) << 9
        | int(landscape) << 15
    )
    out = [header24 & 255, header24 >> 8 & 255, header24 >> 16, header16 & 255, header16 >> 8]
    terms = [l_ac, p_ac, q_ac]
    if has_alpha:
        a_dc, a_ac, a_scale = _encode_channel(alphas, w, h, 5, 5)
        out.append(_round(15 * a_dc) | _round(15 * a_scale) << 4)
        terms.append(a_ac)
    nibbles = [_round(15 * f) for ac in terms for f in ac]
    if len(nibbles) % 2:
        nibbles.append(0)
    out += [low | high << 4 for low, high in zip(nibbles[::2], nibbles[1::2], strict=True)]
    return bytes(out)


# -- reading a hash ---------------------------------------------------------------------------


def _header(hash_: bytes) -> tuple[int, int, bool, bool]:
    if len(hash_) < 5:
        raise ValueError("a ThumbHash has at least 5 bytes")
    header24 = hash_[0] | hash_[1] << 8 | hash_[2] << 16
    header16 = hash_[3] | hash_[4] << 8
    return header24, header16, bool(header24 >> 23), bool(header16 >> 15)


def aspect_ratio(hash_: bytes) -> float:
    """Width / height, approximately, as the hash records it."""
    _, header16, has_alpha, landscape = _header(hash_)
    lx = (5 if has_alpha else 7) if landscape else header16 & 7
    ly = header16 & 7 if landscape else (5 if has_alpha else 7)
    return lx / ly


def render(hash_: bytes) -> tuple[int, int, bytes]:
    """The placeholder image a hash stands for: width, height (32 px on the long side) and
    RGBA bytes (not premultiplied)."""
    header24, header16, has_alpha, landscape = _header(hash_)
    l_dc = (header24 & 63) / 63
    p_dc = (header24 >> 6 & 63) / 31.5 - 1
    q_dc = (header24 >> 12 & 63) / 31.5 - 1
    l_scale = (header24 >> 18 & 31) / 31
    p_scale = (header16 >> 3 & 63) / 63
    q_scale = (header16 >> 9 & 63) / 63
    lx = max(3, (5 if has_alpha else 7) if landscape else header16 & 7)
    ly = max(3, header16 & 7 if landscape else (5 if has_alpha else 7))
    start = 6 if has_alpha else 5
    if has_alpha and len(hash_) < 6:
        raise ValueError("a ThumbHash with alpha has at least 6 bytes")
    a_dc = (hash_[5] & 15) / 15 if has_alpha else 1.0
    a_scale = (hash_[5] >> 4) / 15 if has_alpha else 0.0

    position = 0

    def read(nx: int, ny: int, scale: float) -> list[tuple[int, int, float]]:
        nonlocal position
        terms = []
        for cx, cy in _components(nx, ny):
            if not (cx or cy):
                continue
            index = start + (position >> 1)
            nibble = hash_[index] >> ((position & 1) * 4) & 15 if index < len(hash_) else 0
            position += 1
            terms.append((cx, cy, (nibble / 7.5 - 1) * scale))
        return terms

    l_ac = read(lx, ly, l_scale)
    p_ac = read(3, 3, p_scale * 1.25)  # the format boosts saturation to make up for quantising
    q_ac = read(3, 3, q_scale * 1.25)
    a_ac = read(5, 5, a_scale) if has_alpha else []

    ratio = aspect_ratio(hash_)
    w = _round(32 if ratio > 1 else 32 * ratio)
    h = _round(32 / ratio if ratio > 1 else 32)
    fx, fy = _cosines(max(lx, 5), w), _cosines(max(ly, 5), h)
    out = bytearray(w * h * 4)

    def value(dc: float, terms: list[tuple[int, int, float]], x: int, y: int) -> float:
        return dc + sum(f * fx[cx][x] * fy[cy][y] * 2 for cx, cy, f in terms)

    for y in range(h):
        for x in range(w):
            lum = value(l_dc, l_ac, x, y)
            p = value(p_dc, p_ac, x, y)
            q = value(q_dc, q_ac, x, y)
            b = lum - 2 / 3 * p
            r = (3 * lum - b + q) / 2
            g = r - q
            a = value(a_dc, a_ac, x, y) if has_alpha else 1.0
            i = 4 * (y * w + x)
            out[i : i + 4] = bytes(int(max(0.0, min(1.0, c)) * 255) for c in (r, g, b, a))
    return w, h, bytes(out)
