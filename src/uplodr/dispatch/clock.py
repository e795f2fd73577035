"""A small clock for the phases of a machine's life and a job: how long each one took.

`with timer.phase("boot"): ...` adds the phase's duration whether it ends normally, fails or is
cancelled, so timings never have to be patched in a `finally`. The time source is injectable
(monotonic seconds), so tests can use their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Now = Callable[[], float]


class PhaseTimer:
    """Durations of named phases, and the time since the timer was made."""

    def __init__(self, now: Now = time.monotonic) -> None:
        self.now = now
        self.started = now()
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        begun = self.now()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + self.now() - begun

    def elapsed(self) -> float:
        return self.now() - self.started

    def get(self, name: str) -> float:
        return self.seconds.get(name, 0.0)
