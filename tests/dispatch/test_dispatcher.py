"""The dispatcher and its leases on the in-memory provider with a fake worker: every path of a
job's life — faults, cancellation in every phase — ends with the machine destroyed and the
caller told clearly what happened."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.dispatch.conftest import make_dispatcher
from tests.support.fake_worker import FakeWorker
from tests.support.phases import PhaseWatch
from tests.support.waiting import until
from uplodr.dispatch.dispatcher import Dispatcher
from uplodr.dispatch.events import Event, EventKind
from uplodr.dispatch.job import run_job
from uplodr.dispatch.reaper import reap
from uplodr.dispatch.worker_client import UploadSource
from uplodr.errors import CorruptImage, LimitExceeded, ProviderError, WorkerUnavailable
from uplodr.machines.base import MARKER_TAG, MARKER_VALUE, StopReason
from uplodr.machines.memory import MemoryProvider
from uplodr.worker_env import WorkerEnv

K = EventKind


def record(dispatcher: Dispatcher) -> list[Event]:
    events: list[Event] = []
    dispatcher.events.subscribe(events.append)
    return events


def kinds(events: list[Event]) -> list[EventKind]:
    return [event.kind for event in events]


async def test_a_job_gets_a_machine_of_its_own_and_leaves_nothing(
    dispatcher: Dispatcher,
    provider: MemoryProvider,
    worker: FakeWorker,
    upload: UploadSource,
    store: Path,
) -> None:
    events = record(dispatcher)
    result = await dispatcher.run([upload])
    (answer,) = result.responses
    assert answer.file_name == "noise.png" and answer.folder == "t" and answer.variants
    assert provider.alive == [] and provider.created == provider.destroyed == 1
    assert kinds(events) == [
        K.CREATE_REQUESTED,
        K.CREATED,
        K.READY,
        K.JOB_STARTED,
        K.JOB_FINISHED,
        K.DESTROY_REQUESTED,
        K.DESTROYED,
        K.RELEASED,
    ]
    assert {e.lease_id for e in events} == {events[0].lease_id}
    assert {e.machine_id for e in events[1:]} == {result.machine_id}
    assert {e.job_id for e in events} == {result.job_id}  # a lease made for this one job
    assert events[4].detail == "ok"
    assert [e.at for e in events] == sorted(e.at for e in events)
    # the machine: the worker's configuration with a fresh token, the reaper's tags
    (machine_id,) = provider.specs
    spec = provider.specs[machine_id]
    (told,) = worker.envs
    assert told.token and told.stores == (str(store),) and worker.refused_calls == 0
    assert told.max_lifetime == 5.0 + 5.0 + 60.0  # boot + job timeout + the reaper's grace
    assert spec.tags[MARKER_TAG] == MARKER_VALUE and spec.tags["gateway"] == "test-gateway"
    assert spec.tags["lease"] == events[0].lease_id
    assert int(spec.tags["deadline"]) - int(spec.tags["created_at"]) == 70
    assert spec.host_paths == (store,)
    assert dispatcher.totals.machines_created == dispatcher.totals.machines_destroyed == 1


async def test_each_machine_gets_its_own_token(
    dispatcher: Dispatcher, worker: FakeWorker, upload: UploadSource
) -> None:
    await dispatcher.run([upload])
    await dispatcher.run([upload])
    tokens = [env.token for env in worker.envs]
    assert len(tokens) == 2 and tokens[0] != tokens[1] and all(tokens)


async def test_timings_and_cost(
    provider: MemoryProvider, store: Path, worker: FakeWorker, upload: UploadSource
) -> None:
    provider.faults.create_seconds = 0.05
    provider.faults.boot_seconds = 0.1
    provider.faults.destroy_seconds = 0.05
    worker.behaviour.convert_seconds = 0.1
    dispatcher = make_dispatcher(provider, store, price_per_second=0.5)
    result = await dispatcher.run([upload])
    t = result.timings
    assert t.create is not None and t.boot is not None and t.destroy is not None
    assert t.create >= 0.05 and t.boot >= 0.1 and t.destroy >= 0.05 and t.convert == 0.1
    assert t.wait is None  # a machine of its own: nothing to wait for but its create
    assert t.total >= t.create + t.boot + t.convert + t.destroy
    # machine-seconds run from create requested to destroy confirmed: the whole job here
    assert t.machine_seconds == pytest.approx(t.total, abs=0.01)
    assert result.cost == pytest.approx(t.machine_seconds * 0.5)
    assert dispatcher.totals.machine_seconds == pytest.approx(t.machine_seconds)
    assert dispatcher.totals.cost == pytest.approx(result.cost)


@pytest.mark.parametrize("phase", ["create", "boot", "stream", "destroy"])
async def test_cancelled_in_any_phase_leaves_nothing(
    dispatcher: Dispatcher,
    provider: MemoryProvider,
    worker: FakeWorker,
    upload: UploadSource,
    phase: str,
) -> None:
    provider.faults.create_seconds = 0.2  # lands on the provider's side after the cancel
    provider.faults.boot_seconds = 0.2
    provider.faults.destroy_seconds = 0.2
    worker.behaviour.stream_hangs = phase == "stream"
    watch = PhaseWatch(dispatcher.events)
    events = record(dispatcher)
    task = asyncio.create_task(dispatcher.run([upload]))
    await watch.entered[phase].wait()
    await asyncio.sleep(0.01)  # into the phase, not at its door
    assert watch.phase == phase and not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    if phase == "destroy":
        # a cancelled caller does not wait for the destroy, and does not abandon it
        assert provider.alive != []
        await dispatcher.drain()
    else:
        # the destroy was finished before the cancelled job returned
        assert K.RELEASED in kinds(events)
    assert provider.alive == [] and provider.created == 1
    assert kinds(events)[-3:] == [K.DESTROY_REQUESTED, K.DESTROYED, K.RELEASED]


async def test_cancelled_twice_the_destroy_runs_on_and_drain_waits_for_it(
    dispatcher: Dispatcher, provider: MemoryProvider, worker: FakeWorker, upload: UploadSource
) -> None:
    provider.faults.fail_destroys = 2
    worker.behaviour.stream_hangs = True
    watch = PhaseWatch(dispatcher.events)
    task = asyncio.create_task(dispatcher.run([upload]))
    await worker.streaming.wait()
    task.cancel()
    await watch.entered["destroy"].wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await dispatcher.drain()
    assert provider.calls["destroy"] == 3 and provider.alive == []


async def test_destroy_is_retried(
    dispatcher: Dispatcher, provider: MemoryProvider, upload: UploadSource
) -> None:
    provider.faults.fail_destroys = 3
    events = record(dispatcher)
    await dispatcher.run([upload])
    assert provider.calls["destroy"] == 4 and provider.alive == []
    assert K.DESTROY_FAILED not in kinds(events) and dispatcher.totals.destroy_failures == 0


async def test_a_destroy_that_keeps_failing_is_left_to_the_reaper(
    provider: MemoryProvider, store: Path, upload: UploadSource
) -> None:
    dispatcher = make_dispatcher(provider, store, destroy_deadline=0.3)
    provider.faults.fail_destroys = 1_000_000
    events = record(dispatcher)
    result = await dispatcher.run([upload])  # the job itself succeeded
    assert result.responses
    assert K.DESTROY_FAILED in kinds(events) and dispatcher.totals.destroy_failures == 1
    assert result.timings.machine_seconds > 0  # it still billed
    # the machine carries its deadline: the reaper destroys it once that passed
    (left,) = await provider.list({})
    assert left.id == result.machine_id
    provider.faults.fail_destroys = 0
    deadline = float(left.tags["deadline"])
    assert (await reap(provider, older_than=None)).destroyed == []  # not yet
    assert deadline > time.time()
    assert (await reap(provider, older_than=0)).destroyed == [left.id]


async def test_lost_create_answer_the_machine_is_found_by_its_tag(
    dispatcher: Dispatcher, provider: MemoryProvider, upload: UploadSource
) -> None:
    provider.faults.lose_create_answers = 1
    events = record(dispatcher)
    with pytest.raises(WorkerUnavailable, match="answer was lost"):
        await dispatcher.run([upload])
    assert provider.created == 1 and provider.alive == []
    (requested,) = [e for e in events if e.kind is K.DESTROY_REQUESTED]
    assert requested.machine_id is not None and requested.machine_id.startswith("mem-")
    assert dispatcher.totals.machine_seconds > 0


async def test_refused_create_looks_for_nothing(
    dispatcher: Dispatcher, provider: MemoryProvider, upload: UploadSource
) -> None:
    provider.faults.refuse_creates = 1
    events = record(dispatcher)
    with pytest.raises(ProviderError):
        await dispatcher.run([upload])
    assert provider.calls["list"] == 0 and provider.created == 0
    assert kinds(events) == [K.CREATE_REQUESTED, K.RELEASED]
    assert events[-1].machine_seconds == 0.0


async def test_failed_create_is_looked_for_once(
    dispatcher: Dispatcher, provider: MemoryProvider, upload: UploadSource
) -> None:
    provider.faults.fail_creates = 1
    with pytest.raises(WorkerUnavailable, match="create failed"):
        await dispatcher.run([upload])
    assert provider.calls["list"] == 1 and provider.created == 0
    assert dispatcher.totals.machine_seconds == 0


async def test_boot_timeout(provider: MemoryProvider, store: Path, upload: UploadSource) -> None:
    dispatcher = make_dispatcher(provider, store, boot_timeout=0.3)
    provider.faults.boot_seconds = 60
    started = time.monotonic()
    with pytest.raises(WorkerUnavailable, match=r"within 0\.3"):
        await dispatcher.run([upload])
    assert time.monotonic() - started < 3
    assert provider.alive == [] and provider.destroyed == 1


async def test_a_worker_that_never_answers_ping_meets_the_boot_deadline(
    provider: MemoryProvider, store: Path, worker: FakeWorker, upload: UploadSource
) -> None:
    dispatcher = make_dispatcher(provider, store, boot_timeout=0.3)
    worker.behaviour.ping_hangs = True
    with pytest.raises(WorkerUnavailable, match=r"within 0\.3"):
        await dispatcher.run([upload])
    assert provider.alive == []


async def test_a_machine_that_dies_while_starting_fails_fast(
    dispatcher: Dispatcher, provider: MemoryProvider, upload: UploadSource
) -> None:
    provider.faults.die_while_booting = StopReason.exited(3)
    started = time.monotonic()
    with pytest.raises(WorkerUnavailable, match="worker stopped: exited with code 3"):
        await dispatcher.run([upload])
    assert time.monotonic() - started < 2  # not the 5 s boot deadline
    assert provider.alive == []


async def test_a_worker_that_dies_before_its_first_ping_fails_fast(
    dispatcher: Dispatcher, provider: MemoryProvider, worker: FakeWorker, upload: UploadSource
) -> None:
    """Started, but its worker exits before answering (bad storage credentials, say)."""
    worker.behaviour.ping_hangs = True
    watch = PhaseWatch(dispatcher.events)
    task = asyncio.create_task(dispatcher.run([upload]))
    await watch.entered["boot"].wait()
    started = time.monotonic()
    await provider.die(watch.machine_id, StopReason.exited(2))
    with pytest.raises(WorkerUnavailable, match="worker stopped: exited with code 2"):
        await task
    assert time.monotonic() - started < 2  # the failure poll, not the 5 s boot deadline
    assert provider.alive == []


async def test_worker_dies_mid_job_clear_error(
    dispatcher: Dispatcher, provider: MemoryProvider, worker: FakeWorker, upload: UploadSource
) -> None:
    worker.behaviour.die_mid_stream = StopReason.killed(9)
    events = record(dispatcher)
    with pytest.raises(WorkerUnavailable, match="worker stopped: killed by signal 9"):
        await dispatcher.run([upload])
    assert provider.alive == []
    (finished,) = [e for e in events if e.kind is K.JOB_FINISHED]
    assert finished.detail == "worker_unavailable"


async def test_out_of_memory_mid_job_is_a_limit(
    dispatcher: Dispatcher, provider: MemoryProvider, worker: FakeWorker, upload: UploadSource
) -> None:
    worker.behaviour.die_mid_stream = StopReason.out_of_memory(512)
    with pytest.raises(LimitExceeded, match="needs more memory than the worker has"):
        await dispatcher.run([upload])
    assert provider.alive == []


async def test_wrong_answers_are_clear_errors(
    dispatcher: Dispatcher, provider: MemoryProvider, worker: FakeWorker, upload: UploadSource
) -> None:
    worker.behaviour.wrong_nonce = True
    with pytest.raises(WorkerUnavailable, match="wrong nonce"):
        await dispatcher.run([upload])
    worker.behaviour.wrong_nonce = False
    worker.behaviour.extra_answers = 1
    with pytest.raises(WorkerUnavailable, match=r"answered 2 file\(s\) for the 1"):
        await dispatcher.run([upload])
    assert provider.alive == [] and provider.destroyed == 2


async def test_the_workers_own_error_passes_through(
    dispatcher: Dispatcher, provider: MemoryProvider, worker: FakeWorker, upload: UploadSource
) -> None:
    worker.behaviour.error = CorruptImage("'noise.png' cannot be decoded")
    with pytest.raises(CorruptImage, match="cannot be decoded"):
        await dispatcher.run([upload])
    assert provider.alive == []
    assert provider.calls["failure"] == 0  # no need to ask the provider why


async def test_heartbeats_keep_the_worker_alive_while_the_lease_is_held(
    provider: MemoryProvider, store: Path, worker: FakeWorker, upload: UploadSource
) -> None:
    dispatcher = make_dispatcher(provider, store, idle_timeout=0.3)  # a Ping every 0.1 s
    worker.behaviour.convert_seconds = 0.55
    await dispatcher.run([upload])
    assert worker.pings >= 1 + 4  # the readiness Ping, then heartbeats during the job
    pings = worker.pings

    def beating() -> list[asyncio.Task[object]]:
        return [
            task
            for task in asyncio.all_tasks()
            if task.get_coro().__qualname__ == "MachineLease._beat" and not task.done()  # type: ignore[union-attr]
        ]

    # none once the lease is released: its heartbeat task ended (a negative checked by the
    # state that would send a Ping, not by sleeping and counting)
    await until(lambda: not beating(), "the heartbeat to end")
    assert worker.pings == pings and provider.alive == []


def test_heartbeat_interval_follows_the_idle_timeout(provider: MemoryProvider) -> None:
    from uplodr.dispatch.dispatcher import heartbeat_interval
    from uplodr.dispatch.lease import LeaseSettings

    assert heartbeat_interval(LeaseSettings(), WorkerEnv(idle_timeout=30)) == 5.0
    assert heartbeat_interval(LeaseSettings(), WorkerEnv(idle_timeout=3)) == 1.0
    assert heartbeat_interval(LeaseSettings(), WorkerEnv(idle_timeout=0.01)) == 0.1


async def test_an_observer_that_fails_breaks_nothing(
    dispatcher: Dispatcher, provider: MemoryProvider, upload: UploadSource
) -> None:
    def broken(event: Event) -> None:
        raise RuntimeError("observer bug")

    dispatcher.events.subscribe(broken)
    result = await dispatcher.run([upload])
    assert result.responses and provider.alive == []


async def test_a_lease_can_hold_its_machine_across_jobs(
    dispatcher: Dispatcher, provider: MemoryProvider, worker: FakeWorker, upload: UploadSource
) -> None:
    """What a pool will do: one machine, several jobs, one destroy at the end."""
    events = record(dispatcher)
    async with dispatcher.lease() as lease:
        first = await run_job(lease, "job-1", [upload], timeout=5)
        second = await run_job(lease, "job-2", [upload, upload], timeout=5)
        assert lease.machine is not None and provider.alive == [lease.machine.id]
    assert len(first) == 1 and len(second) == 2
    assert provider.created == provider.destroyed == 1 and provider.alive == []
    jobs = [(e.kind, e.job_id) for e in events if e.kind in (K.JOB_STARTED, K.JOB_FINISHED)]
    assert jobs == [
        (K.JOB_STARTED, "job-1"),
        (K.JOB_FINISHED, "job-1"),
        (K.JOB_STARTED, "job-2"),
        (K.JOB_FINISHED, "job-2"),
    ]
    assert {e.job_id for e in events if e.kind is K.CREATED} == {None}  # not one job's lease
    assert worker.streams == 2 and len(worker.envs) == 1


async def test_a_lease_is_one_machine(
    dispatcher: Dispatcher, provider: MemoryProvider, upload: UploadSource
) -> None:
    async with dispatcher.lease() as lease:
        with pytest.raises(RuntimeError, match="one machine per lease"):
            await lease.acquire()
    # a job that reaches a released lease (its machine went for another job's failure) is a
    # 503 the client may retry, never a 500
    with pytest.raises(WorkerUnavailable, match="the job's machine is being destroyed"):
        await run_job(lease, "late", [upload], timeout=5)
    assert provider.created == 1 and provider.alive == []
