"""When a worker ends itself: SIGTERM, its maximum lifetime, or silence from its gateway.

A machine that nobody destroys must still stop billing. The gateway calls Ping every few
seconds while it owns a machine (booting: the readiness Ping; during a job: a heartbeat at a
third of the idle timeout); every call and every stream message counts. The worker exits when:
- no call arrived for `idle_timeout` and no job is in flight: the gateway is presumed gone
  (FLAME's terminator does the same). A gateway process that dies mid-job closes its
  connection, which ends the job's call at once, so this also covers a killed gateway;
- a job is in flight but nothing arrived for twice `idle_timeout`: the gateway vanished without
  closing its connection (its host is gone), since a live gateway keeps pinging during a job;
- `max_lifetime` passed, whatever happens.

Ending itself is bounded too: when the worker stops for one of these reasons, whatever is still
running (a conversion thread the server cannot interrupt) gets a grace period, then the process
exits anyway (`os._exit`): `shutdown_grace` (30 s) at the end of its lifetime, so the job in
flight can finish or fail cleanly, and `orphan_grace` (2 s) when its gateway is gone — an
orphan must stop billing within its idle timeout plus a few seconds, not whenever its last
encode would have finished.
A SIGTERM (the provider destroying the machine) is left to the provider's own SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time

log = logging.getLogger("uplodr.worker")


class Lifetime:
    def __init__(
        self,
        max_lifetime: float,
        idle_timeout: float,
        shutdown_grace: float = 30.0,
        orphan_grace: float = 2.0,
    ) -> None:
        self.max_lifetime = max_lifetime
        self.idle_timeout = idle_timeout
        # At the end of its lifetime the job in flight may finish (or fail cleanly) within
        # shutdown_grace; when the gateway is gone nobody waits for an answer: orphan_grace.
        self.shutdown_grace = shutdown_grace
        self.orphan_grace = orphan_grace
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

    def _expired(self) -> tuple[str, float] | None:
        """Why the worker should stop, and how long work in flight may still take."""
        now = time.monotonic()
        if now - self.started >= self.max_lifetime:
            return f"max lifetime of {self.max_lifetime:g}s reached", self.shutdown_grace
        silent = now - self.last_call
        if self.in_flight == 0 and silent >= self.idle_timeout:
            return f"no call for {self.idle_timeout:g}s: the gateway is gone", self.orphan_grace
        if self.in_flight > 0 and silent >= 2 * self.idle_timeout:
            silence = 2 * self.idle_timeout
            return f"no heartbeat for {silence:g}s during a job: the gateway is gone", (
                self.orphan_grace
            )
        return None

    def _exit_soon(self, grace: float) -> None:
        """Exit the process `grace` seconds from now unless it has ended by then."""

        def exit_now() -> None:
            log.info("worker exiting: still busy %gs after stopping", grace)
            logging.shutdown()
            os._exit(0)

        timer = threading.Timer(grace, exit_now)
        timer.daemon = True
        timer.start()

    async def wait(self) -> str:
        """Return the reason once the worker should stop."""
        while not self._stop.is_set():
            expired = self._expired()
            if expired:
                reason, grace = expired
                self.request_stop(reason)
                self._exit_soon(grace)
                break
            # Re-check the clocks often enough for short timeouts (at most once a second); a
            # stop request wakes at once.
            tick = min(1.0, max(0.05, self.idle_timeout / 10))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=tick)
        return self.reason
