"""Fixtures for machine-provider tests: real processes, and a check that none is left behind."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support.procs import marked_processes

# Every stand-in worker started by a test carries this variable, so leftovers (grandchildren
# included, and processes another process started) can be found by their environment.
LEAK_MARK = "UPLODR_TEST_MARK"


@pytest.fixture
def leak_mark() -> str:
    return uuid.uuid4().hex


@pytest.fixture
def mark_env(leak_mark: str) -> dict[str, str]:
    """Put this in every stand-in's environment (spec.env) so leftovers can be found."""
    return {LEAK_MARK: leak_mark}


@pytest.fixture
def no_leftover_processes(leak_mark: str) -> Iterator[None]:
    """After the test: no new child of ours (not even a zombie) and no marked process anywhere.
    Children from before the test (a session-wide test server) are not the test's."""
    before = {proc.pid for proc in psutil.Process().children(recursive=True)}
    yield
    deadline = time.monotonic() + 3
    while True:
        children = [
            proc for proc in psutil.Process().children(recursive=True) if proc.pid not in before
        ]
        marked = marked_processes(leak_mark, LEAK_MARK)
        if (not children and not marked) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for proc in {*children, *marked}:  # do not leak into the next test either
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    assert not children, f"child processes left: {children}"
    assert not marked, f"stand-in workers left: {marked}"


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """A private state dir; at the end no record or log may remain in it."""
    directory = tmp_path / "state"
    yield directory
    machines = directory / "machines"
    if machines.exists():
        left = sorted(p.name for p in machines.iterdir())
        assert not left, f"registry files left: {left}"
