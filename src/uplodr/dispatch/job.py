"""One job's life: create a machine, wait for its worker, stream the files, destroy the machine.

The machine is destroyed on every path — success, a refused image, a worker that died, a boot
that never finished, a client that hung up, a cancelled task, a storage failure — because the
destroy runs in a `finally`, as its own task shielded from cancellation, retried under a
deadline. If creation itself was interrupted before the provider told us the machine's id, the
job's tag finds it (now, and once more after the create had time to land on the provider's
side). What still escapes — a gateway killed outright — ends itself (the worker's idle timeout,
fed by this module's heartbeat) or is destroyed by the reaper once its `deadline` tag passes.

Each job's machine-seconds run from "create requested" to "destroy confirmed"; with the price of a
machine-second they give its cost. The dispatcher also totals them over every job, failed and
cancelled ones included (a machine bills whether or not the job succeeded).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import stamina

from uplodr.dispatch.worker_client import UploadSource, WorkerClient
from uplodr.errors import LimitExceeded, ProviderError, UplodrError, WorkerUnavailable
from uplodr.machines.base import MARKER_TAG, MARKER_VALUE, Machine, MachineSpec, Provider
from uplodr.proto import uplodr_pb2

log = logging.getLogger("uplodr.dispatch")
T = TypeVar("T")


@dataclass(frozen=True)
class DispatchSettings:
    boot_timeout: float = 60.0
    job_timeout: float = 300.0
    # at most this; never more than a third of the worker's idle timeout (UPLODR_IDLE_TIMEOUT)
    heartbeat_interval: float = 5.0
    destroy_deadline: float = 60.0
    # after a create was interrupted, look for the job's machine again this much later
    create_settle: float = 2.0
    # the reaper may destroy a machine this long after its job's own deadlines passed
    deadline_grace: float = 60.0
    chunk_size: int = 256 * 1024
    msg_size: int = 64 * 1024 * 1024
    memory_mb: int | None = None
    # Price of one machine-second for the configured guest, to report a job's cost.
    price_per_second: float = 0.0


@dataclass
class JobTimings:
    create: float = 0.0
    boot: float = 0.0
    transfer: float = 0.0
    convert: float = 0.0
    store: float = 0.0
    destroy: float = 0.0
    total: float = 0.0
    machine_seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.__dict__.items()}


@dataclass
class JobResult:
    job_id: str
    machine_id: str
    responses: list[uplodr_pb2.UploadResp]
    timings: JobTimings
    cost: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class DispatchTotals:
    """Counts over every job this dispatcher ran, whatever its outcome."""

    jobs: int = 0
    machines_created: int = 0
    machines_destroyed: int = 0
    destroy_failures: int = 0  # left to the reaper (logged loudly)
    machine_seconds: float = 0.0
    cost: float = 0.0


# How often the provider is asked whether a booting machine has already stopped (one GET on
# Fly, within its rate limit of ~1 request/s per action and machine).
BOOT_EXIT_POLL_SECONDS = 1.0


def _is_retryable_destroy_error(error: Exception) -> bool:
    return not isinstance(error, ProviderError)


def heartbeat_interval(settings: DispatchSettings, worker_env: Mapping[str, str]) -> float:
    """Often enough that a worker never mistakes a live gateway for a dead one."""
    try:
        idle = float(worker_env.get("UPLODR_IDLE_TIMEOUT", "inf"))
    except ValueError:
        idle = float("inf")
    return max(0.1, min(settings.heartbeat_interval, idle / 3))


class Dispatcher:
    """Runs jobs on machines from one provider; owns nothing between jobs."""

    def __init__(
        self,
        provider: Provider,
        worker_env: Mapping[str, str],
        gateway_id: str,
        settings: DispatchSettings,
    ) -> None:
        self.provider = provider
        self.worker_env = dict(worker_env)
        self.gateway_id = gateway_id
        self.settings = settings
        self._releases: set[asyncio.Task[bool]] = set()
        self.totals = DispatchTotals()
        self._heartbeat_interval = heartbeat_interval(settings, worker_env)

    @property
    def machines_created(self) -> int:
        return self.totals.machines_created

    def _spec(self, job_id: str, token: str) -> MachineSpec:
        now = time.time()
        lifetime = (
            self.settings.boot_timeout + self.settings.job_timeout + self.settings.deadline_grace
        )
        env = {
            **self.worker_env,
            "UPLODR_WORKER_TOKEN": token,
            "UPLODR_MAX_LIFETIME": str(int(lifetime)),
        }
        tags = {
            MARKER_TAG: MARKER_VALUE,
            "gateway": self.gateway_id,
            "job": job_id,
            "created_at": str(int(now)),
            "deadline": str(int(now + lifetime)),
        }
        return MachineSpec(env=env, tags=tags, memory_mb=self.settings.memory_mb)

    async def run(self, files: Sequence[UploadSource]) -> JobResult:
        job_id = secrets.token_hex(6)
        token = secrets.token_urlsafe(32)
        timings = JobTimings()
        started = time.monotonic()
        machine: Machine | None = None
        client: WorkerClient | None = None
        heartbeat: asyncio.Task[None] | None = None
        # what became of the create call: "ok", "refused" (the provider said no: nothing to find),
        # "failed" (it may have made a machine), "interrupted" (cancelled mid-call)
        create = "failed"
        result: JobResult | None = None
        self.totals.jobs += 1
        try:
            try:
                machine = await self.provider.create(self._spec(job_id, token))
                create = "ok"
            except ProviderError:
                create = "refused"
                raise
            except asyncio.CancelledError:
                create = "interrupted"
                raise
            self.totals.machines_created += 1
            created = time.monotonic()
            timings.create = created - started
            log.info("job %s: machine %s created", job_id, machine.id)
            client = WorkerClient(
                machine.address, token, self.settings.msg_size, self.settings.chunk_size
            )
            await self._boot(machine, client)
            booted = time.monotonic()
            timings.boot = booted - created
            heartbeat = asyncio.create_task(self._heartbeat(client))
            try:
                responses = await client.stream(files, self.settings.job_timeout)
            except WorkerUnavailable as error:
                raise await self._explain_worker_failure(machine, error) from None
            timings.transfer = time.monotonic() - booted
            for response in responses:
                timings.convert += response.timings.convert
                timings.store += response.timings.store
            timings.transfer -= timings.convert + timings.store
            result = JobResult(job_id, machine.id, responses, timings)
            return result
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
            destroy_started = time.monotonic()
            # nothing is awaited before the shielded release: a second cancellation cannot
            # skip it
            found = await self._release(job_id, machine, create, client)
            timings.destroy = time.monotonic() - destroy_started
            timings.total = time.monotonic() - started
            # create requested → destroy confirmed, when a machine existed (or may have)
            timings.machine_seconds = timings.total if found else 0.0
            cost = timings.machine_seconds * self.settings.price_per_second
            self.totals.machine_seconds += timings.machine_seconds
            self.totals.cost += cost
            if result is not None:
                result.cost = cost

    async def _boot(self, machine: Machine, client: WorkerClient) -> None:
        deadline = self.settings.boot_timeout
        try:
            async with asyncio.timeout(deadline):
                await self.provider.wait_started(machine, deadline)
                await self._ready_unless_exited(machine, client, deadline)
        except TimeoutError:
            raise await self._explain_worker_failure(
                machine, WorkerUnavailable(f"worker did not become ready within {deadline:g}s")
            ) from None
        except WorkerUnavailable as error:
            raise await self._explain_worker_failure(machine, error) from None

    async def _ready_unless_exited(
        self, machine: Machine, client: WorkerClient, deadline: float
    ) -> None:
        """Wait for the worker's first Ping answer, but give up as soon as the provider says the
        machine stopped (a worker that cannot start — bad storage credentials, say — must not
        make the job wait out the whole boot deadline)."""
        ready = asyncio.ensure_future(client.wait_ready(deadline))
        try:
            while not ready.done():
                await asyncio.wait({ready}, timeout=BOOT_EXIT_POLL_SECONDS)
                if not ready.done() and await self.provider.failure(machine.id):
                    raise WorkerUnavailable("worker stopped while booting")
            ready.result()
        finally:
            ready.cancel()

    async def _explain_worker_failure(
        self, machine: Machine, error: WorkerUnavailable
    ) -> UplodrError:
        """The provider's reason when it knows one (crash, out of memory), else `error`.

        A worker killed by the kernel's OOM killer drops its connection a moment before the
        provider has reaped it, so the reason is asked for up to four times over ~1.7 s."""
        with contextlib.suppress(Exception):
            for pause in (0.0, 0.2, 0.5, 1.0):  # within Fly's burst of 3, then 1/s
                await asyncio.sleep(pause)
                reason = await self.provider.failure(machine.id)
                if reason and "out of memory" in reason:
                    return LimitExceeded(
                        f"the image needs more memory than the worker has: {reason}"
                    )
                if reason:
                    return WorkerUnavailable(f"worker stopped: {reason}")
        return error

    async def _heartbeat(self, client: WorkerClient) -> None:
        """Keep the worker's idle timer from firing while we own it (it ends itself without)."""
        while True:
            await asyncio.sleep(self._heartbeat_interval)
            with contextlib.suppress(UplodrError):
                await client.ping(timeout=max(1.0, self._heartbeat_interval))

    async def _release(
        self, job_id: str, machine: Machine | None, create: str, client: WorkerClient | None
    ) -> bool:
        """Close the channel and destroy the job's machine; True if there was one."""
        if machine is None and create == "refused":
            return False  # the provider refused the create: there is nothing to find
        task = asyncio.create_task(self._destroy(job_id, machine, create == "interrupted", client))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)
        # Shielded: a cancelled job still waits for (and never abandons) its machine's destroy;
        # cancelled again while waiting, it leaves the destroy running (drain() waits for it).
        return await asyncio.shield(task)

    async def _destroy(
        self,
        job_id: str,
        machine: Machine | None,
        interrupted: bool,
        client: WorkerClient | None = None,
    ) -> bool:
        ids = [machine.id] if machine else []
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()
        try:
            if not ids:
                # creation was interrupted: find what it may have made by the job tag — again a
                # little later if the create request may still be landing on the provider
                for delay in (0.0, self.settings.create_settle) if interrupted else (0.0,):
                    await asyncio.sleep(delay)
                    ids = await self._retry(self._job_machines, job_id)
                    if ids:
                        break
                if not ids:
                    return False
            for machine_id in ids:
                await self._retry(self.provider.destroy, machine_id)
                self.totals.machines_destroyed += 1
                log.info("job %s: machine %s destroyed", job_id, machine_id)
            return True
        except Exception:
            # The worker's idle timeout and the reaper (by its tags) will end it; say so loudly.
            self.totals.destroy_failures += 1
            log.exception("job %s: could not destroy machine(s) %s", job_id, ids)
            return True

    async def _job_machines(self, job_id: str) -> list[str]:
        return [m.id for m in await self.provider.list({"job": job_id})]

    async def _retry(self, call: Callable[[str], Awaitable[T]], arg: str) -> T:
        """`call(arg)`, retried with backoff under the destroy deadline (not ProviderError)."""
        async for attempt in stamina.retry_context(
            on=_is_retryable_destroy_error, timeout=self.settings.destroy_deadline
        ):
            with attempt:
                return await call(arg)
        raise AssertionError("unreachable")

    async def drain(self) -> None:
        """Wait for destroys still in flight (at shutdown)."""
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)
