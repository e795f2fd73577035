"""Hostile and malformed image inputs, generated as bytes (nothing stored in the repository).

Each `HostileCase` has a name, the bytes, a file name an attacker might give it, and what
uplodr must answer: an error class from `uplodr.errors`, or "ok" (a legitimate image that must
convert). Used by tests/imaging and by end-to-end tests:

    from tests.hostile_corpus import CASES
    for case in CASES: ...

`bomb=True` marks inputs whose danger is memory: tests run them in a subprocess and check the
peak RSS stays small.
"""

from __future__ import annotations

import functools
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from uplodr.errors import CorruptImage, LimitExceeded, UnsupportedImage, UplodrError

Expected = type[UplodrError] | Literal["ok"]


@dataclass(frozen=True)
class HostileCase:
    name: str
    make: Callable[[], bytes]
    expected: Expected
    filename: str = "upload.jpg"
    bomb: bool = False

    @property
    def data(self) -> bytes:
        return self.make()


# --- building blocks ----------------------------------------------------------------------


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(width: int, height: int, *, extra: bytes = b"", idat: bytes | None = None) -> bytes:
    """An 8-bit greyscale PNG; `idat` overrides the (correct, all-black) pixel data."""
    if idat is None:
        idat = zlib.compress(b"\x00" * ((width + 1) * height), 9)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + extra
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def _gif_frame(width: int, height: int, *, delay: int = 2) -> bytes:
    gce = b"\x21\xf9\x04\x00" + struct.pack("<H", delay) + b"\x00\x00"
    descriptor = b"\x2c" + struct.pack("<HHHH", 0, 0, width, height) + b"\x00"
    # LZW, minimum code size 2: clear (4), index 0, end (5) -> one pixel of colour 0
    return gce + descriptor + b"\x02\x02\x44\x01\x00"


def gif(width: int, height: int, frames: int, *, frame_size: tuple[int, int] = (1, 1)) -> bytes:
    header = b"GIF89a" + struct.pack("<HH", width, height) + b"\x80\x00\x00"  # 2-colour table
    palette = b"\x00\x00\x00\xff\xff\xff"
    loop = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    body = b"".join(_gif_frame(*frame_size) for _ in range(frames))
    return header + palette + loop + body + b"\x3b"


def _riff_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) % 2 else b"")


def _riff_webp(chunks: bytes) -> bytes:
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks


def _vp8l_header(width: int, height: int) -> bytes:
    bits = (width - 1) | ((height - 1) << 14)  # alpha hint 0, version 0
    return b"\x2f" + struct.pack("<I", bits)


def _vp8x(width: int, height: int, flags: int) -> bytes:
    return _riff_chunk(
        b"VP8X",
        bytes([flags, 0, 0, 0])
        + (width - 1).to_bytes(3, "little")
        + (height - 1).to_bytes(3, "little"),
    )


def webp_bomb_still() -> bytes:
    """VP8X canvas and VP8L bitstream both 16383 x 16383 (WebP's maximum: 268 MP), no data."""
    return _riff_webp(
        _vp8x(16383, 16383, 0) + _riff_chunk(b"VP8L", _vp8l_header(16383, 16383) + b"\x00" * 8)
    )


def webp_bomb_animated() -> bytes:
    """Animated WebP whose canvas is 16383 x 16383 (268 MP) around one 1x1 frame."""
    side = 16383
    anim = _riff_chunk(b"ANIM", b"\x00\x00\x00\x00\x00\x00")
    frame_bits = _riff_chunk(b"VP8L", _vp8l_header(1, 1) + b"\x00" * 8)
    anmf = _riff_chunk(
        b"ANMF", b"\x00" * 6 + b"\x00\x00\x00" * 2 + b"\x64\x00\x00\x00" + frame_bits
    )
    return _riff_webp(_vp8x(side, side, 0x02) + anim + anmf)


def jpeg_bomb() -> bytes:
    """A tiny valid JPEG whose SOF0 is rewritten to 65 000 x 65 000."""
    data = bytearray(_encoded("jpegsave_buffer", 16, 16))
    sof = data.find(b"\xff\xc0")
    if sof < 0:
        sof = data.find(b"\xff\xc2")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)
    return bytes(data)


def avif_bomb() -> bytes:
    """A tiny valid AVIF whose `ispe` (image spatial extents) says 100 000 x 100 000."""
    data = bytearray(_encoded("heifsave_buffer", 16, 16, compression="av1"))
    at = data.find(b"ispe")
    data[at + 8 : at + 16] = struct.pack(">II", 100_000, 100_000)
    return bytes(data)


@functools.cache
def _encoded(saver: str, width: int, height: int, **options: object) -> bytes:
    """A small noisy image encoded by libvips (noise so that truncation hits pixel data)."""
    import pyvips

    noise = pyvips.Image.gaussnoise(width, height, mean=128, sigma=60).cast("uchar")
    image = noise.bandjoin([noise.rot180(), noise.fliphor()]).copy(interpretation="srgb")
    data: bytes = getattr(image, saver)(**options)
    return data


def truncated(saver: str, **options: object) -> Callable[[], bytes]:
    def make() -> bytes:
        data = _encoded(saver, 512, 512, **options)
        return data[: len(data) // 2]

    return make


@functools.cache
def png_text_bomb(kind: bytes, megabytes: int = 300) -> bytes:
    """A legitimate 64x64 PNG with a zTXt or iTXt chunk that inflates to `megabytes` MB."""
    packer = zlib.compressobj(9)
    block = b"A" * (1 << 20)
    text = b"".join(packer.compress(block) for _ in range(megabytes)) + packer.flush()
    # zTXt: keyword, method 0. iTXt: keyword, compressed 1, method 0, language, translated keyword
    flags = b"\x00" if kind == b"zTXt" else b"\x01\x00\x00\x00"
    body = b"Comment\x00" + flags + text
    return png(64, 64, extra=png_chunk(kind, body))


def _random(size: int) -> bytes:
    return random.Random(size).randbytes(size)


SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="100000" '
    b'height="100000"><rect width="100%" height="100%"/></svg>'
)
PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
HTML = b"<!doctype html><html><body><script>alert(1)</script></body></html>"
TIFF = b"II*\x00" + b"\x08\x00\x00\x00" + b"\x00" * 64

CASES: tuple[HostileCase, ...] = (
    # decompression bombs: huge declared size, almost no data -> refused from the header
    HostileCase("png-bomb-100000x100000", lambda: png(100_000, 100_000, idat=zlib.compress(b"")),
                LimitExceeded, "bomb.png", bomb=True),
    HostileCase("png-bomb-20000x20000", lambda: png(20_000, 20_000, idat=zlib.compress(b"")),
                LimitExceeded, "bomb.png", bomb=True),
    HostileCase("jpeg-bomb-sof-65000x65000", jpeg_bomb, LimitExceeded, "bomb.jpg", bomb=True),
    HostileCase("gif-bomb-screen-65535", lambda: gif(65535, 65535, 1, frame_size=(65535, 65535)),
                LimitExceeded, "bomb.gif", bomb=True),
    HostileCase("webp-bomb-vp8x-16383", webp_bomb_still, LimitExceeded, "bomb.webp", bomb=True),
    HostileCase("webp-bomb-animated-canvas", webp_bomb_animated, LimitExceeded, "bomb.webp",
                bomb=True),
    HostileCase("avif-bomb-ispe-100000", avif_bomb, LimitExceeded, "bomb.avif", bomb=True),
    HostileCase("gif-20000-frames", lambda: gif(1, 1, 20_000), LimitExceeded, "anim.gif",
                bomb=True),
    HostileCase("png-1x60000", lambda: png(1, 60_000), LimitExceeded, "strip.png"),
    HostileCase("png-60000x1", lambda: png(60_000, 1), LimitExceeded, "strip.png"),
    # legitimate images with a hostile side: must be accepted without inflating the text
    HostileCase("png-ztxt-300mb", lambda: png_text_bomb(b"zTXt"), "ok", "text.png", bomb=True),
    HostileCase("png-itxt-300mb", lambda: png_text_bomb(b"iTXt"), "ok", "text.png", bomb=True),
    # truncated: the header reads, the pixels do not
    HostileCase("jpeg-truncated", truncated("jpegsave_buffer"), CorruptImage, "cut.jpg"),
    HostileCase("png-truncated", truncated("pngsave_buffer"), CorruptImage, "cut.png"),
    HostileCase("webp-truncated", truncated("webpsave_buffer"), CorruptImage, "cut.webp"),
    HostileCase("gif-truncated", truncated("gifsave_buffer"), CorruptImage, "cut.gif"),
    HostileCase("avif-truncated", truncated("heifsave_buffer", compression="av1"), CorruptImage,
                "cut.avif"),
    HostileCase("jpeg-header-only", lambda: b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", CorruptImage),
    HostileCase("png-signature-only", lambda: b"\x89PNG\r\n\x1a\n", CorruptImage, "x.png"),
    HostileCase("jpeg-magic-then-svg", lambda: b"\xff\xd8\xff" + SVG, CorruptImage),
    # not images at all, or not allowed ones, whatever the name says
    HostileCase("empty", lambda: b"", UnsupportedImage),
    HostileCase("zeros-4k", lambda: b"\x00" * 4096, UnsupportedImage),
    HostileCase("random-64k", lambda: _random(65536), UnsupportedImage),
    HostileCase("svg-named-jpg", lambda: SVG, UnsupportedImage, "photo.jpg"),
    HostileCase("pdf-named-png", lambda: PDF, UnsupportedImage, "photo.png"),
    HostileCase("html-named-gif", lambda: HTML, UnsupportedImage, "photo.gif"),
    HostileCase("tiff-named-jpg", lambda: TIFF, UnsupportedImage, "photo.jpg"),
)  # fmt: skip

CASES_BY_NAME = {case.name: case for case in CASES}
