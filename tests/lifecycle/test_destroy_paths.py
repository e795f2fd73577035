"""The job's machine is destroyed on every path, whatever happens, and nothing of it is left:
success, conversion error, client hang-up, task cancelled during create / boot / stream, boot
deadline passed, worker crashed, storage failed. The destroy is retried (a 503 on DELETE) and
shielded from cancellation. In-process Dispatcher, real worker processes."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Literal

import psutil
import pytest
from starlette.requests import Request
from starlette.types import Message

from tests.lifecycle.conftest import marked_local, marked_workers, wait_until
from tests.support.fly import fly_config
from tests.support.fly_api import FlyApiServer
from tests.support.images import noise_png
from tests.support.phases import PhaseWatch
from tests.support.waiting import until
from uplodr.dispatch.dispatcher import Dispatcher, DispatchSettings
from uplodr.dispatch.job import JobResult
from uplodr.dispatch.lease import LeaseSettings
from uplodr.dispatch.worker_client import UploadSource
from uplodr.errors import CorruptImage, StorageUnavailable, WorkerUnavailable
from uplodr.gateway.app import ClientGone, until_disconnect
from uplodr.gateway.outputs import publish_outputs
from uplodr.machines.base import Provider
from uplodr.machines.fly import FlyProvider
from uplodr.machines.local import LocalProvider
from uplodr.storage import LocalStore, Publisher
from uplodr.worker_env import WorkerEnv

Kind = Literal["local", "fly"]


def make(
    provider: Provider,
    env: WorkerEnv,
    boot_timeout: float = 15.0,
    destroy_deadline: float = 60.0,
) -> tuple[Dispatcher, PhaseWatch]:
    settings = DispatchSettings(
        job_timeout=30.0,
        lease=LeaseSettings(
            boot_timeout=boot_timeout, create_settle=1.0, destroy_deadline=destroy_deadline
        ),
    )
    dispatcher = Dispatcher(provider, env, "test-gateway", settings)
    return dispatcher, PhaseWatch(dispatcher.events)


def upload(tmp_path: Path, data: bytes, folder: str = "t") -> UploadSource:
    path = tmp_path / f"upload-{random.getrandbits(32):x}.png"
    path.write_bytes(data)
    return UploadSource(path, "noise.png", folder)


def image(size: int = 64) -> bytes:
    return noise_png(size, size, random.Random(size))


async def nothing_left(provider: Provider, mark: str, fly: FlyApiServer | None = None) -> None:
    """No machine listed, no record, no worker process, no machine on the Fly server — at once
    (well within the workers' idle timeout, so a worker that merely ended itself later would
    not pass for a destroyed one)."""
    assert await provider.list({}) == []
    if isinstance(provider, LocalProvider):
        assert list(provider.records) == []
    if fly is not None:
        assert fly.machines_alive == 0
        await asyncio.to_thread(wait_until, lambda: fly.processes_alive == 0, "no process", 1)
    await asyncio.to_thread(wait_until, lambda: not marked_workers(mark), "no worker", 1)


def fly_provider_for(fly: FlyApiServer) -> FlyProvider:
    fly.limit(0)  # these tests are about the lifecycle, not the rate limit
    return FlyProvider(fly_config(fly, regions=()))


@pytest.fixture
async def fly_provider(fly: FlyApiServer) -> AsyncIterator[FlyProvider]:
    provider = fly_provider_for(fly)
    yield provider
    await provider.aclose()


@pytest.fixture(params=["local", "fly"])
def kind(request: pytest.FixtureRequest) -> Kind:
    value: Kind = request.param
    return value


@pytest.fixture
async def provider(
    kind: Kind, request: pytest.FixtureRequest, local: LocalProvider
) -> AsyncIterator[Provider]:
    if kind == "local":
        yield local
        return
    fly_provider = fly_provider_for(request.getfixturevalue("fly"))
    yield fly_provider
    await fly_provider.aclose()


def server(kind: Kind, request: pytest.FixtureRequest) -> FlyApiServer | None:
    if kind != "fly":
        return None
    fly: FlyApiServer = request.getfixturevalue("fly")
    return fly


async def test_success_leaves_nothing(
    provider: Provider,
    kind: Kind,
    env: WorkerEnv,
    mark: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    dispatcher, _ = make(provider, env)
    result = await dispatcher.run([upload(tmp_path, image())])
    assert [v.mime_type for v in result.responses[0].variants]
    assert result.timings.machine_seconds > 0
    assert dispatcher.totals.machines_destroyed == 1
    await nothing_left(provider, mark, server(kind, request))


async def test_conversion_error_leaves_nothing(
    provider: Provider,
    kind: Kind,
    env: WorkerEnv,
    mark: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    dispatcher, _ = make(provider, env)
    data = image()
    with pytest.raises(CorruptImage):
        await dispatcher.run([upload(tmp_path, data[: len(data) // 2])])
    # a failed job still used (and is charged for) machine time
    assert dispatcher.totals.machine_seconds > 0
    await nothing_left(provider, mark, server(kind, request))


async def test_client_hang_up_leaves_nothing(
    provider: Provider,
    kind: Kind,
    env: WorkerEnv,
    mark: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """The gateway's own hang-up handling (until_disconnect) cancels the job mid-stream."""
    dispatcher, phases = make(provider, env)

    async def receive() -> Message:
        await phases.entered["stream"].wait()
        return {"type": "http.disconnect"}

    http = Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)
    with pytest.raises(ClientGone):
        await until_disconnect(http, dispatcher.run([upload(tmp_path, image(512))]))
    await nothing_left(provider, mark, server(kind, request))


@pytest.mark.parametrize("phase", ["create", "boot", "stream"])
async def test_cancelled_task_leaves_nothing(
    provider: Provider,
    kind: Kind,
    env: WorkerEnv,
    mark: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    phase: str,
) -> None:
    dispatcher, phases = make(provider, env)
    task = asyncio.create_task(dispatcher.run([upload(tmp_path, image(512))]))
    await phases.entered[phase].wait()
    await asyncio.sleep(0 if phase == "create" else 0.005)  # into the phase, not at its door
    assert phases.phase == phase and not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # the destroy finished before the cancelled task did
    await nothing_left(provider, mark, server(kind, request))


async def test_boot_deadline_leaves_nothing_local(
    env: WorkerEnv, mark: str, tmp_path: Path
) -> None:
    """A machine whose worker never answers Ping is destroyed at the boot deadline."""
    never = marked_local(
        tmp_path / "state-never",
        mark,
        command=lambda port: [sys.executable, "-c", "import time; time.sleep(120)"],
        grace=1.0,
    )
    dispatcher, _ = make(never, env, boot_timeout=1.5)
    started = time.monotonic()
    with pytest.raises(WorkerUnavailable, match=r"within 1\.5"):
        await dispatcher.run([upload(tmp_path, image())])
    # at least the deadline; far less than waiting for the worker (the upper bound is slack for
    # the failure check and the destroy on a loaded machine, not a speed target)
    assert 1.5 <= time.monotonic() - started < 15
    await nothing_left(never, mark)
    await never.aclose()


async def test_worker_that_exits_while_booting_fails_fast(
    env: WorkerEnv, mark: str, tmp_path: Path
) -> None:
    """A worker that cannot start (it exits at once) fails the job with its exit reason long
    before the boot deadline, and its machine is gone."""
    broken = marked_local(
        tmp_path / "state-broken",
        mark,
        command=lambda port: [sys.executable, "-c", "raise SystemExit(2)"],
        grace=1.0,
    )
    dispatcher, _ = make(broken, env, boot_timeout=30.0)
    started = time.monotonic()
    with pytest.raises(WorkerUnavailable, match="exited with code 2"):
        await dispatcher.run([upload(tmp_path, image())])
    assert time.monotonic() - started < 10  # not the 30 s boot deadline
    await nothing_left(broken, mark)
    await broken.aclose()


async def test_boot_deadline_leaves_nothing_fly(
    fly: FlyApiServer, fly_provider: FlyProvider, env: WorkerEnv, mark: str, tmp_path: Path
) -> None:
    """A Fly machine stuck in `created` is destroyed at the boot deadline."""
    fly.faults.stuck_in_created = 1.0
    dispatcher, _ = make(fly_provider, env, boot_timeout=1.5)
    started = time.monotonic()
    with pytest.raises(WorkerUnavailable, match=r"within 1\.5"):
        await dispatcher.run([upload(tmp_path, image())])
    # at least the deadline; far less than waiting for the worker (the upper bound is slack for
    # the failure check and the destroy on a loaded machine, not a speed target)
    assert 1.5 <= time.monotonic() - started < 15
    assert fly.destroyed["user"] == 1  # destroyed by our DELETE, not by itself
    await nothing_left(fly_provider, mark, fly)


async def test_worker_crash_leaves_nothing(
    provider: Provider,
    kind: Kind,
    env: WorkerEnv,
    mark: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    dispatcher, phases = make(provider, env)
    fly = server(kind, request)

    def worker_pid() -> int:
        if fly is not None:
            machine = fly.machine(phases.machine_id)
            assert machine is not None and isinstance(machine.process, subprocess.Popen)
            return machine.process.pid
        assert isinstance(provider, LocalProvider)
        record = provider.records.read(phases.machine_id)
        assert record is not None
        return record.pid

    async def crash() -> None:
        await phases.entered["stream"].wait()
        worker = psutil.Process(worker_pid())
        # the worker is converting: it has used CPU time beyond its boot's since the stream began
        used = sum(worker.cpu_times()[:2])
        await until(lambda: sum(worker.cpu_times()[:2]) > used + 0.2, "the worker to convert")
        if fly is not None:
            assert fly.kill_process(phases.machine_id)
        else:
            os.kill(worker.pid, signal.SIGKILL)

    crasher = asyncio.create_task(crash())
    with pytest.raises(WorkerUnavailable, match=r"worker stopped|no longer exists"):
        # 4 MP of noise: the conversion outlasts the 0.2 s before the kill by far
        await dispatcher.run([upload(tmp_path, image(2048))])
    await crasher
    await nothing_left(provider, mark, fly)


async def test_storage_failure_leaves_nothing(
    provider: Provider,
    kind: Kind,
    env: WorkerEnv,
    mark: str,
    tmp_path: Path,
    store: Path,
    request: pytest.FixtureRequest,
) -> None:
    """Workers hold no store: the job runs and its machine is gone before anything is stored;
    publishing its outputs into a store that cannot take them fails with StorageUnavailable
    and leaves nothing of the set."""
    (store / "blocked").write_text("a file where the folder should be")
    dispatcher, _ = make(provider, env)
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    source = replace(upload(tmp_path, image(), folder="blocked"), outputs=outputs)
    result = await dispatcher.run([source])
    await nothing_left(provider, mark, server(kind, request))
    # A blocked path stays blocked: the rollback's retries (30 s by default) would only wait.
    publisher = Publisher([LocalStore(store, "http://files.test/{key}")], rollback_deadline_s=2.0)
    with pytest.raises(StorageUnavailable):
        await publish_outputs(
            publisher, result.responses[0], outputs, "blocked", "x", "0" * 16, "{}"
        )
    assert [p for p in store.rglob("*") if p.is_file()] == [store / "blocked"]


async def test_destroy_is_retried_after_5xx(
    fly: FlyApiServer, fly_provider: FlyProvider, env: WorkerEnv, mark: str, tmp_path: Path
) -> None:
    fly.faults.fail_next["delete"] = 3
    dispatcher, _ = make(fly_provider, env)
    await dispatcher.run([upload(tmp_path, image())])
    assert fly.statuses[("delete", 503)] == 3
    # the fourth DELETE destroyed it (or found it gone: if the backoff outlasted the worker's
    # idle timeout, the worker ended itself first and auto_destroy removed the machine)
    assert fly.statuses[("delete", 200)] + fly.statuses[("delete", 404)] == 1
    await nothing_left(fly_provider, mark, fly)


async def test_destroy_is_retried_when_the_provider_gives_up(
    fly: FlyApiServer, env: WorkerEnv, mark: str, tmp_path: Path
) -> None:
    """The provider's own retries end (short deadline): the dispatcher retries the destroy."""
    fly.limit(0)
    impatient = FlyProvider(fly_config(fly, regions=(), retry_deadline=0.3))
    fly.faults.fail_next["delete"] = 12
    dispatcher, _ = make(impatient, env, destroy_deadline=30.0)
    await dispatcher.run([upload(tmp_path, image())])
    assert fly.statuses[("delete", 503)] == 12
    assert dispatcher.totals.destroy_failures == 0
    await nothing_left(impatient, mark, fly)
    await impatient.aclose()


async def test_destroy_is_shielded_from_cancellation(
    fly: FlyApiServer, fly_provider: FlyProvider, env: WorkerEnv, mark: str, tmp_path: Path
) -> None:
    """Cancelled mid-stream, then cancelled again while the destroy is failing: the destroy
    carries on by itself, and drain() (the gateway's shutdown) waits for it."""
    dispatcher, phases = make(fly_provider, env)
    fly.faults.fail_next["delete"] = 2
    task: asyncio.Task[JobResult] = asyncio.create_task(
        dispatcher.run([upload(tmp_path, image(512))])
    )
    await phases.entered["stream"].wait()
    task.cancel()
    await phases.entered["destroy"].wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fly.statuses[("delete", 200)] == 0  # the task is gone, its destroy is not done
    await dispatcher.drain()
    # ...and carried on: two 503s, then the machine was destroyed (by the DELETE, or by
    # itself when the worker's idle timeout came first: then the DELETE found it gone)
    assert fly.statuses[("delete", 503)] == 2
    assert fly.statuses[("delete", 200)] + fly.statuses[("delete", 404)] == 1
    await nothing_left(fly_provider, mark, fly)
