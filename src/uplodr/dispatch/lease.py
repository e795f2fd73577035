"""One machine's life as a lease: create → started → first Ping answered … destroy.

    async with MachineLease(provider, make_spec, settings) as lease:
        ...  # jobs: Stream calls on lease.client (uplodr.dispatch.job)

Entering creates the machine, waits until the provider reports it started and its worker answers
a Ping, all under the boot deadline; a machine whose worker stops while booting fails the lease
at once with the provider's reason. While the lease is held, a heartbeat Ping keeps the worker's
idle timer from firing. Leaving destroys the machine — on every path: success, a failed job, a
boot that never finished, a cancelled task. The destroy runs as its own task, shielded from
cancellation and retried under a deadline (stamina); a caller cancelled again while it runs
leaves it running to its end (`release_task`, which the dispatcher's `drain` waits for). When
the create call failed or was cancelled before the provider answered, the machine it may have
made is found by the lease's tag (at once, and again `create_settle` later when the create may
still be landing) and destroyed. What escapes even that — a gateway killed outright — ends
itself (the worker's idle timeout) or is destroyed by the reaper once its `deadline` tag passes.

A lease is one machine, not one job: today the dispatcher makes one lease per job; a pool can
hold a lease across many jobs. Phases are timed by a `PhaseTimer` and every step is an event
(`uplodr.dispatch.events`) for observers.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import TypeVar

import stamina

from uplodr.dispatch.clock import Now, PhaseTimer
from uplodr.dispatch.events import Event, EventKind, Events
from uplodr.dispatch.worker_client import DEFAULT_CHUNK_SIZE, WorkerClient
from uplodr.errors import (
    NotCreated,
    OutOfMemory,
    ProviderError,
    UplodrError,
    WorkerCrashed,
    WorkerUnavailable,
)
from uplodr.machines.base import Machine, MachineSpec, Provider, StopKind, StopReason

log = logging.getLogger("uplodr.dispatch")
A = TypeVar("A")
R = TypeVar("R")

# The tag that finds a lease's machine when its create answer was lost.
LEASE_TAG = "lease"

# Builds the spec of the lease's machine from the machine's fresh worker token.
SpecFactory = Callable[[str], MachineSpec]


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter between retries (seconds)."""

    initial: float = 0.1
    max: float = 5.0
    jitter: float = 1.0


@dataclass(frozen=True)
class LeaseSettings:
    boot_timeout: float = 60.0
    # Heartbeat Pings while the lease is held; keep it well under the worker's idle timeout.
    heartbeat_interval: float = 5.0
    destroy_deadline: float = 60.0
    destroy_backoff: Backoff = field(default_factory=Backoff)
    # After a create was interrupted, look for the lease's machine again this much later.
    create_settle: float = 2.0
    # How often the provider is asked whether a booting machine has already stopped (one GET
    # on Fly, within its rate limit of ~1 request/s per action and machine).
    failure_poll: float = 1.0
    # Pauses before each question "why did it stop?": a worker killed by the OOM killer drops
    # its connection a moment before the provider has collected its exit (within Fly's burst
    # of 3, then 1/s).
    failure_pauses: tuple[float, ...] = (0.0, 0.2, 0.5, 1.0)
    chunk_size: int = DEFAULT_CHUNK_SIZE
    msg_size: int = 64 * 1024 * 1024


class _Create(enum.Enum):
    """What became of the create call — and so what there may be to destroy."""

    NOT_ASKED = "not asked"  # nothing
    REFUSED = "refused"  # the provider said no: nothing
    UNCERTAIN = "uncertain"  # failed without an answer: look for it by tag
    INTERRUPTED = "interrupted"  # cancelled mid-call: look now, and again once it landed
    DONE = "done"  # the machine is known


class MachineLease:
    """One machine, from create to destroyed. Use as an async context manager (or call
    `acquire` and `release`); `client` talks to its worker while the lease is held."""

    def __init__(
        self,
        provider: Provider,
        make_spec: SpecFactory,
        settings: LeaseSettings | None = None,
        *,
        events: Events | None = None,
        now: Now = time.monotonic,
        job_id: str | None = None,
    ) -> None:
        self.id = secrets.token_hex(6)
        self.provider = provider
        self.settings = settings or LeaseSettings()
        self.events = events or Events()
        self.timer = PhaseTimer(now)
        # The one job this lease was made for, if any: it labels the lease's events.
        self.job_id = job_id
        self.machine: Machine | None = None
        # Create requested → destroy confirmed, once released (0 when no machine existed).
        self.machine_seconds = 0.0
        self._make_spec = make_spec
        self._token = secrets.token_urlsafe(32)
        self._client: WorkerClient | None = None
        self._create = _Create.NOT_ASKED
        self._create_requested = 0.0
        self._heartbeat: asyncio.Task[None] | None = None
        self._release: asyncio.Task[None] | None = None

    # -- holding the machine ---------------------------------------------------------------

    async def __aenter__(self) -> MachineLease:
        try:
            await self.acquire()
        except BaseException:
            await self.release()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()

    @property
    def client(self) -> WorkerClient:
        """The worker's client; WorkerUnavailable once the lease is being released (its
        machine is going: a job may be retried elsewhere), RuntimeError before it held one."""
        if self._release is not None:
            raise WorkerUnavailable("the job's machine is being destroyed")
        if self._client is None:
            raise RuntimeError(f"lease {self.id} holds no ready machine")
        return self._client

    async def acquire(self) -> None:
        """Create the machine and wait until its worker answers; raises the reason when not.
        The machine is not destroyed here: call `release` (the context manager does)."""
        if self._create is not _Create.NOT_ASKED:
            raise RuntimeError(f"lease {self.id} was acquired already: one machine per lease")
        machine = await self._create_machine()
        client = WorkerClient(
            machine.address, self._token, self.settings.msg_size, self.settings.chunk_size
        )
        self._client = client
        with self.timer.phase("boot"):
            await self._boot(machine, client)
        self._emit(EventKind.READY, machine_seconds=self.timer.now() - self._create_requested)
        self._heartbeat = asyncio.create_task(self._beat(client))

    async def release(self) -> None:
        """Destroy the machine (once: later calls wait for the same destroy). Shielded: a
        caller cancelled while it runs leaves it running to its end (see `release_task`)."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._release is None:
            self._release = asyncio.create_task(self._destroy_machines())
        await asyncio.shield(self._release)

    async def park(self) -> None:
        """Stop the machine without destroying it (`provider.stop`, only when the provider
        `can_stop`): the lease keeps it for `resume`. On failure, release the lease."""
        if self.machine is None or self._release is not None:
            raise RuntimeError(f"lease {self.id} holds no machine to stop")
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()
        await self.provider.stop(self.machine.id)
        self._emit(EventKind.STOPPED)

    async def resume(self) -> None:
        """Start the parked machine again and wait until its worker answers, like `acquire`
        (its address may have changed). On failure, release the lease."""
        if self.machine is None or self._release is not None or self._client is not None:
            raise RuntimeError(f"lease {self.id} holds no stopped machine")
        begun = self.timer.now()
        with self.timer.phase("boot"):
            machine = await self.provider.start(self.machine.id)
            self.machine = machine
            client = WorkerClient(
                machine.address, self._token, self.settings.msg_size, self.settings.chunk_size
            )
            self._client = client
            await self._boot(machine, client)
        self._emit(EventKind.READY, machine_seconds=self.timer.now() - begun)
        self._heartbeat = asyncio.create_task(self._beat(client))

    @property
    def release_task(self) -> asyncio.Task[None] | None:
        """The destroy, once release started (it may outlive a cancelled caller)."""
        return self._release

    @contextlib.asynccontextmanager
    async def job(self, job_id: str) -> AsyncIterator[WorkerClient]:
        """A job on this machine: `job_started` now, `job_finished` with its outcome after."""
        client = self.client
        self._emit(EventKind.JOB_STARTED, job_id=job_id)
        outcome = "cancelled"
        try:
            yield client
            outcome = "ok"
        except UplodrError as error:
            outcome = error.code
            raise
        except Exception:
            outcome = "internal"
            raise
        finally:
            self._emit(EventKind.JOB_FINISHED, job_id=job_id, detail=outcome)

    async def explain(self, error: WorkerUnavailable) -> UplodrError:
        """The error the provider's reason makes of a worker that stopped answering (out of
        memory, a crash), else `error`."""
        if self.machine is None:
            return error
        with contextlib.suppress(Exception):
            for pause in self.settings.failure_pauses:
                await asyncio.sleep(pause)
                reason = await self.provider.failure(self.machine.id)
                if reason is not None:
                    return stopped_error(reason)
        return error

    # -- creating and booting ----------------------------------------------------------------

    async def _create_machine(self) -> Machine:
        spec = self._make_spec(self._token)
        spec = replace(spec, tags={**spec.tags, LEASE_TAG: self.id})
        self._create_requested = self.timer.now()
        self._emit(EventKind.CREATE_REQUESTED)
        self._create = _Create.UNCERTAIN
        with self.timer.phase("create"):
            try:
                machine = await self.provider.create(spec)
            except (ProviderError, NotCreated):  # nothing was made: nothing to look for
                self._create = _Create.REFUSED
                raise
            except asyncio.CancelledError:
                self._create = _Create.INTERRUPTED
                raise
        self.machine, self._create = machine, _Create.DONE
        self._emit(EventKind.CREATED)
        return machine

    async def _boot(self, machine: Machine, client: WorkerClient) -> None:
        deadline = self.settings.boot_timeout
        try:
            async with asyncio.timeout(deadline):
                await self.provider.wait_started(machine, deadline)
                await self._ready_unless_stopped(machine, client, deadline)
        except TimeoutError:
            late = WorkerUnavailable(f"worker did not become ready within {deadline:g}s")
            raise await self.explain(late) from None
        except WorkerUnavailable as error:
            raise await self.explain(error) from None

    async def _ready_unless_stopped(
        self, machine: Machine, client: WorkerClient, deadline: float
    ) -> None:
        """Wait for the worker's first Ping answer, but give up as soon as the provider says the
        machine stopped (a worker that cannot start — bad storage credentials, say — must not
        make the lease wait out the whole boot deadline)."""
        ready = asyncio.ensure_future(client.wait_ready(deadline))
        try:
            while not ready.done():
                await asyncio.wait({ready}, timeout=self.settings.failure_poll)
                if not ready.done() and await self.provider.failure(machine.id) is not None:
                    raise WorkerUnavailable("worker stopped while booting")
            ready.result()
        finally:
            ready.cancel()

    async def _beat(self, client: WorkerClient) -> None:
        """Keep the worker's idle timer from firing while the lease holds it (without, the
        worker ends itself: that is how an orphan of a dead gateway stops billing)."""
        interval = self.settings.heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(UplodrError):
                await client.ping(timeout=max(1.0, interval))

    # -- destroying --------------------------------------------------------------------------

    async def _destroy_machines(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()
        with self.timer.phase("destroy"):
            try:
                ids = await self._machines_to_destroy()
                existed = bool(ids)
            except Exception as error:  # the reaper will find it by its tags
                self._emit(EventKind.DESTROY_FAILED, detail=f"could not look for it: {error}")
                ids, existed = [], True
            for machine_id in ids:
                await self._destroy(machine_id)
        if existed:
            self.machine_seconds = self.timer.now() - self._create_requested
        self._emit(EventKind.RELEASED, machine_seconds=self.machine_seconds)

    async def _machines_to_destroy(self) -> list[str]:
        if self.machine is not None:
            return [self.machine.id]
        if self._create in (_Create.NOT_ASKED, _Create.REFUSED):
            return []
        # The create failed or was interrupted before the provider answered: what it may have
        # made carries the lease's tag — look again a little later if it may still be landing.
        pauses = (0.0, self.settings.create_settle)
        for pause in pauses if self._create is _Create.INTERRUPTED else pauses[:1]:
            await asyncio.sleep(pause)
            found = await self._retry(self.provider.list, {LEASE_TAG: self.id})
            if found:
                return [machine.id for machine in found]
        return []

    async def _destroy(self, machine_id: str) -> None:
        self._emit(EventKind.DESTROY_REQUESTED, machine_id=machine_id)
        try:
            await self._retry(self.provider.destroy, machine_id)
        except Exception as error:
            # The worker's idle timeout and the reaper (by its tags) will end it.
            self._emit(EventKind.DESTROY_FAILED, machine_id=machine_id, detail=str(error))
        else:
            self._emit(EventKind.DESTROYED, machine_id=machine_id)

    async def _retry(self, call: Callable[[A], Awaitable[R]], arg: A) -> R:
        """`call(arg)`, retried with backoff under the destroy deadline (a ProviderError is a
        configuration problem: not retried)."""
        backoff = self.settings.destroy_backoff
        async for attempt in stamina.retry_context(
            on=_retryable,
            attempts=None,
            timeout=self.settings.destroy_deadline,
            wait_initial=backoff.initial,
            wait_max=backoff.max,
            wait_jitter=backoff.jitter,
        ):
            with attempt:
                return await call(arg)
        raise AssertionError("unreachable")

    def _emit(
        self,
        kind: EventKind,
        *,
        machine_id: str | None = None,
        job_id: str | None = None,
        detail: str = "",
        machine_seconds: float = 0.0,
    ) -> None:
        self.events.emit(
            Event(
                kind=kind,
                at=self.timer.now(),
                lease_id=self.id,
                machine_id=machine_id or (self.machine.id if self.machine else None),
                job_id=job_id or self.job_id,
                detail=detail,
                machine_seconds=machine_seconds,
            )
        )


def stopped_error(reason: StopReason) -> UplodrError:
    """What a worker that stopped for `reason` means to the job it ran: out of memory is the
    image's (a 422), a crash most likely the file's (about the input, still a 503), anything
    else (it exited, it is gone) the machine's."""
    if reason.kind is StopKind.OUT_OF_MEMORY:
        return OutOfMemory(f"the image needs more memory than the worker has: {reason}")
    if reason.crashed:
        return WorkerCrashed(f"worker stopped: {reason}")
    return WorkerUnavailable(f"worker stopped: {reason}")


def _retryable(error: Exception) -> bool:
    return not isinstance(error, ProviderError)
