"""The provider contract (uplodr.machines.base), for every provider: what the dispatcher,
the reaper and the gateway rely on. A new provider passes this suite before it is used."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from tests.machines.contract.harnesses import TOUCH, Harness
from uplodr.errors import WorkerUnavailable
from uplodr.machines.base import MARKER_TAG, MARKER_VALUE, Machine, StopReason

DEADLINE = 15.0


async def eventually(check: Callable[[], Awaitable[object]], what: str) -> object:
    end = time.monotonic() + DEADLINE
    while not (result := await check()):
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
    return result


async def destroy_all(harness: Harness, machines: list[Machine]) -> None:
    await asyncio.gather(*(harness.provider.destroy(m.id) for m in machines))
    assert await harness.provider.list({}) == []
    assert await harness.leftovers() == []


async def test_create_start_list_destroy_gone(harness: Harness) -> None:
    provider = harness.provider
    machine = await provider.create(harness.spec({"job": "j1"}))
    assert machine.id and machine.address
    # create tags the machine with what it was given, and always with the marker
    assert machine.tags["job"] == "j1" and machine.tags[MARKER_TAG] == MARKER_VALUE
    await provider.wait_started(machine, timeout=DEADLINE)
    assert await provider.failure(machine.id) is None  # running

    listed = await provider.list({"job": "j1"})
    assert [m.id for m in listed] == [machine.id]
    assert listed[0].address == machine.address and listed[0].tags["job"] == "j1"
    assert listed[0].created_at > 0
    assert await provider.list({"job": "j2"}) == []

    await provider.destroy(machine.id)
    assert await provider.list({}) == []
    assert await harness.leftovers() == []
    await provider.destroy(machine.id)  # idempotent
    await provider.destroy(harness.missing_id)  # never existed: not an error either
    with pytest.raises(WorkerUnavailable):
        await provider.wait_started(machine, timeout=1)


async def test_destroy_during_boot(harness: Harness) -> None:
    provider = harness.provider
    harness.slow_boot()
    machine = await provider.create(harness.spec())
    asked = asyncio.Event()

    async def wait() -> None:
        asked.set()
        await provider.wait_started(machine, timeout=DEADLINE)

    waiting = asyncio.create_task(wait())
    await asked.wait()
    await asyncio.sleep(0)  # one turn of the loop: the wait is at its first await, under way
    await provider.destroy(machine.id)
    # a wait in flight ends promptly (whether it saw the start or the end), never hangs; one
    # that ended while destroy ran (a provider whose destroy waits until the machine is gone)
    # ended either way too
    started = time.monotonic()
    ended_by_destroy = not waiting.done() or waiting.exception() is not None
    with pytest.raises(WorkerUnavailable) if ended_by_destroy else contextlib.nullcontext():
        await asyncio.wait_for(waiting, DEADLINE)
    assert time.monotonic() - started < DEADLINE / 2
    assert await provider.list({}) == []
    assert await harness.leftovers() == []


async def test_a_machine_that_dies_says_why(harness: Harness) -> None:
    provider = harness.provider
    machine = await provider.create(harness.spec())
    await provider.wait_started(machine, timeout=DEADLINE)
    assert await provider.failure(machine.id) is None
    await harness.crash(machine)
    reason = await eventually(lambda: provider.failure(machine.id), "failure() to say why")
    # typed, so that the lease and the pool decide from it rather than from its text
    assert reason == StopReason.killed(9) and reason.crashed
    assert str(reason) == "killed by signal 9"
    await provider.destroy(machine.id)
    assert await harness.leftovers() == []


async def test_list_never_shows_other_machines(harness: Harness) -> None:
    provider = harness.provider
    ours = await provider.create(harness.spec({"role": "database"}))
    await harness.foreign({"role": "database"})  # no marker at all
    await harness.foreign({MARKER_TAG: "something-else", "role": "database"})
    await harness.foreign({"job": "j"})
    assert [m.id for m in await provider.list({})] == [ours.id]
    assert [m.id for m in await provider.list({"role": "database"})] == [ours.id]
    assert await provider.list({"job": "j"}) == []
    # asking for another marker value does not widen the search
    assert await provider.list({MARKER_TAG: "something-else"}) == []
    await destroy_all(harness, [ours])


async def test_concurrent_creates_get_distinct_machines(harness: Harness) -> None:
    provider = harness.provider
    machines = await asyncio.gather(*(provider.create(harness.spec()) for _ in range(4)))
    assert len({m.id for m in machines}) == 4
    assert len({m.address for m in machines}) == 4
    assert {m.id for m in await provider.list({})} == {m.id for m in machines}
    await destroy_all(harness, machines)


# -- one test per capability the gateway relies on -------------------------------------------


async def test_capability_shares_host_files(harness: Harness, tmp_path: Path) -> None:
    """True: a machine writes into `host_paths` and the host sees it at the same path. (No
    store needs it any more: workers send their outputs back and the gateway publishes, so a
    local-folder store works on every provider; a provider without it is asked for none.)"""
    provider = harness.provider
    if not provider.capabilities.shares_host_files:
        assert harness.spec().host_paths == ()
        return
    folder = tmp_path / "store"
    folder.mkdir()
    spec = replace(harness.spec(env={TOUCH: str(folder / "written")}), host_paths=(folder,))
    machine = await provider.create(spec)
    await provider.wait_started(machine, timeout=DEADLINE)
    written = folder / "written"

    def seen() -> bool:  # the whole text: a file may exist a moment before it is written
        return written.exists() and written.read_text() == "written by the machine"

    await eventually(lambda: asyncio.to_thread(seen), "the machine's file on the host")
    await destroy_all(harness, [machine])


async def test_capability_default_max_machines(harness: Harness) -> None:
    """The gateway runs this many machines at once by default: the provider can hold them."""
    provider = harness.provider
    count = provider.capabilities.default_max_machines
    assert count >= 1
    machines = await asyncio.gather(*(provider.create(harness.spec()) for _ in range(count)))
    await asyncio.gather(*(provider.wait_started(m, timeout=DEADLINE) for m in machines))
    assert len({m.id for m in await provider.list({})}) == count
    await destroy_all(harness, machines)


async def test_capability_price_per_second(harness: Harness) -> None:
    """What a job's machine-second costs when no --price-per-hour is given."""
    price = harness.provider.capabilities.price_per_second
    assert math.isfinite(price) and price >= 0
    assert price == pytest.approx(harness.list_price, rel=0.05)


async def test_capability_create_rate(harness: Harness) -> None:
    """A burst of creations within the declared rate limit is never refused for its rate."""
    rate = harness.provider.capabilities.create_rate
    burst = 4 if rate is None else rate.burst
    if rate is not None:
        harness.enforce_rate(rate)
    provider = harness.provider
    machines = await asyncio.gather(*(provider.create(harness.spec()) for _ in range(burst)))
    assert harness.rate_refusals() == 0
    await destroy_all(harness, machines)


async def test_capability_can_stop(harness: Harness) -> None:
    """A provider that `can_stop` stops a machine without destroying it and starts it again (the
    pool's --pool-keep-stopped); any other refuses both with ProviderError."""
    from uplodr.errors import ProviderError

    provider = harness.provider
    machine = await provider.create(replace(harness.spec({"job": "stop"}), stoppable=True))
    await provider.wait_started(machine, timeout=DEADLINE)
    if not provider.capabilities.can_stop:
        with pytest.raises(ProviderError):
            await provider.stop(machine.id)
        with pytest.raises(ProviderError):
            await provider.start(machine.id)
        await destroy_all(harness, [machine])
        return
    await provider.stop(machine.id)
    (stopped,) = await provider.list({"job": "stop"})
    assert stopped.id == machine.id and stopped.state == "stopped"
    started = await provider.start(machine.id)
    assert started.id == machine.id
    await provider.wait_started(started, timeout=DEADLINE)
    (listed,) = await provider.list({"job": "stop"})
    assert listed.state == "started"
    await destroy_all(harness, [started])
