"""Machines that more than one job touches at once: several jobs on one machine, a machine
being stopped while a job arrives, a shutdown that meets a stopped machine being started."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.dispatch.conftest import make_dispatcher
from tests.dispatch.pool.conftest import PoolFactory, eventually
from tests.support.fake_worker import FakeWorker
from uplodr.dispatch.pool import Pool, PoolSettings
from uplodr.dispatch.worker_client import UploadSource
from uplodr.errors import UplodrError
from uplodr.machines.base import Capabilities
from uplodr.machines.memory import MemoryProvider

STOPPABLE = Capabilities(shares_host_files=True, default_max_machines=4, can_stop=True)


async def test_one_job_failing_leaves_the_other_job_on_its_machine_to_finish(
    make_pool: PoolFactory, provider: MemoryProvider, worker: FakeWorker, upload: UploadSource
) -> None:
    """--jobs-per-machine 2: job B's client hangs up (its call is cancelled). The machine may
    be in a bad state, so it takes no new job, but job A on it finishes first."""
    worker.behaviour.convert_seconds = 0.3
    pool = make_pool(max=1, idle=30, jobs_per_machine=2)
    a = asyncio.ensure_future(pool.run([upload]))
    b = asyncio.ensure_future(pool.run([upload]))
    await eventually(lambda: pool.stats().jobs_running == 2, "both jobs on the one machine")
    b.cancel()
    with pytest.raises(asyncio.CancelledError):
        await b
    result = await a
    assert result.responses and provider.created == 1
    # then it went: the next job gets a new machine
    await eventually(lambda: provider.alive == [], "the machine to be destroyed after A")
    assert (await pool.run([upload])).machine_id != result.machine_id


class StopOnSignal(MemoryProvider):
    """A stop that takes as long as the test says (Fly: POST stop, then wait for `stopped`)."""

    def __init__(self, worker: FakeWorker) -> None:
        super().__init__(worker.start, capabilities=STOPPABLE)
        self.stopping = asyncio.Event()
        self.may_stop = asyncio.Event()

    async def stop(self, machine_id: str) -> None:
        self.stopping.set()
        await self.may_stop.wait()
        await super().stop(machine_id)


async def test_a_machine_being_stopped_counts_against_pool_max(
    worker: FakeWorker, store: Path, upload: UploadSource
) -> None:
    provider = StopOnSignal(worker)
    pool = Pool(make_dispatcher(provider, store), PoolSettings(max=1, idle=0.05, keep_stopped=1))
    try:
        await pool.run([upload])
        await asyncio.wait_for(provider.stopping.wait(), 5)  # idle window over: stopping it
        job = asyncio.ensure_future(pool.run([upload]))
        await eventually(lambda: pool.stats().jobs_waiting == 1, "the job to wait")
        assert provider.created == 1  # no second machine beside the one being stopped
        provider.may_stop.set()
        await job  # on the same machine, started again
        assert provider.created == 1
    finally:
        provider.may_stop.set()
        await pool.close()
        await provider.aclose()
    assert provider.alive == []


async def test_a_shutdown_right_after_a_stopped_machine_was_asked_for_destroys_it(
    worker: FakeWorker, store: Path, upload: UploadSource
) -> None:
    provider = MemoryProvider(worker.start, capabilities=STOPPABLE)
    pool = Pool(make_dispatcher(provider, store), PoolSettings(max=1, idle=0.05, keep_stopped=1))
    await pool.run([upload])
    await eventually(lambda: pool.stats().stopped == 1, "the idle machine to be stopped")
    job = asyncio.ensure_future(pool.run([upload]))
    await asyncio.sleep(0)  # one turn: the job asked for the stopped machine, not yet started
    await pool.close()
    with pytest.raises(UplodrError):
        await job
    assert provider.alive == []  # destroyed by the pool itself, not left to the last sweep
    await provider.aclose()
