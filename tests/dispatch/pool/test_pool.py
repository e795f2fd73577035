"""The pool's rules on the in-memory provider: a burst reuses at most `max` machines and they go
after the idle window; `idle 0` is a machine per job; dead, unhealthy and worn machines are
replaced, never reused; a job fails only for its own machine; shutdown drains."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from pathlib import Path

import pytest

from tests.dispatch.conftest import make_dispatcher
from tests.dispatch.pool.conftest import PoolFactory, eventually
from tests.support.fake_worker import FakeWorker
from uplodr.dispatch.dispatcher import Dispatcher
from uplodr.dispatch.events import Event, EventKind
from uplodr.dispatch.pool import Pool, PoolSettings, _Member, _State
from uplodr.dispatch.worker_client import UploadSource
from uplodr.errors import (
    CorruptImage,
    DeadlineExceeded,
    LimitExceeded,
    StorageUnavailable,
    TooLarge,
    UnsupportedImage,
    UplodrError,
    WorkerUnavailable,
)
from uplodr.machines.base import Capabilities, RateLimit, StopReason
from uplodr.machines.memory import MemoryProvider

K = EventKind


async def test_a_burst_reuses_at_most_max_machines_then_scales_to_zero(
    make_pool: PoolFactory, provider: MemoryProvider, worker: FakeWorker, upload: UploadSource
) -> None:
    worker.behaviour.convert_seconds = 0.02
    pool = make_pool(max=2, idle=0.2)
    results = await asyncio.gather(*(pool.run([upload]) for _ in range(12)))
    assert all(r.responses[0].variants for r in results)
    assert provider.created == pool.dispatcher.totals.machines_created <= 2
    assert len({r.machine_id for r in results}) == provider.created
    # each job's share of its machine is at most its own time on it, and adds up to busy time
    assert all(0 < r.timings.machine_seconds <= r.timings.total for r in results)
    assert pool.stats().machines == provider.created and pool.stats().busy == 0
    await eventually(lambda: provider.alive == [], "the idle machines to be destroyed")
    stats = pool.stats()
    assert stats.machines == 0 and stats.idle_seconds >= 0.2 * provider.created * 0.9
    assert pool.dispatcher.totals.boot_seconds > 0


async def test_pool_idle_0_gives_every_job_a_machine_of_its_own(
    make_pool: PoolFactory, provider: MemoryProvider, upload: UploadSource
) -> None:
    pool = make_pool(max=2, idle=0)
    results = [await pool.run([upload]) for _ in range(3)]
    assert provider.created == 3 and len({r.machine_id for r in results}) == 3
    assert provider.alive == []  # each destroyed with its job, as without a pool
    assert all(r.timings.create is not None and r.timings.boot is not None for r in results)
    assert all(r.timings.wait is None for r in results)  # the answers read as before the pool


async def test_sequential_jobs_reuse_one_warm_machine(
    make_pool: PoolFactory, provider: MemoryProvider, upload: UploadSource
) -> None:
    pool = make_pool(max=4, idle=30)
    results = [await pool.run([upload]) for _ in range(5)]
    assert provider.created == 1 and len({r.machine_id for r in results}) == 1
    assert provider.alive == [results[0].machine_id]


async def test_max_jobs_per_machine_recycles(
    make_pool: PoolFactory, provider: MemoryProvider, upload: UploadSource
) -> None:
    pool = make_pool(max=1, idle=30, max_jobs_per_machine=3)
    machines = [(await pool.run([upload])).machine_id for _ in range(7)]
    a, b, c = machines[0], machines[3], machines[6]
    assert machines == [a, a, a, b, b, b, c] and len({a, b, c}) == 3
    await eventually(lambda: provider.destroyed == 2, "the worn machines to be destroyed")
    assert provider.alive == [c]


async def test_a_machine_killed_between_jobs_is_replaced(
    make_pool: PoolFactory, provider: MemoryProvider, upload: UploadSource
) -> None:
    pool = make_pool(max=1, idle=30)
    first = await pool.run([upload])
    await provider.die(first.machine_id, StopReason.killed(9))
    second = await pool.run([upload])  # nothing of it ran on the dead one: not an error
    assert second.responses[0].variants and second.machine_id != first.machine_id
    assert provider.alive == [second.machine_id]


async def test_a_machine_killed_mid_job_fails_only_that_job(
    make_pool: PoolFactory, provider: MemoryProvider, worker: FakeWorker, upload: UploadSource
) -> None:
    worker.behaviour.convert_seconds = 0.5
    pool = make_pool(max=2, idle=30)
    jobs = [asyncio.create_task(pool.run([upload])) for _ in range(2)]
    await eventually(lambda: pool.stats().busy == 2, "both jobs to run")
    await eventually(lambda: worker.streams == 2, "both jobs to stream")
    victim = provider.alive[0]
    await provider.die(victim, StopReason.killed(9))
    outcomes = await asyncio.gather(*jobs, return_exceptions=True)
    (failed,) = [o for o in outcomes if isinstance(o, BaseException)]
    (ok,) = [o for o in outcomes if not isinstance(o, BaseException)]
    assert isinstance(failed, WorkerUnavailable)
    assert str(failed) == "worker stopped: killed by signal 9"
    assert ok.machine_id != victim and ok.responses[0].variants
    await eventually(lambda: victim not in provider.alive, "the dead machine to be destroyed")
    assert provider.alive == [ok.machine_id]  # the survivor stays pooled


async def test_a_machine_that_fails_its_health_check_is_destroyed_not_reused(
    make_pool: PoolFactory, provider: MemoryProvider, worker: FakeWorker, upload: UploadSource
) -> None:
    pool = make_pool(max=1, idle=30, health_timeout=0.1)
    first = await pool.run([upload])
    worker.behaviour.ping_delay = 0.3  # slower than the health check, within the boot deadline
    second = await pool.run([upload])
    assert second.machine_id != first.machine_id and second.responses[0].variants
    assert provider.created == 2 and provider.alive == [second.machine_id]


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (CorruptImage("not an image"), "corrupt_image"),
        (UnsupportedImage("not an allowed format"), "unsupported_image"),
        (TooLarge("over the byte limit"), "too_large"),
        (LimitExceeded("over the pixel limit"), "limit_exceeded"),
    ],
)
async def test_a_machine_that_met_a_bad_file_is_never_reused(
    make_pool: PoolFactory,
    provider: MemoryProvider,
    worker: FakeWorker,
    upload: UploadSource,
    error: UplodrError,
    kind: str,
) -> None:
    """Its worker decoded bytes that may have been crafted to take it over: destroyed, and
    counted by the error's kind; the next job gets a new machine."""
    pool = make_pool(max=1, idle=30)
    good = await pool.run([upload])
    worker.behaviour.error = error
    with pytest.raises(type(error)):
        await pool.run([upload])
    worker.behaviour.error = None
    after = await pool.run([upload])
    assert after.machine_id != good.machine_id and provider.created == 2
    assert good.machine_id not in provider.alive
    assert pool.stats().retired_bad_input == {kind: 1}


@pytest.mark.parametrize(
    ("reason", "kind"),
    [(StopReason.out_of_memory(512), "out_of_memory"), (StopReason.killed(11), "crash")],
)
async def test_a_worker_that_died_on_its_input_counts_as_a_bad_input(
    make_pool: PoolFactory,
    provider: MemoryProvider,
    worker: FakeWorker,
    upload: UploadSource,
    reason: StopReason,
    kind: str,
) -> None:
    """Out of memory and a crash mid-job (a decoder's SIGSEGV) are the input's, decided from
    the provider's typed reason: the retirement is counted as such."""
    pool = make_pool(max=1, idle=30)
    worker.behaviour.die_mid_stream = reason
    with pytest.raises(UplodrError) as raised:
        await pool.run([upload])
    assert raised.value.about_input and raised.value.kind == kind
    worker.behaviour.die_mid_stream = None
    await pool.run([upload])
    assert provider.created == 2 and pool.stats().retired_bad_input == {kind: 1}


async def test_a_job_past_its_deadline_retires_its_machine(
    provider: MemoryProvider, worker: FakeWorker, store: Path, upload: UploadSource
) -> None:
    dispatcher = make_dispatcher(provider, store)
    dispatcher.settings = replace(dispatcher.settings, job_timeout=0.3)
    pool = Pool(dispatcher, PoolSettings(max=1))
    try:
        worker.behaviour.convert_seconds = 2.0  # longer than the job may take
        with pytest.raises(DeadlineExceeded):
            await pool.run([upload])
        worker.behaviour.convert_seconds = 0.0
        await pool.run([upload])
        assert provider.created == 2 and pool.stats().retired_bad_input == {"deadline": 1}
    finally:
        await pool.close()
    assert provider.alive == []


async def test_a_failure_that_is_not_the_inputs_is_not_counted_as_one(
    make_pool: PoolFactory, provider: MemoryProvider, worker: FakeWorker, upload: UploadSource
) -> None:
    pool = make_pool(max=1, idle=30)
    worker.behaviour.error = StorageUnavailable("the store is down")
    with pytest.raises(StorageUnavailable):
        await pool.run([upload])
    worker.behaviour.error = None
    await pool.run([upload])
    assert provider.created == 2 and pool.stats().retired_bad_input == {}


async def test_a_bad_file_drains_its_machine_while_its_other_jobs_finish(
    make_pool: PoolFactory, provider: MemoryProvider, worker: FakeWorker, upload: UploadSource
) -> None:
    """--jobs-per-machine 2: job A fails on its input while job B runs on the same machine.
    B finishes there; the machine takes nothing new (job C gets another machine) and is
    destroyed once B is done."""
    pool = make_pool(max=2, idle=30, jobs_per_machine=2)
    first = await pool.run([upload])
    worker.behaviour.convert_seconds = 0.5
    b = asyncio.ensure_future(pool.run([upload]))
    await eventually(lambda: worker.streams == 2, "job B to stream")
    worker.behaviour.convert_seconds = 0.0
    worker.behaviour.error = CorruptImage("not an image")
    with pytest.raises(CorruptImage):
        await pool.run([upload])  # job A, beside B on the one machine
    worker.behaviour.error = None
    c = await pool.run([upload])
    assert c.machine_id != first.machine_id  # the drained machine took nothing new
    assert first.machine_id in provider.alive  # B still runs on it
    assert (await b).machine_id == first.machine_id  # and finished there
    await eventually(lambda: first.machine_id not in provider.alive, "the drained machine to go")
    assert pool.stats().retired_bad_input == {"corrupt_image": 1}


async def test_jobs_that_take_a_machine_during_its_health_check_share_the_answer(
    make_pool: PoolFactory, provider: MemoryProvider, worker: FakeWorker, upload: UploadSource
) -> None:
    """--jobs-per-machine 2: job A's health Ping of a reused machine fails while job B takes
    the same machine. B must not run on it (it is destroyed for A's failed Ping, under B's
    call: before, a 503 or a RuntimeError's 500): both go to a new machine, nothing of them
    ran on the old one."""
    pool = make_pool(max=2, idle=30, jobs_per_machine=2, health_timeout=0.1)
    first = await pool.run([upload])
    worker.behaviour.ping_delay = 0.3  # slower than the health check, within the boot deadline
    worker.behaviour.convert_seconds = 0.3
    results = await asyncio.gather(pool.run([upload]), pool.run([upload]))
    assert {r.machine_id for r in results} & {first.machine_id} == set()
    assert all(r.responses[0].variants for r in results)
    assert first.machine_id not in provider.alive


async def test_pool_min_keeps_machines_ready(
    make_pool: PoolFactory, provider: MemoryProvider, upload: UploadSource
) -> None:
    pool = make_pool(min=1, max=2, idle=0.05)
    await pool.start()
    await eventually(lambda: pool.stats().idle == 1, "the minimum machine to be ready")
    result = await pool.run([upload])
    assert result.timings.wait is not None and result.timings.wait < 1 and provider.created == 1
    # two jobs at once grow to two, then the idle window takes the pool back to its minimum
    await asyncio.gather(*(pool.run([upload]) for _ in range(2)))
    await eventually(lambda: len(provider.alive) == 1, "the pool to shrink to its minimum")
    assert pool.stats().machines == 1


async def test_close_lets_running_jobs_finish_and_destroys_every_machine(
    make_pool: PoolFactory, provider: MemoryProvider, worker: FakeWorker, upload: UploadSource
) -> None:
    pool = make_pool(max=2, idle=30)
    await pool.run([upload])  # one idle machine
    worker.behaviour.convert_seconds = 0.3
    running = asyncio.create_task(pool.run([upload]))
    await eventually(lambda: worker.streams == 2, "the second job to stream")
    await pool.close()
    assert (await running).responses[0].variants  # it finished
    await pool.dispatcher.drain()
    assert provider.alive == []
    with pytest.raises(WorkerUnavailable, match="shutting down"):
        await pool.run([upload])


async def test_pooled_machines_end_themselves_and_are_reaped_by_their_tags(
    make_pool: PoolFactory, provider: MemoryProvider, worker: FakeWorker, upload: UploadSource
) -> None:
    pool = make_pool(max=1, idle=30, machine_lifetime=120)
    result = await pool.run([upload])
    spec = provider.specs[result.machine_id]
    (told,) = worker.envs
    lifetime = 120 + 5.0 + 5.0 + 60.0  # new jobs for 120 s, then one job: boot + job + grace
    assert pool.lifetime == lifetime and told.max_lifetime == lifetime
    assert int(spec.tags["deadline"]) - int(spec.tags["created_at"]) == int(lifetime)
    # while pooled, the lease's heartbeat keeps an idle worker from ending itself
    assert told.idle_timeout == 30.0


async def test_creates_are_paced_by_the_providers_rate(
    worker: FakeWorker, store: Path, upload: UploadSource
) -> None:
    from tests.dispatch.conftest import make_dispatcher
    from uplodr.dispatch.pool import Pool

    rate = RateLimit(per_second=20.0, burst=1)
    capabilities = Capabilities(shares_host_files=True, default_max_machines=4, create_rate=rate)
    provider = MemoryProvider(worker.start, capabilities=capabilities)
    worker.behaviour.convert_seconds = 0.2
    pool = Pool(make_dispatcher(provider, store), PoolSettings(max=4, idle=30))
    asked: list[Event] = []
    pool.dispatcher.events.subscribe(
        lambda e: asked.append(e) if e.kind is K.CREATE_REQUESTED else None
    )
    try:
        await asyncio.gather(*(pool.run([upload]) for _ in range(4)))
    finally:
        await pool.close()
        await provider.aclose()
    assert len(asked) == 4
    gaps = [b.at - a.at for a, b in itertools.pairwise(asked)]
    assert min(gaps) >= 0.9 / rate.per_second, gaps  # at most one create per 1/rate seconds


def test_settings_that_do_not_fit_are_refused_in_one_line() -> None:
    for settings, words in (
        ({"min": 3, "max": 2}, "--pool-min 3 is above --pool-max 2"),
        ({"idle": 0, "min": 1}, "--pool-idle 0 is a machine per job"),
        ({"idle": -1}, "--pool-idle must not be negative"),
        ({"jobs_per_machine": 0}, "--jobs-per-machine must be 1 or more"),
    ):
        with pytest.raises(ValueError, match=words):
            PoolSettings(**settings)


def test_a_pool_machine_moves_only_as_its_state_machine_allows(dispatcher: Dispatcher) -> None:
    """One place decides what may follow what: a retired machine never becomes ready again, a
    draining one never parks, a booting one never drains."""
    member = _Member(dispatcher.new_lease(), now=0.0)
    assert member.state is _State.BOOTING
    with pytest.raises(AssertionError, match="from booting to draining"):
        member.move(_State.DRAINING)
    member.move(_State.READY)
    member.move(_State.DRAINING)
    with pytest.raises(AssertionError, match="from draining to parking"):
        member.move(_State.PARKING)
    member.move(_State.RETIRED)
    for state in _State:
        with pytest.raises(AssertionError, match="from retired to"):
            member.move(state)
