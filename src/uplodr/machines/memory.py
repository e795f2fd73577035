"""An in-memory provider: machines that are entries in a dict, for tests of what sits on top.

Shipped with uplodr, like httpx's `MockTransport`: the dispatcher and the gateway can be tested
on their own, in milliseconds, with faults a real provider only shows now and then — a create
that fails, or whose answer is lost after the machine was made, a destroy that fails N times, a
machine that dies with a reason, a slow boot (`MemoryFaults`, changeable at any time). It passes
the same contract suite as the real providers (`tests/machines/contract/`). With
`Capabilities(can_stop=True)` its machines can be stopped and started again (the hook runs again).

It knows nothing of images or workers. To make its machines answer gRPC, give it `start_worker`:
a hook that starts something listening for a machine (tests pass an in-process fake worker) and
returns its address, how to stop it, and optionally a future that resolves with a
`StopReason` when it stops by itself. Without a hook, a machine's address answers nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from uplodr.errors import ProviderError, WorkerUnavailable
from uplodr.machines.base import (
    Capabilities,
    Machine,
    MachineSpec,
    StopReason,
    has_tags,
    marked,
)


@dataclass
class RunningWorker:
    """What `start_worker` started for one machine."""

    address: str
    stop: Callable[[], Awaitable[None]]
    # Resolves with a reason (`StopReason.exited(3)`) when the worker stops by itself.
    exited: asyncio.Future[StopReason] | None = None


StartWorker = Callable[[MachineSpec], Awaitable[RunningWorker]]


@dataclass
class MemoryFaults:
    """What goes wrong, and how slowly. Counters count down as faults fire."""

    create_seconds: float = 0.0  # a create takes this long (and lands even if its caller left)
    boot_seconds: float = 0.0  # created → started
    destroy_seconds: float = 0.0  # a destroy takes this long
    fail_creates: int = 0  # the next N creates fail and make nothing (WorkerUnavailable)
    refuse_creates: int = 0  # the next N creates are refused (ProviderError: configuration)
    lose_create_answers: int = 0  # the next N creates make the machine, then fail
    fail_destroys: int = 0  # the next N destroys fail (WorkerUnavailable) and destroy nothing
    fail_lists: int = 0  # the next N lists fail (WorkerUnavailable)
    fail_checks: int = 0  # the next N checks fail (WorkerUnavailable: an outage)
    refuse_checks: int = 0  # the next N checks are refused (ProviderError: configuration)
    # the next machine stops while booting, for this reason
    die_while_booting: StopReason | None = None

    def take(self, name: str) -> bool:
        """Use up one of the counter `name`; True when it fired."""
        left: int = getattr(self, name)
        if left <= 0:
            return False
        setattr(self, name, left - 1)
        return True


@dataclass
class _MemoryMachine:
    id: str
    tags: dict[str, str]
    address: str
    created_at: float
    state: str = "created"  # → started → stopped; destroyed machines leave the dict
    reason: StopReason | None = None  # why it stopped
    worker: RunningWorker | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def set_state(self, state: str, reason: StopReason | None = None) -> None:
        self.state, self.reason = state, reason
        self.changed.set()
        self.changed = asyncio.Event()

    def public(self) -> Machine:
        return Machine(self.id, self.address, dict(self.tags), self.created_at, self.state)


class MemoryProvider:
    """Machines in a dict. `calls` counts the calls by name; `created` and `destroyed` count
    machines; `alive` lists the ids of machines not destroyed yet."""

    name = "memory"

    def __init__(
        self,
        start_worker: StartWorker | None = None,
        *,
        faults: MemoryFaults | None = None,
        capabilities: Capabilities | None = None,
    ) -> None:
        self.start_worker = start_worker
        self.faults = faults or MemoryFaults()
        self.capabilities = capabilities or Capabilities(
            shares_host_files=True, default_max_machines=16
        )
        self.calls: Counter[str] = Counter()
        self.closed = False
        self.created = 0
        self.destroyed = 0
        self.started_again = 0  # stopped machines started again
        self.specs: dict[str, MachineSpec] = {}  # what each machine was created with
        self._machines: dict[str, _MemoryMachine] = {}
        self._gone: dict[str, _MemoryMachine] = {}
        self._creating: set[asyncio.Task[Machine]] = set()

    @property
    def alive(self) -> list[str]:
        return sorted(self._machines)

    # -- the Provider protocol -----------------------------------------------------------

    async def create(self, spec: MachineSpec) -> Machine:
        self.calls["create"] += 1
        if self.faults.take("refuse_creates"):
            raise ProviderError("memory provider: create refused (injected)")
        if self.faults.take("fail_creates"):
            raise WorkerUnavailable("memory provider: create failed (injected)")
        # Like a request already sent, a create lands even when its caller is cancelled.
        task = asyncio.create_task(self._create(spec))
        self._creating.add(task)
        task.add_done_callback(self._creating.discard)
        return await asyncio.shield(task)

    async def wait_started(self, machine: Machine, timeout: float) -> None:
        self.calls["wait_started"] += 1
        try:
            async with asyncio.timeout(timeout):
                while (found := self._machines.get(machine.id)) and found.state == "created":
                    await found.changed.wait()
        except TimeoutError:
            raise WorkerUnavailable(
                f"machine {machine.id} did not start within {timeout:g} s"
            ) from None
        if found is None:
            raise WorkerUnavailable(f"machine {machine.id} is gone")
        if found.state != "started":
            raise WorkerUnavailable(f"machine {machine.id} will not start: {found.reason}")

    async def list(self, tags: Mapping[str, str]) -> list[Machine]:
        self.calls["list"] += 1
        if self.faults.take("fail_lists"):
            raise WorkerUnavailable("memory provider: list failed (injected)")
        return [m.public() for m in self._machines.values() if has_tags(m.tags, tags)]

    async def destroy(self, machine_id: str) -> None:
        self.calls["destroy"] += 1
        await asyncio.sleep(self.faults.destroy_seconds)
        if self.faults.take("fail_destroys"):
            raise WorkerUnavailable(f"memory provider: destroy of {machine_id} failed (injected)")
        found = self._machines.pop(machine_id, None)
        if found is None:
            return
        found.set_state("destroyed", found.reason)
        await self._stop(found)
        self._gone[machine_id] = found
        self.destroyed += 1

    async def stop(self, machine_id: str) -> None:
        self.calls["stop"] += 1
        self._stoppable(machine_id)
        found = self._machines.get(machine_id)
        if found is None:
            raise WorkerUnavailable(f"memory provider: machine {machine_id} is gone")
        if found.state != "stopped":
            found.set_state("stopped", None)
            await self._stop(found)

    async def start(self, machine_id: str) -> Machine:
        self.calls["start"] += 1
        self._stoppable(machine_id)
        found = self._machines.get(machine_id)
        if found is None:
            raise WorkerUnavailable(f"memory provider: machine {machine_id} is gone")
        if found.state == "stopped":
            spec = self.specs[machine_id]
            worker = None if self.start_worker is None else await self.start_worker(spec)
            found.worker = worker
            found.address = worker.address if worker is not None else found.address
            found.set_state("created")
            self.started_again += 1
            self._start(found, self._boot(found, None))
            if worker is not None and worker.exited is not None:
                self._start(found, self._watch(found, worker.exited))
        return found.public()

    async def failure(self, machine_id: str) -> StopReason | None:
        self.calls["failure"] += 1
        if (found := self._machines.get(machine_id)) is not None:
            return found.reason
        gone = self._gone.get(machine_id)
        # like Fly and Docker: a destroyed machine says why it stopped, else that it is gone
        reason = gone.reason if gone is not None else None
        return reason or StopReason.gone(f"machine {machine_id} no longer exists")

    async def check(self) -> None:
        self.calls["check"] += 1
        if self.closed:
            raise ProviderError("memory provider: closed")
        if self.faults.take("refuse_checks"):
            raise ProviderError("memory provider: refused by configuration (fault)")
        if self.faults.take("fail_checks"):
            raise WorkerUnavailable("memory provider: unreachable (fault)")

    async def aclose(self) -> None:
        """Stop every worker hook (the machines stay listed: a test sees what was leaked)."""
        self.closed = True
        if self._creating:
            await asyncio.gather(*self._creating, return_exceptions=True)
        for found in self._machines.values():
            await self._stop(found)

    # -- knobs -------------------------------------------------------------------------------

    async def die(self, machine_id: str, reason: StopReason) -> None:
        """The machine's worker stops for `reason` (a crash, the OOM killer); the machine stays
        until destroyed, and `failure()` says why."""
        found = self._machines.get(machine_id)
        if found is not None and found.state != "stopped":
            found.set_state("stopped", reason)
            await self._stop(found)

    def add_foreign(self, tags: Mapping[str, str]) -> str:
        """A machine someone else made (no uplodr marker unless `tags` has it); its id."""
        machine_id = f"foreign-{secrets.token_hex(6)}"
        self._machines[machine_id] = _MemoryMachine(
            machine_id, dict(tags), "memory:nowhere", time.time(), state="started"
        )
        return machine_id

    # -- internals -----------------------------------------------------------------------

    def _stoppable(self, machine_id: str) -> None:
        if not self.capabilities.can_stop:
            raise ProviderError("memory provider: machines cannot be stopped (can_stop is off)")

    async def _create(self, spec: MachineSpec) -> Machine:
        await asyncio.sleep(self.faults.create_seconds)
        machine_id = f"mem-{secrets.token_hex(6)}"
        worker = None if self.start_worker is None else await self.start_worker(spec)
        address = worker.address if worker is not None else f"memory:{machine_id}"
        found = _MemoryMachine(machine_id, marked(spec.tags), address, time.time(), worker=worker)
        self._machines[machine_id] = found
        self.specs[machine_id] = spec
        self.created += 1
        dies = self.faults.die_while_booting
        self.faults.die_while_booting = None
        self._start(found, self._boot(found, dies))
        if worker is not None and worker.exited is not None:
            self._start(found, self._watch(found, worker.exited))
        if self.faults.take("lose_create_answers"):
            raise WorkerUnavailable("memory provider: the create answer was lost (injected)")
        return found.public()

    def _start(self, found: _MemoryMachine, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        found.tasks.add(task)
        task.add_done_callback(found.tasks.discard)

    async def _boot(self, found: _MemoryMachine, dies: StopReason | None) -> None:
        await asyncio.sleep(self.faults.boot_seconds)
        if dies is not None:
            await self.die(found.id, dies)
        elif found.state == "created":
            found.set_state("started")

    async def _watch(self, found: _MemoryMachine, exited: asyncio.Future[StopReason]) -> None:
        await self.die(found.id, await exited)

    async def _stop(self, found: _MemoryMachine) -> None:
        for task in list(found.tasks):
            if task is not asyncio.current_task():
                task.cancel()
        worker, found.worker = found.worker, None
        if worker is not None:
            with contextlib.suppress(Exception):
                await worker.stop()
