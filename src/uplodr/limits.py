"""How much work one image may ask for, checked from its header before any pixel is decoded.

A shared pure module (no pyvips): the gateway carries the limits to its workers as a typed
object (`uplodr.worker_env.WorkerEnv`) without importing `uplodr.imaging`, which re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImageLimits:
    """Limits on one image. The defaults fit a 2-core, 512 MB worker (docs/benchmarks.md).

    Every count is taken from the file's header, so a decompression bomb (a few bytes that
    declare gigapixels) is refused before libvips allocates anything for its pixels.
    """

    # width x height x frames. 100 MP covers every camera and phone photo we expect (24-61 MP,
    # 100 MP medium format) while a 4-gigapixel bomb is refused. Stills are decoded while they
    # are shrunk to the preset's long side, so this bounds time more than memory.
    max_pixels: int = 100_000_000
    # Longest side in px. Real photos and panoramas stay well under 30 000; a 1 x 60 000 strip
    # is a resize-arithmetic attack (huge scale factors, enormous thumbnails), not a picture.
    max_side: int = 30_000
    # Animation frames. Web animations have tens to a few hundred; a 20 000-frame GIF of 1 px
    # frames is cheap to send but costs per-frame overhead in every encoder.
    max_frames: int = 500
    # Pixels over all frames of an animation. Frames are kept in memory together (every frame
    # goes into the animated WebP), 4 bytes each: 40 MP is 160 MB, which a 512 MB worker holds.
    max_animated_pixels: int = 40_000_000
    # Wall-clock seconds for one conversion (probe, decode, every variant). The 24 MP photo
    # takes about 6 s on 2 cores with the default preset, so 60 s is a generous ceiling.
    max_seconds: float = 60.0

    def __post_init__(self) -> None:
        for name in ("max_pixels", "max_side", "max_frames", "max_animated_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"ImageLimits.{name} must be at least 1")
        if self.max_seconds <= 0:
            raise ValueError("ImageLimits.max_seconds must be positive")


DEFAULT_LIMITS = ImageLimits()
