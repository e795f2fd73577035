"""Made-up images for tests and benchmarks."""

from __future__ import annotations

import random
import struct
import zlib


def noise_png(width: int, height: int, rng: random.Random) -> bytes:
    """A unique RGB PNG of noise (unique bytes: the gateway's dedup never answers it)."""
    raw = b"".join(b"\0" + rng.randbytes(width * 3) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 1))
        + chunk(b"IEND", b"")
    )
