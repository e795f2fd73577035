"""The production Fly provider against the Fly API test server: real sockets, real processes.

Only the base URL differs from production. The machines are stand-in processes that accept TCP
on the machine's private address (the real worker is exercised by the end-to-end tests).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from tests.support.fly import FAST_BACKOFF, fly_config
from tests.support.fly_api import Faults, FlyApiServer, standin_process
from tests.support.procs import free_port
from tests.support.waiting import until
from tests.support.worker import wait_for_ping
from uplodr.errors import ProviderError, WorkerUnavailable
from uplodr.machines.base import MARKER_TAG, MARKER_VALUE, MachineSpec, StopReason
from uplodr.machines.fly import FlyConfig, FlyGuest, FlyProvider
from uplodr.machines.settings import ProviderSettings


@pytest.fixture
def spec(mark_env: dict[str, str]) -> MachineSpec:
    """The marker in the env lets conftest's leak check find any stand-in left running."""
    return MachineSpec(env={"UPLODR_TOKEN": "per-machine", **mark_env}, tags={"job": "j1"})


@pytest.fixture
def fly(no_leftover_processes: None) -> Iterator[FlyApiServer]:
    server = FlyApiServer(
        grpc_port=free_port(),
        process_factory=standin_process,
        boot_latency=0.05,
        start_latency=0.05,
        faults=Faults(seed=4),
    )
    with server:
        yield server
    assert server.spec_errors == []
    assert server.processes_alive == 0


def config_for(fly: FlyApiServer, **overrides: Any) -> FlyConfig:
    return fly_config(
        fly, **{"regions": ("ams",), "retry_deadline": 8.0, **FAST_BACKOFF, **overrides}
    )


@pytest.fixture
async def provider(fly: FlyApiServer) -> AsyncIterator[FlyProvider]:
    provider = FlyProvider(config_for(fly))
    yield provider
    await provider.aclose()


def greet(address: str, deadline: float = 10.0) -> bytes:
    """The stand-in's greeting. "started" means the machine booted, not that its process
    listens yet (the dispatcher waits with a Ping for the same reason): retry until it does."""
    host, port = address.rsplit(":", 1)
    end = time.monotonic() + deadline
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=5) as conn:
                return conn.recv(64)
        except ConnectionRefusedError:
            if time.monotonic() > end:
                raise
            time.sleep(0.02)  # polling a real connection under a deadline


async def test_lifecycle_create_wait_list_destroy(
    spec: MachineSpec, fly: FlyApiServer, provider: FlyProvider
) -> None:
    machine = await provider.create(replace(spec, memory_mb=2048))
    assert fly.statuses[("create", 200)] == 1  # the body passed the spec validator
    served = fly.machine(machine.id)
    assert served is not None
    assert machine.address == f"{served.private_ip}:{fly.grpc_port}"
    assert machine.tags[MARKER_TAG] == MARKER_VALUE and machine.tags["job"] == "j1"
    config = served.config
    assert config["restart"] == {"policy": "no"} and config["auto_destroy"] is True
    assert config["guest"] == {"cpu_kind": "shared", "cpus": 2, "memory_mb": 2048}
    assert config["env"] == dict(spec.env)
    # the image's ENTRYPOINT is `uplodr`: init replaces it and CMD, as Docker does
    assert config["init"] == {
        "entrypoint": ["uplodr"],
        "cmd": ["worker", "--grpc-addr", f"[::]:{fly.grpc_port}"],
    }
    assert served.name.startswith("uplodr-") and served.region == "ams"

    await provider.wait_started(machine, timeout=10)
    assert await asyncio.to_thread(greet, machine.address) == b"uplodr-standin\n"
    assert await provider.failure(machine.id) is None

    assert [m.id for m in await provider.list({"job": "j1"})] == [machine.id]
    assert await provider.list({"job": "other"}) == []

    await provider.destroy(machine.id)
    assert fly.machines_alive == 0 and fly.processes_alive == 0
    assert await provider.list({}) == []
    # one call each for a machine's whole life (failure and list were the test's own)
    assert (fly.calls["create"], fly.calls["wait"], fly.calls["delete"]) == (1, 1, 1)


async def test_validator_refuses_unknown_fields_wrong_types_and_queries(
    fly: FlyApiServer,
) -> None:
    fly.limit(0)
    headers = {"Authorization": f"Bearer {fly.token}"}
    base = f"{fly.url}/v1/apps/{fly.app}/machines"
    async with httpx.AsyncClient(headers=headers) as raw:
        unknown = await raw.post(base, json={"config": {"image": "x", "cmd": ["uplodr"]}})
        assert unknown.status_code == 400 and "cmd" in unknown.json()["error"]
        wrong = await raw.post(base, json={"config": {"image": "x", "guest": {"cpus": "2"}}})
        assert wrong.status_code == 400 and "cpus" in wrong.json()["error"]
        metadata = await raw.post(base, json={"config": {"image": "x", "metadata": {"n": 1}}})
        assert metadata.status_code == 400
        policy = await raw.post(base, json={"config": {"image": "x", "restart": {"policy": "x"}}})
        assert policy.status_code == 400
        query = await raw.get(f"{base}/abc/wait", params={"state": "started", "timeout": "1s"})
        assert query.status_code == 400 and "timeout" in query.json()["error"]
        state = await raw.get(f"{base}/abc/wait", params={"state": "running"})
        assert state.status_code == 400
        extra = await raw.delete(f"{base}/abc", params={"force": "true", "kill": "true"})
        assert extra.status_code == 400 and "kill" in extra.json()["error"]
        ok = await raw.post(base, json={"config": {"image": "x", "auto_destroy": True}})
        assert ok.status_code == 200
        assert (await raw.delete(f"{base}/{ok.json()['id']}?force=true")).status_code == 200
    assert fly.machines_alive == 0


async def test_rate_limit_bursts_are_retried(spec: MachineSpec, fly: FlyApiServer) -> None:
    fly.retry_after = 0.3
    provider = FlyProvider(config_for(fly))
    try:
        machines = await asyncio.gather(*(provider.create(spec) for _ in range(5)))
        assert fly.statuses[("create", 429)] > 0
        assert fly.statuses[("create", 200)] == 5
        await asyncio.gather(*(provider.destroy(m.id) for m in machines))
    finally:
        await provider.aclose()
    assert fly.machines_alive == 0


async def test_5xx_is_retried(spec: MachineSpec, fly: FlyApiServer, provider: FlyProvider) -> None:
    fly.limit(20)  # the retries of 503s would otherwise also meet the 1/s limit
    fly.faults.error_5xx = 0.5
    machine = await provider.create(spec)
    await provider.wait_started(machine, timeout=10)
    await provider.destroy(machine.id)
    fly.faults.error_5xx = 0.0
    assert sum(n for (_, status), n in fly.statuses.items() if status == 503) > 0
    assert fly.machines_alive == 0


async def test_lost_create_answer_is_adopted_not_leaked(
    spec: MachineSpec, fly: FlyApiServer, provider: FlyProvider
) -> None:
    fly.faults.lost_create = 1.0
    machine = await provider.create(spec)
    fly.faults.lost_create = 0.0
    assert fly.statuses[("create", 500)] == 1 and fly.calls["create"] == 1
    assert fly.machines_alive == 1
    await provider.destroy(machine.id)
    assert fly.machines_alive == 0


async def test_capacity_in_first_region_falls_back_to_the_next(
    spec: MachineSpec, fly: FlyApiServer
) -> None:
    fly.faults.capacity_regions = {"ams"}
    # a first backoff of 5 s: the next region must be tried at once, not after it
    config = config_for(
        fly,
        regions=("ams", "fra", "cdg"),
        backoff_initial=5.0,
        backoff_max=5.0,
        backoff_jitter=0,
        retry_deadline=30.0,
    )
    provider = FlyProvider(config)
    try:
        started = time.monotonic()
        machine = await provider.create(spec)
        assert time.monotonic() - started < 4.0
        served = fly.machine(machine.id)
        assert served is not None and served.region == "fra"
        assert fly.statuses[("create", 422)] == 1 and fly.statuses[("create", 200)] == 1
        await provider.destroy(machine.id)
    finally:
        await provider.aclose()


async def test_capacity_everywhere_is_worker_unavailable(
    spec: MachineSpec, fly: FlyApiServer
) -> None:
    fly.faults.capacity_regions = {"ams", "fra"}
    provider = FlyProvider(config_for(fly, regions=("ams", "fra"), retry_deadline=1.0))
    try:
        with pytest.raises(WorkerUnavailable, match="insufficient resources"):
            await provider.create(spec)
    finally:
        await provider.aclose()
    assert fly.calls["create"] > 2 and fly.machines_alive == 0


async def test_bad_token_is_a_provider_error_and_not_retried(
    spec: MachineSpec, fly: FlyApiServer
) -> None:
    provider = FlyProvider(config_for(fly, token="wrong-secret-token"))
    try:
        with pytest.raises(ProviderError) as caught:
            await provider.create(spec)
    finally:
        await provider.aclose()
    message = str(caught.value)
    assert "401" in message and "authenticated" in message and "FLY_API_TOKEN" in message
    assert "wrong-secret-token" not in message
    assert fly.calls["create"] == 1 and fly.machines_alive == 0


async def test_unknown_app_is_a_provider_error(fly: FlyApiServer) -> None:
    provider = FlyProvider(config_for(fly, app="no-such-app"))
    try:
        with pytest.raises(ProviderError, match="app not found"):
            await provider.list({})
    finally:
        await provider.aclose()
    assert fly.calls["list"] == 1


async def test_stuck_in_created_times_out(
    spec: MachineSpec, fly: FlyApiServer, provider: FlyProvider
) -> None:
    fly.faults.stuck_in_created = 1.0
    machine = await provider.create(spec)
    started = time.monotonic()
    with pytest.raises(WorkerUnavailable, match=r"did not start within 1\.5 s"):
        await provider.wait_started(machine, timeout=1.5)
    assert 1.5 <= time.monotonic() - started < 5.0  # the deadline, not the server's patience
    assert fly.statuses[("wait", 408)] >= 1 and fly.calls["wait"] >= 2  # 408 → asked again
    await provider.destroy(machine.id)
    assert fly.machines_alive == 0


async def test_vanished_machine_destroys_fine(
    spec: MachineSpec, fly: FlyApiServer, provider: FlyProvider
) -> None:
    machine = await provider.create(spec)
    await provider.wait_started(machine, timeout=10)
    fly.vanish(machine.id)
    assert await provider.failure(machine.id) == StopReason.gone("the machine no longer exists")
    await provider.destroy(machine.id)
    assert fly.statuses[("delete", 404)] == 1 and fly.machines_alive == 0


async def test_machine_vanishing_while_booting_is_worker_unavailable(
    spec: MachineSpec, fly: FlyApiServer, provider: FlyProvider
) -> None:
    fly.faults.vanish = 1.0
    machine = await provider.create(spec)
    await until(lambda: fly.injected["vanish"] == 1, "the machine to vanish as it starts")
    with pytest.raises(WorkerUnavailable, match="will not start"):
        await provider.wait_started(machine, timeout=5)
    await provider.destroy(machine.id)


async def test_worker_exit_auto_destroys_and_failure_says_why(
    spec: MachineSpec, fly: FlyApiServer
) -> None:
    provider = FlyProvider(config_for(fly))
    try:
        env = {**spec.env, "STANDIN_EXIT_AFTER": "0.2", "STANDIN_EXIT_CODE": "3"}
        machine = await provider.create(replace(spec, env=env))
        await provider.wait_started(machine, timeout=10)
        deadline = time.monotonic() + 5
        while fly.machines_alive and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert fly.machines_alive == 0  # auto_destroy
        assert await provider.failure(machine.id) == StopReason.exited(3)
        await provider.destroy(machine.id)  # already gone: fine
    finally:
        await provider.aclose()


async def test_unreachable_api_is_worker_unavailable() -> None:
    config = FlyConfig(
        token="t",
        app="a",
        image="i",
        api_url=f"http://127.0.0.1:{free_port()}",
        retry_deadline=0.5,
        backoff_initial=0.05,
        backoff_jitter=0.05,
    )
    provider = FlyProvider(config)
    try:
        with pytest.raises(WorkerUnavailable, match="cannot reach"):
            await provider.list({})
    finally:
        await provider.aclose()


def settings(options: dict[str, str], **shared: object) -> ProviderSettings:
    env = {"FLY_API_TOKEN": "FlyV1 secret", "FLY_API_HOSTNAME": "http://_api.internal:4280"}
    return ProviderSettings(options=options, env=env, **shared)  # type: ignore[arg-type]


def test_config_from_settings_and_token_stays_out_of_repr() -> None:
    options = {"fly_app": "imgs", "fly_image": "registry.fly.io/imgs:1", "fly_regions": "ams, fra"}
    config = FlyConfig.from_settings(settings(options, memory_mb=2048, cpus=4))
    assert config.regions == ("ams", "fra") and config.token == "FlyV1 secret"
    assert config.guest == FlyGuest(cpu_kind="shared", cpus=4, memory_mb=2048)
    assert config.api_url == "http://_api.internal:4280" and config.grpc_port == 50051
    assert "secret" not in repr(config)
    # FLY_APP_NAME (set on Fly) is the app's default
    on_fly = ProviderSettings(
        options={"fly_image": "i"}, env={"FLY_API_TOKEN": "t", "FLY_APP_NAME": "here"}
    )
    assert FlyConfig.from_settings(on_fly).app == "here"


@pytest.mark.parametrize(
    ("options", "env", "message"),
    [
        (
            {},
            {},
            "the Fly provider needs FLY_API_TOKEN, --fly-app (UPLODR_FLY_APP), "
            "--fly-image (UPLODR_FLY_IMAGE)",
        ),
        (
            {"fly_app": "a", "fly_image": "i", "fly_grpc_port": "99999"},
            {"FLY_API_TOKEN": "t"},
            "--fly-grpc-port (UPLODR_FLY_GRPC_PORT) must be a port number, not '99999'",
        ),
        (
            {"fly_app": "a", "fly_image": "i", "fly_cpu_kind": "fast"},
            {"FLY_API_TOKEN": "t"},
            "--fly-cpu-kind (UPLODR_FLY_CPU_KIND) must be shared or performance, not 'fast'",
        ),
        (
            {"fly_app": "a", "fly_image": "i", "fly_retry_deadline": "-1"},
            {"FLY_API_TOKEN": "t"},
            "--fly-retry-deadline (UPLODR_FLY_RETRY_DEADLINE) must be a positive number "
            "of seconds, not '-1'",
        ),
    ],
)
def test_bad_settings_are_one_line(
    options: dict[str, str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ProviderError) as caught:
        FlyConfig.from_settings(ProviderSettings(options=options, env=env))
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("cpu_kind", "cpus", "memory", "message"),
    [
        ("shared", 1, 500, "Fly machine memory comes in 256 MB steps, not 500 MB"),
        ("shared", 1, 4096, "1 shared CPU(s) take 256-2048 MB of memory on Fly, not 4096 MB"),
        ("performance", 2, 2048, "2 performance CPU(s) take 4096-16384 MB of memory on Fly, "
         "not 2048 MB"),
    ],
)  # fmt: skip
def test_a_guest_size_fly_refuses_is_one_line_before_any_call(
    cpu_kind: str, cpus: int, memory: int, message: str
) -> None:
    options = {"fly_app": "a", "fly_image": "i", "fly_cpu_kind": cpu_kind}
    given = ProviderSettings(
        options=options, memory_mb=memory, cpus=cpus, env={"FLY_API_TOKEN": "t"}
    )
    with pytest.raises(ProviderError) as caught:
        FlyConfig.from_settings(given)
    assert str(caught.value) == f"--machine-memory/--machine-cpus: {message}"


def test_a_performance_guest_defaults_to_its_smallest_memory() -> None:
    options = {"fly_app": "a", "fly_image": "i", "fly_cpu_kind": "performance"}
    given = ProviderSettings(options=options, cpus=2, env={"FLY_API_TOKEN": "t"})
    assert FlyConfig.from_settings(given).guest == FlyGuest("performance", 2, 4096)


async def test_the_api_refuses_a_guest_size_fly_refuses(
    spec: MachineSpec, fly: FlyApiServer, provider: FlyProvider
) -> None:
    with pytest.raises(ProviderError, match="multiple of 256"):
        await provider.create(replace(spec, memory_mb=300))
    assert fly.statuses[("create", 422)] == 1 and fly.created == 0


def test_price_table_matches_fly_list_prices() -> None:
    """The linear model (CPU + memory) is within 2 % of the list prices it is derived from,
    and it is the provider's price per machine-second."""
    assert FlyGuest("shared", 1, 256).price_per_second() == pytest.approx(0.0000008, rel=0.02)
    assert FlyGuest("shared", 1, 1024).price_per_second() == pytest.approx(0.0000022, rel=0.02)
    assert FlyGuest("performance", 1, 2048).price_per_second() == pytest.approx(0.0000120, rel=0.02)
    assert FlyGuest("performance", 1, 4096).price_per_second() == pytest.approx(0.0000158, rel=0.02)
    config = FlyConfig(token="t", app="a", image="i", guest=FlyGuest("performance", 1, 2048))
    assert FlyProvider(config).capabilities.price_per_second == pytest.approx(0.0000120, rel=0.02)


def retry_after(value: str) -> httpx.Response:
    return httpx.Response(429, headers={"Retry-After": value})


def test_retry_after_seconds_and_http_date() -> None:
    from uplodr.machines.fly_api import _retry_after

    now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    assert _retry_after(retry_after("2.5"), now) == 2.5
    assert _retry_after(retry_after("Tue, 01 Dec 2026 12:00:07 GMT"), now) == 7.0
    assert _retry_after(retry_after("Tue, 01 Dec 2026 11:59:00 GMT"), now) == 0.0  # past
    assert _retry_after(retry_after("Wed, 02 Dec 2026 12:00:00 GMT"), now) == 30.0  # capped
    assert _retry_after(retry_after("soon"), now) is None
    assert _retry_after(retry_after("nan"), now) is None
    assert _retry_after(httpx.Response(429), now) is None


async def test_rate_limit_with_an_http_date_is_honoured(
    spec: MachineSpec, fly: FlyApiServer
) -> None:
    """Fly's 429 with Retry-After as an HTTP-date (RFC 9110): the create waits and succeeds."""
    fly.retry_after_date = True
    fly.retry_after = 1.0
    fly.limit(1.0, burst=1)
    provider = FlyProvider(config_for(fly))
    try:
        machines = [await provider.create(spec), await provider.create(spec)]
        # one 429: the wait it asked for was kept (backing off on our own would meet several)
        assert fly.statuses[("create", 429)] == 1 and fly.statuses[("create", 200)] == 2
        for machine in machines:
            await provider.destroy(machine.id)
    finally:
        await provider.aclose()


def test_ipv6_private_address_is_bracketed() -> None:
    from uplodr.machines.fly import _address

    assert _address("fdaa:0:1::2", 50051) == "[fdaa:0:1::2]:50051"
    assert _address("127.0.0.3", 50051) == "127.0.0.3:50051"


async def test_real_worker_machine_answers_ping_at_its_address(
    tmp_path: Path, mark_env: dict[str, str], no_leftover_processes: None
) -> None:
    """The default process factory: `python -m uplodr worker` on the machine's private IP."""
    (tmp_path / "store").mkdir()
    env = {
        "UPLODR_WORKER_TOKEN": "machine-token",
        **mark_env,
    }
    with FlyApiServer(grpc_port=free_port()) as fly:
        provider = FlyProvider(config_for(fly))
        try:
            machine = await provider.create(MachineSpec(env=env, tags={"job": "real"}))
            await provider.wait_started(machine, timeout=10)
            assert machine.address.startswith("127.0.0.")
            deadline = time.monotonic() + 20
            while True:  # Ping as the dispatcher does; a worker that died says why
                try:
                    await asyncio.to_thread(wait_for_ping, machine.address, "machine-token", 1.0)
                    break
                except grpc.RpcError:
                    reason = await provider.failure(machine.id)
                    assert reason is None, f"the worker machine stopped: {reason}"
                    assert time.monotonic() < deadline, "the worker never answered Ping"
            await provider.destroy(machine.id)
        finally:
            await provider.aclose()
        assert fly.machines_alive == 0 and fly.processes_alive == 0
