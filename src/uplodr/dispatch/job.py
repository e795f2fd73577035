"""One job's life: create a machine, wait for its worker, stream the files, destroy the machine.

The machine is destroyed on every path — success, a refused image, a worker that died, a boot
that never finished, a client that hung up, a cancelled task — because the destroy runs in a
`finally`, as its own task shielded from cancellation, retried under a deadline. If creation
itself was cancelled before the provider told us the machine's id, the job's tag finds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import stamina

from uplodr.dispatch.worker_client import UploadSource, WorkerClient
from uplodr.errors import LimitExceeded, ProviderError, UplodrError, WorkerUnavailable
from uplodr.machines.base import MARKER_TAG, MARKER_VALUE, Machine, MachineSpec, Provider
from uplodr.proto import uplodr_pb2

log = logging.getLogger("uplodr.dispatch")


@dataclass(frozen=True)
class DispatchSettings:
    boot_timeout: float = 60.0
    job_timeout: float = 300.0
    heartbeat_interval: float = 5.0
    destroy_deadline: float = 60.0
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


def _is_retryable_destroy_error(error: Exception) -> bool:
    return not isinstance(error, ProviderError)


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
        self._releases: set[asyncio.Task[None]] = set()
        self.machines_created = 0

    def _spec(self, job_id: str, token: str) -> MachineSpec:
        now = time.time()
        lifetime = self.settings.boot_timeout + self.settings.job_timeout + 60
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
        try:
            machine = await self.provider.create(self._spec(job_id, token))
            self.machines_created += 1
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
            except WorkerUnavailable:
                raise await self._explain_worker_failure(machine) from None
            timings.transfer = time.monotonic() - booted
            for response in responses:
                timings.convert += response.timings.convert
                timings.store += response.timings.store
            timings.transfer -= timings.convert + timings.store
            return JobResult(job_id, machine.id, responses, timings)
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
            if client is not None:
                await client.close()
            destroy_started = time.monotonic()
            await self._release(job_id, machine)
            timings.destroy = time.monotonic() - destroy_started
            timings.total = time.monotonic() - started
            timings.machine_seconds = timings.total  # create requested → destroy confirmed

    async def _boot(self, machine: Machine, client: WorkerClient) -> None:
        deadline = self.settings.boot_timeout
        try:
            async with asyncio.timeout(deadline):
                await self.provider.wait_started(machine, deadline)
                await client.wait_ready(deadline)
        except TimeoutError:
            raise WorkerUnavailable(f"worker did not become ready within {deadline:g}s") from None
        except WorkerUnavailable:
            raise await self._explain_worker_failure(machine) from None

    async def _explain_worker_failure(self, machine: Machine) -> UplodrError:
        with contextlib.suppress(Exception):
            reason = await self.provider.failure(machine.id)
            if reason and "out of memory" in reason:
                return LimitExceeded(f"the image needs more memory than the worker has: {reason}")
            if reason:
                return WorkerUnavailable(f"worker stopped mid-job: {reason}")
        return WorkerUnavailable("worker stopped answering mid-job")

    async def _heartbeat(self, client: WorkerClient) -> None:
        """Keep the worker's idle timer from firing while we own it (it ends itself without)."""
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            with contextlib.suppress(UplodrError):
                await client.ping(timeout=self.settings.heartbeat_interval)

    async def _release(self, job_id: str, machine: Machine | None) -> None:
        task = asyncio.create_task(self._destroy(job_id, machine))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)
        # Shielded: a cancelled job still waits for (and never abandons) its machine's destroy.
        await asyncio.shield(task)

    async def _destroy(self, job_id: str, machine: Machine | None) -> None:
        ids = [machine.id] if machine else []
        try:
            if not ids:  # creation was interrupted: find what it may have made by the job tag
                ids = [m.id for m in await self.provider.list({"job": job_id})]
            for machine_id in ids:
                async for attempt in stamina.retry_context(
                    on=_is_retryable_destroy_error, timeout=self.settings.destroy_deadline
                ):
                    with attempt:
                        await self.provider.destroy(machine_id)
                log.info("job %s: machine %s destroyed", job_id, machine_id)
        except Exception:
            # The reaper will find it by its tags; say so loudly.
            log.exception("job %s: could not destroy machine(s) %s", job_id, ids)

    async def drain(self) -> None:
        """Wait for destroys still in flight (at shutdown)."""
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)
