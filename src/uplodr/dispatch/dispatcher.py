"""The dispatcher: runs jobs on machines from one provider, one lease per job.

It builds each machine's spec — the worker's configuration with a fresh token and lifetime, the
tags the reaper reads (`gateway`, `created_at`, `deadline`) — and counts what every lease used
(`DispatchTotals`, from the leases' events, so failed and cancelled jobs count too: a machine
bills whether or not its job succeeded). It owns nothing between jobs; the pool
(`uplodr.dispatch.pool`) keeps leases open between them, made by `new_lease`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace

from uplodr.dispatch.clock import Now, PhaseTimer
from uplodr.dispatch.events import Event, EventKind, Events, log_event
from uplodr.dispatch.job import JobResult, run_job
from uplodr.dispatch.lease import LeaseSettings, MachineLease
from uplodr.dispatch.worker_client import UploadSource
from uplodr.errors import UplodrError
from uplodr.machines.base import MARKER_TAG, MARKER_VALUE, MachineSpec, Provider
from uplodr.worker_env import WorkerEnv

log = logging.getLogger("uplodr.dispatch")


@dataclass(frozen=True)
class DispatchSettings:
    # How long one job may stream once its machine is up.
    job_timeout: float = 300.0
    # The reaper may destroy a machine this long after its job's own deadlines passed.
    deadline_grace: float = 60.0
    # Price of one machine-second, to report a job's cost.
    price_per_second: float = 0.0
    lease: LeaseSettings = field(default_factory=LeaseSettings)


@dataclass
class DispatchTotals:
    """Counts over every lease this dispatcher made, whatever its job's outcome."""

    jobs: int = 0
    machines_created: int = 0
    machines_destroyed: int = 0
    destroy_failures: int = 0  # left to the reaper (logged loudly)
    machine_seconds: float = 0.0
    cost: float = 0.0
    # Seconds machines spent creating and booting (create requested → first Ping answered).
    boot_seconds: float = 0.0


def heartbeat_interval(settings: LeaseSettings, worker_env: WorkerEnv) -> float:
    """Often enough that a worker never mistakes a live gateway for a dead one: at most
    `settings.heartbeat_interval`, three times per idle timeout."""
    return max(0.1, min(settings.heartbeat_interval, worker_env.idle_timeout / 3))


class Dispatcher:
    def __init__(
        self,
        provider: Provider,
        worker_env: WorkerEnv,
        gateway_id: str,
        settings: DispatchSettings | None = None,
        *,
        now: Now = time.monotonic,
    ) -> None:
        self.provider = provider
        self.worker_env = worker_env
        self.gateway_id = gateway_id
        self.settings = settings or DispatchSettings()
        self.totals = DispatchTotals()
        self.events = Events()
        self.events.subscribe(log_event)
        self.events.subscribe(self._count)
        self._now = now
        self._lease_settings = replace(
            self.settings.lease,
            heartbeat_interval=heartbeat_interval(self.settings.lease, worker_env),
            msg_size=worker_env.msg_size,
        )
        self._releasing: set[asyncio.Task[None]] = set()

    async def run(self, files: Sequence[UploadSource]) -> JobResult:
        """One job on a machine of its own."""
        job_id = secrets.token_hex(6)
        timer = PhaseTimer(self._now)
        self.totals.jobs += 1
        async with self.lease(job_id) as lease:
            with timer.phase("stream"):
                responses = await run_job(lease, job_id, files, self.settings.job_timeout)
        price = self.settings.price_per_second
        return JobResult.of_own_lease(job_id, lease, responses, timer, price)

    def new_lease(
        self, job_id: str | None = None, lifetime: float | None = None, stoppable: bool = False
    ) -> MachineLease:
        """A lease not yet acquired (`job_id`: the one job it is for, which labels its events;
        `lifetime`: how long its machine may live, default one job's worth; `stoppable`: it
        may be parked with `provider.stop`)."""
        lease = MachineLease(
            self.provider,
            lambda token: replace(self._spec(token, lifetime), stoppable=stoppable),
            self._lease_settings,
            events=self.events,
            now=self._now,
            job_id=job_id,
        )
        return lease

    def job_lifetime(self) -> float:
        """How long a machine made for one job may live: boot, the job, the reaper's grace."""
        lease = self._lease_settings
        return lease.boot_timeout + self.settings.job_timeout + self.settings.deadline_grace

    @contextlib.asynccontextmanager
    async def lease(self, job_id: str | None = None) -> AsyncIterator[MachineLease]:
        """A machine for the caller, destroyed when the block ends (`job_id`: the one job it
        is for, which labels its events)."""
        lease = self.new_lease(job_id)
        try:
            async with lease:
                yield lease
        finally:
            self._keep_until_released(lease)

    async def drain(self) -> None:
        """Wait for destroys still running after their caller was cancelled (at shutdown)."""
        if self._releasing:
            await asyncio.gather(*self._releasing, return_exceptions=True)

    async def destroy_own_machines(self) -> None:
        """Destroy whatever still carries this gateway's tag (at shutdown, after drain). A
        provider that cannot be reached now is said in one line: its machines end themselves
        (idle timeout, lifetime) and the reaper of the next gateway finds them by tag."""
        try:
            machines = await self.provider.list({"gateway": self.gateway_id})
        except UplodrError as error:
            log.warning(
                "shutdown: cannot list this gateway's machines (left to the reaper): %s", error
            )
            return
        for machine in machines:
            with contextlib.suppress(Exception):
                await self.provider.destroy(machine.id)

    def _spec(self, token: str, lifetime: float | None = None) -> MachineSpec:
        now = time.time()
        lifetime = self.job_lifetime() if lifetime is None else lifetime
        tags = {
            MARKER_TAG: MARKER_VALUE,
            "gateway": self.gateway_id,
            "created_at": str(int(now)),
            "deadline": str(int(now + lifetime)),
        }
        env = self.worker_env.for_machine(token, float(int(lifetime))).to_env()
        return MachineSpec(env=env, tags=tags)

    def keep_until_released(self, lease: MachineLease) -> None:
        """Let `drain` wait for the lease's destroy when its caller did not."""
        self._keep_until_released(lease)

    def _keep_until_released(self, lease: MachineLease) -> None:
        task = lease.release_task
        if task is not None and not task.done():
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)

    def _count(self, event: Event) -> None:
        totals = self.totals
        if event.kind is EventKind.CREATED:
            totals.machines_created += 1
        elif event.kind is EventKind.READY:
            totals.boot_seconds += event.machine_seconds
        elif event.kind is EventKind.DESTROYED:
            totals.machines_destroyed += 1
        elif event.kind is EventKind.DESTROY_FAILED:
            totals.destroy_failures += 1
        elif event.kind is EventKind.RELEASED:
            totals.machine_seconds += event.machine_seconds
            totals.cost += event.machine_seconds * self.settings.price_per_second
