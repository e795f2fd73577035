"""The pool's rules on the in-memory provider: a burst reuses at most `max` machines and they go
after the idle window; `idle 0` is a machine per job; dead, unhealthy and worn machines are
replaced, never reused; a job fails only for its own machine; shutdown drains."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from tests.dispatch.pool.conftest import PoolFactory, eventually
from tests.support.fake_worker import FakeWorker
from uplodr.dispatch.events import Event, EventKind
from uplodr.dispatch.pool import PoolSettings
from uplodr.dispatch.worker_client import UploadSource
from uplodr.errors import WorkerUnavailable
from uplodr.machines.base import Capabilities, RateLimit
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
    await provider.die(first.machine_id, "killed by signal 9")
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
    await provider.die(victim, "killed by signal 9")
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


async def test_a_job_that_failed_on_its_input_keeps_the_machine(
    make_pool: PoolFactory, provider: MemoryProvider, worker: FakeWorker, upload: UploadSource
) -> None:
    from uplodr.errors import CorruptImage

    pool = make_pool(max=1, idle=30)
    worker.behaviour.error = CorruptImage("not an image")
    with pytest.raises(CorruptImage):
        await pool.run([upload])
    worker.behaviour.error = None
    await pool.run([upload])
    assert provider.created == 1


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
