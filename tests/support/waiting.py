"""Waiting for a condition under a deadline (polling real state, never a bare sleep)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import psutil

from tests.support.gateway import Gateway

DEADLINE = 60.0


def wait_for(condition: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.02)  # polling a condition under a deadline
    raise AssertionError(f"timed out waiting for {what}")


async def until(condition: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    """`wait_for` inside a test's event loop: polls without blocking the loop."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if condition():
            return
        await asyncio.sleep(0.01)  # polling a condition under a deadline
    raise AssertionError(f"timed out after {deadline:g}s waiting for {what}")


def busy_worker(gateway: Gateway) -> psutil.Process:
    """The job's worker once it is converting (it has used real CPU time)."""
    found: list[psutil.Process] = []

    def converting() -> bool:
        for pid in gateway.workers():
            with contextlib.suppress(psutil.NoSuchProcess):
                proc = psutil.Process(pid)
                if sum(proc.cpu_times()[:2]) > 1.5:
                    found.append(proc)
                    return True
        return False

    wait_for(converting, "a worker to start converting")
    return found[0]
