"""The dispatcher and gateway on their own: the in-memory provider and an in-process fake
worker, so every fault is seconds away, not minutes (the real-process tests stay in
tests/lifecycle and tests/e2e)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_worker import FakeWorker
from tests.support.images import noise_png
from uplodr.dispatch.dispatcher import Dispatcher, DispatchSettings
from uplodr.dispatch.lease import Backoff, LeaseSettings
from uplodr.dispatch.worker_client import UploadSource
from uplodr.machines.memory import MemoryProvider
from uplodr.worker_env import WorkerEnv

# Deadlines and pauses of a real gateway, shrunk so that a test takes well under a second.
FAST = LeaseSettings(
    boot_timeout=5.0,
    destroy_deadline=5.0,
    destroy_backoff=Backoff(initial=0.01, max=0.05, jitter=0.01),
    create_settle=0.5,
    failure_poll=0.05,
    failure_pauses=(0.0, 0.05, 0.1),
)


@pytest.fixture
async def worker() -> AsyncIterator[FakeWorker]:
    fake = FakeWorker()
    yield fake
    await fake.aclose()


@pytest.fixture
async def provider(worker: FakeWorker) -> AsyncIterator[MemoryProvider]:
    memory = MemoryProvider(worker.start)
    yield memory
    await memory.aclose()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    folder = tmp_path / "store"
    folder.mkdir()
    return folder


def make_dispatcher(
    provider: MemoryProvider,
    store: Path,
    *,
    idle_timeout: float = 30.0,
    price_per_second: float = 0.0,
    **lease: Any,
) -> Dispatcher:
    settings = DispatchSettings(
        job_timeout=5.0,
        price_per_second=price_per_second,
        lease=replace(FAST, **lease),
    )
    env = WorkerEnv(idle_timeout=idle_timeout)
    return Dispatcher(provider, env, "test-gateway", settings)


@pytest.fixture
def dispatcher(provider: MemoryProvider, store: Path) -> Dispatcher:
    return make_dispatcher(provider, store)


@pytest.fixture
def upload(tmp_path: Path) -> UploadSource:
    path = tmp_path / "upload.png"
    path.write_bytes(noise_png(32, 32, random.Random(1)))
    return UploadSource(path, "noise.png", "t")
