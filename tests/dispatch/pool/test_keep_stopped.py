"""`--pool-keep-stopped`: idle machines past their window are stopped, not destroyed, and started
again on demand — on the memory provider (logic) and on Fly through the spec-validating API
simulator (its stop/start endpoints, real worker processes)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dispatch.conftest import make_dispatcher
from tests.dispatch.pool.conftest import eventually
from tests.support.fake_worker import FakeWorker
from tests.support.fly import fly_config
from tests.support.fly_api import FlyApiServer, logged_worker_process, standin_process
from tests.support.images import noise_png
from tests.support.procs import free_port
from uplodr.dispatch.pool import Pool, PoolSettings
from uplodr.dispatch.worker_client import UploadSource
from uplodr.errors import ProviderError
from uplodr.machines.base import Capabilities, MachineSpec
from uplodr.machines.fly import FlyProvider
from uplodr.machines.memory import MemoryProvider

STOPPABLE = Capabilities(shares_host_files=True, default_max_machines=4, can_stop=True)


async def test_an_idle_machine_is_stopped_and_started_again(
    worker: FakeWorker, store: Path, upload: UploadSource
) -> None:
    provider = MemoryProvider(worker.start, capabilities=STOPPABLE)
    pool = Pool(make_dispatcher(provider, store), PoolSettings(max=2, idle=0.05, keep_stopped=1))
    try:
        first = await pool.run([upload])
        assert provider.specs[first.machine_id].stoppable
        await eventually(lambda: pool.stats().stopped == 1, "the idle machine to be stopped")
        (machine,) = await provider.list({})
        assert machine.state == "stopped" and provider.destroyed == 0
        second = await pool.run([upload])
        assert second.machine_id == first.machine_id and second.responses[0].variants
        assert provider.created == 1 and provider.started_again == 1
    finally:
        await pool.close()
        await provider.aclose()
    assert provider.alive == []  # shutdown destroys stopped machines too


async def test_a_stopped_machine_that_is_gone_is_replaced(
    worker: FakeWorker, store: Path, upload: UploadSource
) -> None:
    provider = MemoryProvider(worker.start, capabilities=STOPPABLE)
    pool = Pool(make_dispatcher(provider, store), PoolSettings(max=1, idle=0.05, keep_stopped=1))
    try:
        first = await pool.run([upload])
        await eventually(lambda: pool.stats().stopped == 1, "the idle machine to be stopped")
        await provider.destroy(first.machine_id)  # the reaper, say
        second = await pool.run([upload])  # not an error: nothing of it ran on the gone one
        assert second.machine_id != first.machine_id and provider.created == 2
    finally:
        await pool.close()
        await provider.aclose()
    assert provider.alive == []


async def test_keep_stopped_needs_a_provider_that_can_stop(
    provider: MemoryProvider, store: Path
) -> None:
    with pytest.raises(ValueError, match="--pool-keep-stopped needs a provider that can stop"):
        Pool(make_dispatcher(provider, store), PoolSettings(keep_stopped=1))
    with pytest.raises(ProviderError):
        await provider.stop("anything")


@pytest.fixture
def fly(tmp_path: Path) -> Iterator[FlyApiServer]:
    server = FlyApiServer(
        grpc_port=free_port(), process_factory=logged_worker_process(tmp_path / "workers")
    )
    with server:
        yield server
        assert server.spec_errors == []
    assert server.processes_alive == 0


async def test_fly_stop_and_start_through_the_api(tmp_path: Path) -> None:
    server = FlyApiServer(grpc_port=free_port(), process_factory=standin_process)
    with server:
        provider = FlyProvider(fly_config(server, regions=()))
        try:
            spec = MachineSpec(env={}, tags={"t": "stop"}, stoppable=True)
            machine = await provider.create(spec)
            await provider.wait_started(machine, 10)
            await provider.stop(machine.id)
            (listed,) = await provider.list({"t": "stop"})
            assert listed.state == "stopped" and server.processes_alive == 0
            started = await provider.start(machine.id)
            await provider.wait_started(started, 10)
            assert started.id == machine.id and server.started_again == 1
            assert server.processes_alive == 1
            await provider.destroy(machine.id)
        finally:
            await provider.aclose()
        assert server.spec_errors == [] and server.machines_alive == 0


async def test_a_fly_pool_keeps_a_stopped_machine_and_starts_it(
    fly: FlyApiServer, store: Path, tmp_path: Path
) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(noise_png(32, 32, random.Random(2)))
    upload = UploadSource(path, "a.png", "t")
    provider = FlyProvider(fly_config(fly, regions=()))
    dispatcher = make_dispatcher(provider, store)  # type: ignore[arg-type]
    pool = Pool(dispatcher, PoolSettings(max=1, idle=0.1, keep_stopped=1))
    try:
        first = await pool.run([upload])
        await eventually(lambda: pool.stats().stopped == 1, "the machine to be stopped", 20)
        assert fly.processes_alive == 0 and fly.machines_alive == 1
        second = await pool.run([upload])
        assert second.machine_id == first.machine_id and second.responses[0].variants
        assert fly.created == 1 and fly.started_again == 1
    finally:
        await pool.close()
        await dispatcher.drain()
        await provider.aclose()
    assert fly.machines_alive == 0


async def test_the_reaper_destroys_stopped_machines_only_past_their_deadline(
    worker: FakeWorker,
) -> None:
    import time

    from uplodr.dispatch.reaper import reap

    provider = MemoryProvider(worker.start, capabilities=STOPPABLE)
    now = int(time.time())
    try:
        young = await provider.create(
            MachineSpec(env={}, tags={"deadline": str(now + 600)}, stoppable=True)
        )
        old = await provider.create(
            MachineSpec(env={}, tags={"deadline": str(now - 1)}, stoppable=True)
        )
        for machine in (young, old):
            await provider.wait_started(machine, 5)
            await provider.stop(machine.id)
        result = await reap(provider, older_than=None)
        assert result.destroyed == [old.id] and provider.alive == [young.id]
    finally:
        await provider.aclose()
