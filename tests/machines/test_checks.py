"""`Provider.check()` — can a machine be started now? — for local, memory and Fly (the API test
server); Docker's is in tests/docker/test_docker_provider_check.py. A good configuration
passes; each kind of bad one raises the error class the gateway maps (ProviderError for
configuration, WorkerUnavailable for an outage) with one line naming what failed, promptly."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fly import FAST_BACKOFF, fly_config
from tests.support.fly_api import FlyApiServer, standin_process
from tests.support.procs import free_port
from uplodr.errors import ProviderError, WorkerUnavailable
from uplodr.machines.fly import FlyConfig, FlyProvider
from uplodr.machines.local import LocalProvider
from uplodr.machines.memory import MemoryProvider


async def test_local_check_passes_with_a_writable_state_dir(tmp_path: Path) -> None:
    provider = LocalProvider(tmp_path / "state")
    try:
        await provider.check()
    finally:
        await provider.aclose()
    assert (tmp_path / "state" / "machines").is_dir()
    assert list((tmp_path / "state" / "machines").iterdir()) == []  # its probe is gone


async def test_local_check_names_a_state_dir_it_cannot_write(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file where the state dir should be")
    provider = LocalProvider(tmp_path / "state")
    try:
        with pytest.raises(ProviderError, match=r"state dir .*/state/machines is not writable"):
            await provider.check()
    finally:
        await provider.aclose()


async def test_memory_check() -> None:
    provider = MemoryProvider()
    await provider.check()
    assert provider.calls["check"] == 1
    await provider.aclose()
    with pytest.raises(ProviderError, match="closed"):
        await provider.check()


def config_for(fly: FlyApiServer, **overrides: Any) -> FlyConfig:
    return fly_config(fly, **{**FAST_BACKOFF, **overrides})


@pytest.fixture
def fly(no_leftover_processes: None) -> Iterator[FlyApiServer]:
    with FlyApiServer(grpc_port=free_port(), process_factory=standin_process) as server:
        yield server
    assert server.spec_errors == []


async def test_fly_check_is_one_authenticated_call(fly: FlyApiServer) -> None:
    provider = FlyProvider(config_for(fly))
    try:
        await provider.check()
    finally:
        await provider.aclose()
    assert fly.calls == {"list": 1}
    assert fly.statuses == {("list", 200): 1}
    assert fly.created == 0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"token": "not-the-token"}, r"refused check with 401: .* \(check FLY_API_TOKEN\)"),
        ({"app": "no-such-app"}, r"refused check with 404: app not found"),
    ],
)
async def test_fly_check_refused_is_a_configuration_error(
    fly: FlyApiServer, override: dict[str, str], message: str
) -> None:
    provider = FlyProvider(config_for(fly, **override))
    try:
        with pytest.raises(ProviderError, match=message) as refused:
            await provider.check()
    finally:
        await provider.aclose()
    assert "\n" not in str(refused.value)
    assert fly.token not in str(refused.value)


async def test_fly_check_of_an_api_that_is_down_is_an_outage(fly: FlyApiServer) -> None:
    config = config_for(fly, api_url=f"http://127.0.0.1:{free_port()}")
    provider = FlyProvider(config)
    started = time.monotonic()
    try:
        with pytest.raises(WorkerUnavailable, match=r"Fly API check failed: cannot reach"):
            await provider.check()
    finally:
        await provider.aclose()
    # one attempt, not the retry deadline of a machine operation
    assert time.monotonic() - started < config.retry_deadline / 2
