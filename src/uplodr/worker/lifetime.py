"""When a worker ends itself: SIGTERM, its maximum lifetime, or silence from its gateway.

A machine that nobody destroys must still stop billing. The gateway calls Ping every few
seconds while it owns a machine; when no call has arrived for `idle_timeout` and no job is in
flight, the gateway is presumed gone and the worker exits (FLAME's terminator does the same).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time

log = logging.getLogger("uplodr.worker")


class Lifetime:
    def __init__(self, max_lifetime: float, idle_timeout: float) -> None:
        self.max_lifetime = max_lifetime
        self.idle_timeout = idle_timeout
        self.started = time.monotonic()
        self.last_call = self.started
        self.in_flight = 0
        self._stop = asyncio.Event()
        self.reason = ""

    def touch(self) -> None:
        self.last_call = time.monotonic()

    def request_stop(self, reason: str) -> None:
        if not self._stop.is_set():
            self.reason = reason
            log.info("worker stopping: %s", reason)
            self._stop.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, f"received {sig.name}")

    def _expired(self) -> str | None:
        now = time.monotonic()
        if now - self.started >= self.max_lifetime:
            return f"max lifetime of {self.max_lifetime:g}s reached"
        if self.in_flight == 0 and now - self.last_call >= self.idle_timeout:
            return f"no call for {self.idle_timeout:g}s: the gateway is gone"
        return None

    async def wait(self) -> str:
        """Return the reason once the worker should stop."""
        while not self._stop.is_set():
            reason = self._expired()
            if reason:
                self.request_stop(reason)
                break
            # Wake at least once a second to re-check the clocks; a stop request wakes at once.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=1.0)
        return self.reason
