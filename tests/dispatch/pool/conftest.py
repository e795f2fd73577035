"""The pool on the in-memory provider and the fake worker: every lifecycle rule of a pooled
machine in milliseconds (the real-process tests with `uplodr serve` are in test_serve_pool.py).
The provider, fake worker, store and upload are the dispatcher's (tests/dispatch/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.dispatch.conftest import make_dispatcher
from tests.support.waiting import until
from uplodr.dispatch.pool import Pool, PoolSettings
from uplodr.machines.memory import MemoryProvider

PoolFactory = Callable[..., Pool]


@pytest.fixture
async def make_pool(provider: MemoryProvider, store: Path) -> AsyncIterator[PoolFactory]:
    """`make_pool(max=2, idle=…)`: a pool over a fresh dispatcher; every pool made is closed
    after the test, and then no machine may be left."""
    pools: list[Pool] = []

    def make(**settings: Any) -> Pool:
        pool = Pool(make_dispatcher(provider, store), PoolSettings(**settings))
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.close()
        await pool.dispatcher.drain()
    assert provider.alive == []


async def eventually(condition: Callable[[], bool], what: str, deadline: float = 5.0) -> None:
    """Wait for `condition` under a deadline (polling a state the pool changes by itself)."""
    await until(condition, what, deadline)
