"""Animated AVIF, written by Pillow's libavif: libvips cannot write AVIF sequences (it would
write the frames as separate, unrelated images).

Pillow (>= 11.3 wheels ship libavif; 13.0 here) is a runtime dependency of the *worker* only:
the gateway never imports `uplodr.imaging`, so never Pillow (tests/test_formats.py checks the
shared modules load none of it).

Frames are handed to the encoder one at a time, cut from the decoded libvips animation as the
encoder asks for them (`_Frames`: a multi-frame Pillow image whose `seek` picks the frame and
whose `tobytes` cuts it), never as a list of Pillow copies. Measured at the animation limit
(40 MP: 40 frames of 1000x1000 RGBA): peak RSS 282 MB this way against 435 MB with a list of
frames. iss634.gif (42 frames, 245x245): 36 KB at effort 1 (libavif speed 8, q63) in 0.24 CPU-s.

Frame durations are the source's; a duration of 10 ms or less becomes 100 ms, as browsers show
such GIF frames (a zero duration is not a valid AVIF frame). AVIF sequences loop forever.
"""

from __future__ import annotations

import io
from typing import Any, Final

import pyvips
from PIL import Image

# Browsers show GIF frames of <= 10 ms for 100 ms.
MIN_FRAME_MS: Final = 10
DEFAULT_FRAME_MS: Final = 100


class _Frames(Image.Image):
    """The frames of a decoded libvips animation (frames stacked vertically, `page-height`
    each), as a multi-frame Pillow image that cuts a frame only when the encoder asks for it."""

    def __init__(self, strip: pyvips.Image, page_height: int) -> None:
        super().__init__()
        self._strip = strip
        self._page_height = page_height
        self._mode = "RGBA" if strip.bands == 4 else "RGB"
        self._size = (int(strip.width), page_height)
        self.n_frames = int(strip.height) // page_height
        self.is_animated = True
        self._frame = 0

    def seek(self, frame: int) -> None:
        if not 0 <= frame < self.n_frames:
            raise EOFError("no such frame")
        self._frame = frame

    def tell(self) -> int:
        return self._frame

    def tobytes(self, encoder_name: str = "raw", *args: Any) -> bytes:
        top = self._frame * self._page_height
        frame = self._strip.crop(0, top, self._strip.width, self._page_height)
        return bytes(frame.write_to_memory())


def _durations(image: pyvips.Image, frames: int) -> list[int]:
    delays = list(image.get("delay")) if image.get_typeof("delay") else []
    delays = (delays + [DEFAULT_FRAME_MS] * frames)[:frames]
    return [int(d) if d > MIN_FRAME_MS else DEFAULT_FRAME_MS for d in delays]


def encode(image: pyvips.Image, page_height: int, quality: int, effort: int) -> bytes:
    """An animated AVIF of `image` (8-bit sRGB, 3 or 4 bands, frames stacked vertically).
    `effort` is libvips' scale (0-9; libavif speed = 9 - effort)."""
    if image.bands not in (3, 4) or image.format != "uchar":
        raise ValueError("animated AVIF frames must be 8-bit RGB or RGBA")
    frames = _Frames(image, page_height)
    out = io.BytesIO()
    frames.save(
        out,
        format="AVIF",
        save_all=True,
        duration=_durations(image, frames.n_frames),
        quality=quality,
        speed=9 - effort,
    )
    return out.getvalue()
