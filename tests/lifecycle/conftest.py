"""Fixtures for the lifecycle tests: real worker processes (local provider and the Fly API test
server), a worker environment with a mark to find every process a test started, and a real Swift
for the tests that run `uplodr serve --provider fly` (a remote provider needs object storage)."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.support.fly import fly_env
from tests.support.fly_api import FlyApiServer, logged_worker_process
from tests.support.gateway import GatewayProcess
from tests.support.procs import RUN_MARK, free_port, marked_processes, run_uplodr
from tests.support.swift import SwiftServer
from uplodr.machines.local import LocalProvider, base_env
from uplodr.worker_env import WorkerEnv

IDLE_TIMEOUT = 3.0


def marked_workers(mark: str) -> list[psutil.Process]:
    """Live processes carrying the mark in their environment (workers of this test)."""
    return marked_processes(mark)


def wait_until(condition: Callable[[], object], what: str, deadline: float = 15.0) -> float:
    """Poll `condition()` under a deadline; return the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > deadline:
            raise AssertionError(f"timed out after {deadline:g}s waiting for {what}")
        time.sleep(0.02)  # polling an outside condition under a deadline
    return time.monotonic() - started


@pytest.fixture
def mark(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A mark in this test's environment (inherited by the Fly test server's workers) and in
    the worker env; afterwards no marked process may be left."""
    value = uuid.uuid4().hex
    monkeypatch.setenv(RUN_MARK, value)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    yield value
    with contextlib.suppress(AssertionError):
        wait_until(lambda: not marked_workers(value), "workers to exit", 5)
    left = marked_workers(value)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    assert not left, f"worker processes left: {left}"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    path.mkdir()
    return path


@pytest.fixture
def env(store: Path) -> WorkerEnv:
    """What a gateway gives its workers (a local store: these workers run on this host)."""
    return WorkerEnv(idle_timeout=IDLE_TIMEOUT)


def marked_local(state: Path, mark: str, **options: Any) -> LocalProvider:
    """A local provider whose workers carry the test's mark."""
    return LocalProvider(state, env={**base_env(), RUN_MARK: mark}, **options)


@pytest.fixture
async def local(tmp_path: Path, mark: str) -> AsyncIterator[LocalProvider]:
    provider = marked_local(tmp_path / "state", mark, grace=2.0)
    yield provider
    await provider.aclose()
    left = sorted(p.name for p in (tmp_path / "state" / "machines").glob("*.json"))
    assert not left, f"machine records left: {left}"


@pytest.fixture
def fly(tmp_path: Path, mark: str) -> Iterator[FlyApiServer]:
    """The Fly API test server; its machines are real `uplodr worker` processes."""
    server = FlyApiServer(
        grpc_port=free_port(), process_factory=logged_worker_process(tmp_path / "fly-workers")
    )
    with server:
        yield server
        assert server.spec_errors == []
    assert server.processes_alive == 0


@pytest.fixture
def bucket(swift: SwiftServer) -> str:
    name = f"l-{uuid.uuid4().hex[:12]}"
    swift.create_bucket(name)
    return name


@contextlib.contextmanager
def fly_gateway(
    tmp_path: Path, swift: SwiftServer, bucket: str, fly: FlyApiServer, *args: str
) -> Iterator[GatewayProcess]:
    """`uplodr serve --provider fly` as a real process, storing to Swift (S3)."""
    env = {**os.environ, **swift.s3_env(), **fly_env(fly, regions="")}
    workdir = tmp_path / "gateway"
    workdir.mkdir()
    gateway = GatewayProcess(
        [
            "--provider",
            "fly",
            "--store",
            f"s3://{bucket}",
            "--public-url",
            swift.public_url(bucket),
            "--worker-idle-timeout",
            f"{IDLE_TIMEOUT:g}s",
            *args,
        ],
        env,
        workdir,
    )
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop()


def cli(*args: str, env: Mapping[str, str] | None = None) -> str:
    return run_uplodr(*args, env={**os.environ, **(env or {})})
