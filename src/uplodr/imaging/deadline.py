"""A time limit for one conversion that can stop libvips while it computes pixels.

libvips reports progress through an image's `eval` signal while it computes the pixels of that
image; setting the image's kill flag from the handler makes the computation fail at the next
tile. That aborts decoding and the WebP/JPEG/PNG encoders (which pull pixels as they go).
It cannot interrupt the AV1 encoder: libheif hands the whole frame to aom and waits, so an AVIF
encode that has started runs to its end; the deadline is checked again when it returns.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pyvips

from uplodr.errors import LimitExceeded


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._watched: list[pyvips.Image] = []
        self.tripped = False  # the limit passed, or abort() was called

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    def expired(self) -> bool:
        return self.tripped or time.monotonic() >= self._end

    def error(self) -> LimitExceeded:
        return LimitExceeded(f"image conversion took longer than the {self.seconds:g} s limit")

    def check(self) -> None:
        """Raise LimitExceeded if the time is up (call between steps)."""
        if self.expired():
            self.tripped = True
            raise self.error()

    def watch(self, image: pyvips.Image) -> pyvips.Image:
        """A copy of `image` whose evaluation is killed once the deadline passes."""
        image = image.copy()
        image.set_progress(True)
        image.signal_connect("eval", self._on_eval)
        with self._lock:
            self._watched.append(image)
        return image

    def abort(self) -> None:
        """Kill every watched computation now (another variant failed, or time is up)."""
        with self._lock:
            self.tripped = True
            for image in self._watched:
                image.set_kill(True)

    def _on_eval(self, image: pyvips.Image, progress: Any) -> None:
        if self.tripped or time.monotonic() >= self._end:
            self.tripped = True
            image.set_kill(True)
