"""An elastic pool of machines (FLAME-like): jobs reuse a few warm machines instead of each
paying a machine's create and boot.

Why: one machine per job costs every job a create and a boot (~0.55 s locally; on Fly a VM boot
behind an API rate-limited to ~1 create/s), and a burst of 16 small photos made 16 machines.
The pool keeps each machine (a `MachineLease`) between jobs:

- `min` machines are kept even when nobody uploads (0: scale to zero), at most `max` exist
  (counting those still being destroyed), each runs up to `jobs_per_machine` jobs at once;
- a job takes a machine with room — the busiest first, then the most recently used idle one, so
  the others reach their idle window and go — otherwise it waits while a machine is created, if
  the pool may grow (creations run as their own tasks, paced by a token bucket from
  `provider.capabilities.create_rate`, so a burst never turns into a 429 storm);
- a machine is destroyed: `idle` seconds after its last job (0 = no pool: one machine per job,
  exactly the dispatcher's behaviour); after `max_jobs_per_machine` jobs (bounds any memory a
  worker keeps); `machine_lifetime` after it was created (its `deadline` tag and the worker's own
  maximum lifetime cover that plus one job, so the reaper and the worker itself still end a
  machine a dead gateway left); when its health check (a Ping, before a reused machine takes a
  job) fails; at `close` (SIGTERM: running jobs finish, idle machines are destroyed);
- and after *any* job on it failed. A job that failed on its input — the error says
  `about_input`: unsupported, corrupt, too large, over a limit, out of memory, past its
  deadline, a crash mid-job — means the machine decoded bytes that may have been crafted to
  take it over (the decoders are C with a history of exploited CVEs): it never takes another
  job, and it is counted on /metrics by reason (`retired_bad_input`). Any other failure means
  the machine may be dead, or still busy with a cancelled conversion. With
  `jobs_per_machine` > 1 such a machine *drains*: its other jobs finish, it takes nothing new,
  then it is destroyed. Uploads the gateway refuses itself (a bad name or folder) never reach a
  machine and cost none. Measured cost (bench/pool.py --bad-every 5): docs/benchmarks.md.
- A job is retried on another machine only when nothing of it ran: a machine that fails its
  health check is replaced before the job's first byte is sent, and every job that took the
  machine while that check was in flight waits for it and moves on too. A machine that dies
  mid-job fails that job with the provider's reason; the pool does not resend it.

A machine's life in the pool is one state machine (`_State`, moves checked in `_Member.move`):
booting → ready ⇄ (jobs) → draining → retired, ready → parking → stopped → booting; any state
→ retired. Only ready machines take jobs.

While held, each lease's heartbeat keeps its worker from ending itself; when the gateway dies
the heartbeats stop and every pooled worker exits after its idle timeout, like a per-job one.
Cost stays honest: a job reports its share of its machine while it ran (time ÷ jobs running on
it), and the dispatcher's totals count boot seconds and idle machine-seconds apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import secrets
import time
from collections import Counter
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiolimiter import AsyncLimiter

from uplodr.dispatch.clock import Now, PhaseTimer
from uplodr.dispatch.dispatcher import Dispatcher
from uplodr.dispatch.job import JobResult, JobTimings, run_job
from uplodr.dispatch.lease import MachineLease
from uplodr.dispatch.worker_client import UploadSource
from uplodr.errors import UplodrError, WorkerUnavailable

log = logging.getLogger("uplodr.dispatch")
T = TypeVar("T")

# The share of the provider's create rate the pool uses.
CREATE_RATE_MARGIN = 0.8


@dataclass(frozen=True)
class PoolSettings:
    min: int = 0
    max: int = 2
    # Seconds a machine stays after its last job (FLAME's idle_shutdown_after); 0: no pool.
    idle: float = 30.0
    jobs_per_machine: int = 1
    # Recycle a machine after this many jobs. Measured: a worker's RSS stays flat over 50
    # consecutive 24 MP jobs (docs/benchmarks.md), so this bounds what is not measured.
    max_jobs_per_machine: int = 100
    # A machine takes no new job this long after it was created (then it is replaced).
    machine_lifetime: float = 15 * 60
    # A reused machine must answer a Ping this fast before it gets a job.
    health_timeout: float = 2.0
    # Idle machines past their idle window are stopped, not destroyed, up to this many, and
    # started again on demand (providers that `can_stop`: Fly). 0: destroy them.
    keep_stopped: int = 0

    def __post_init__(self) -> None:
        checks = (
            (self.min >= 0, f"--pool-min must be 0 or more, not {self.min}"),
            (self.max >= 1, f"--pool-max must be 1 or more, not {self.max}"),
            (self.min <= self.max, f"--pool-min {self.min} is above --pool-max {self.max}"),
            (self.idle >= 0, f"--pool-idle must not be negative, not {self.idle:g}"),
            (self.jobs_per_machine >= 1, "--jobs-per-machine must be 1 or more"),
            (self.max_jobs_per_machine >= 1, "--max-jobs-per-machine must be 1 or more"),
            (self.machine_lifetime > 0, "the pool's machine lifetime must be positive"),
            (self.keep_stopped >= 0, "--pool-keep-stopped must be 0 or more"),
            (
                self.idle > 0 or (self.min == 0 and self.keep_stopped == 0),
                "--pool-idle 0 is a machine per job, so there is no pool to keep machines in: "
                "--pool-min and --pool-keep-stopped need a --pool-idle above 0",
            ),
        )
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def per_job(self) -> bool:
        """No pool: every job gets a machine of its own (`--pool-idle 0`)."""
        return self.idle == 0


@dataclass
class PoolStats:
    machines: int  # every machine of the pool, booting or ready
    booting: int
    busy: int  # machines running at least one job
    idle: int  # ready machines with no job
    stopped: int  # parked (--pool-keep-stopped): not billed but for their root filesystem
    jobs_running: int
    jobs_waiting: int
    idle_seconds: float  # machine-seconds spent idle, so far (including machines idle now)
    # Machines retired because a job on them failed on its input, by the error's kind
    # (corrupt_image, out_of_memory, crash, …): each never took another job.
    retired_bad_input: dict[str, int] = field(default_factory=dict)


class _State(enum.Enum):
    BOOTING = "booting"  # being created, or a stopped machine being started again
    READY = "ready"  # takes jobs (idle while it runs none)
    DRAINING = "draining"  # takes no new job; destroyed once the jobs on it are done
    PARKING = "parking"  # being stopped (--pool-keep-stopped)
    STOPPED = "stopped"  # parked: started again when a job needs a machine
    RETIRED = "retired"  # being destroyed: never used again


_MOVES: dict[_State, frozenset[_State]] = {
    _State.BOOTING: frozenset({_State.READY, _State.RETIRED}),
    _State.READY: frozenset({_State.DRAINING, _State.PARKING, _State.RETIRED}),
    _State.DRAINING: frozenset({_State.RETIRED}),
    _State.PARKING: frozenset({_State.STOPPED, _State.RETIRED}),
    _State.STOPPED: frozenset({_State.BOOTING, _State.RETIRED}),
    _State.RETIRED: frozenset(),
}

# Members of the running pool (`Pool._members`); parked and retired ones are not.
_RUNNING = frozenset({_State.BOOTING, _State.READY, _State.DRAINING})


class _Member:
    """One machine of the pool and what the pool knows of it: its state (moved only through
    `move`, which refuses what `_MOVES` does not allow), the jobs on it, its clocks."""

    def __init__(self, lease: MachineLease, now: float) -> None:
        self.lease = lease
        self.state = _State.BOOTING
        self.born = now
        self.ready_at = 0.0
        self.busy = 0  # jobs on it now (those waiting for its health check included)
        self.jobs = 0  # jobs it ran
        self.drain_reason = ""  # why it takes no new job (DRAINING)
        self.error: BaseException | None = None  # why it never became ready
        self.idle_since: float | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.booting: asyncio.Task[None] | None = None
        self.check: asyncio.Task[bool] | None = None  # its health check, while in flight
        # A clock that runs at 1/busy while busy: a job's share is its difference.
        self.shared = 0.0
        self._last = now

    def move(self, to: _State) -> None:
        if to not in _MOVES[self.state]:
            raise AssertionError(f"a pool machine cannot go from {self.state.value} to {to.value}")
        self.state = to

    @property
    def ready(self) -> bool:
        """Booted and not parked: it runs jobs, or may (the pool's stats count it ready)."""
        return self.state in (_State.READY, _State.DRAINING)

    def advance(self, now: float) -> float:
        if self.busy > 0:
            self.shared += (now - self._last) / self.busy
        self._last = now
        return self.shared


class Pool:
    """Jobs on pooled machines of one dispatcher. `run` like `Dispatcher.run`; `close` at
    shutdown (idempotent)."""

    def __init__(
        self, dispatcher: Dispatcher, settings: PoolSettings, *, now: Now = time.monotonic
    ):
        self.dispatcher = dispatcher
        self.settings = settings
        self._now = now
        capabilities = dispatcher.provider.capabilities
        if settings.keep_stopped and not capabilities.can_stop:
            raise ValueError(
                f"--pool-keep-stopped needs a provider that can stop machines; "
                f"{dispatcher.provider.name} cannot"
            )
        rate = capabilities.create_rate
        # Paced a little below the provider's rate: a create that left on time can still
        # arrive early (measured: 1 create in 30 answered 429 at exactly the provider's rate).
        self._limiter = (
            None
            if rate is None
            else AsyncLimiter(rate.burst, rate.burst / (rate.per_second * CREATE_RATE_MARGIN))
        )
        # New jobs are taken this long after a machine's create; then the job may still run.
        self.lifetime = settings.machine_lifetime + dispatcher.job_lifetime()
        self._members: list[_Member] = []
        self._stopped: list[_Member] = []  # parked, most recently stopped last
        self._parking = 0
        self._destroying = 0
        self._waiting = 0
        self._closed = False
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle_total = 0.0
        self._retired_bad_input: Counter[str] = Counter()

    # -- jobs ----------------------------------------------------------------------------------

    async def run(self, files: Sequence[UploadSource]) -> JobResult:
        """One job on a pooled machine (or on a machine of its own when the pool is off)."""
        if self.settings.per_job:
            return await self.dispatcher.run(files)
        dispatcher = self.dispatcher
        job_id = secrets.token_hex(6)
        timer = PhaseTimer(self._now)
        dispatcher.totals.jobs += 1
        with timer.phase("wait"):
            member = await self._take()
        begun = member.advance(self._now())
        failure: BaseException | None = None
        try:
            with timer.phase("stream"):
                responses = await run_job(
                    member.lease, job_id, files, dispatcher.settings.job_timeout
                )
        except asyncio.CancelledError as error:
            failure = error
            task = asyncio.current_task()
            if task is not None and task.cancelling() == 0:  # nobody cancelled this job
                failure = WorkerUnavailable("the job's machine went away mid-job")
                raise failure from None
            raise
        except BaseException as error:
            failure = error
            raise
        finally:
            share = member.advance(self._now()) - begun
            self._give_back(member, failure)
        assert member.lease.machine is not None
        convert = sum(r.timings.convert for r in responses)
        store = sum(r.timings.store for r in responses)
        timings = JobTimings(
            wait=timer.get("wait"),
            transfer=timer.get("stream") - convert - store,
            convert=convert,
            store=store,
            total=timer.elapsed(),
            machine_seconds=share,
        )
        cost = share * dispatcher.settings.price_per_second
        return JobResult(job_id, member.lease.machine.id, responses, timings, cost)

    async def start(self) -> None:
        """Create the `min` machines (without waiting for them)."""
        self._top_up()

    def stats(self) -> PoolStats:
        now = self._now()
        ready = [m for m in self._members if m.ready]
        return PoolStats(
            machines=len(self._members),
            booting=len(self._members) - len(ready),
            busy=sum(1 for m in ready if m.busy > 0),
            idle=sum(1 for m in ready if m.busy == 0),
            stopped=len(self._stopped),
            jobs_running=sum(m.busy for m in ready),
            jobs_waiting=self._waiting,
            idle_seconds=self._idle_total
            + sum(now - m.idle_since for m in ready if m.idle_since is not None),
            retired_bad_input=dict(self._retired_bad_input),
        )

    async def close(self) -> None:
        """Stop taking jobs; let running jobs finish (up to the job timeout), destroy every
        machine, wait for the destroys."""
        self._closed = True
        self._notify()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.dispatcher.settings.job_timeout):
                while any(m.busy for m in self._members):
                    await self._wake.wait()
        for member in list(self._members):
            if member.ready:
                self._retire(member, "the gateway is shutting down")
            elif member.booting is not None:
                member.booting.cancel()  # its boot ends by destroying what it made
        while self._stopped:
            self._release(self._stopped.pop(), "the gateway is shutting down")
        while self._tasks or self._members:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
            # a boot cancelled before it began (a stopped machine's start just asked for) never
            # reached its own clean-up: its machine is destroyed here
            for member in list(self._members):
                self._retire(member, "the gateway is shutting down")

    # -- taking and giving back a machine ------------------------------------------------------

    async def _take(self) -> _Member:
        self._waiting += 1
        grown: list[_Member] = []
        try:
            while True:
                if self._closed:
                    raise WorkerUnavailable("the gateway is shutting down; try again shortly")
                member = self._free()
                if member is not None:
                    self._occupy(member)
                    if await self._healthy(member):
                        return member
                    continue
                failed = next((m for m in grown if m.error is not None), None)
                if failed is not None and isinstance(failed.error, Exception):
                    raise failed.error
                if self._may_grow():
                    grown.append(self._grow())
                    continue
                await self._changed()
        finally:
            self._waiting -= 1

    def _free(self) -> _Member | None:
        """A ready machine with room: the busiest first (pack jobs), then the most recently
        idle (the others reach their idle window)."""
        now = self._now()
        usable = [
            m
            for m in self._members
            if m.state is _State.READY
            and m.busy < self.settings.jobs_per_machine
            and now - m.born < self.settings.machine_lifetime
            and m.jobs < self.settings.max_jobs_per_machine
        ]
        if not usable:
            return None
        return max(usable, key=lambda m: (m.busy, m.idle_since or 0.0))

    def _may_grow(self) -> bool:
        if self._closed or self._alive() >= self.settings.max:
            return False
        booting = sum(1 for m in self._members if m.state is _State.BOOTING)
        return self._waiting > booting * self.settings.jobs_per_machine

    def _alive(self) -> int:
        """Machines that exist: in the pool, being destroyed, or being stopped."""
        return len(self._members) + self._destroying + self._parking

    async def _healthy(self, member: _Member) -> bool:
        """A reused machine must answer a Ping before it gets a job (one just booted answered
        its first Ping a moment ago). One Ping at a time per machine: a job that takes the
        machine while another job's Ping is in flight waits for that answer — it must not run
        on a machine that is about to be destroyed for failing it."""
        if member.check is None:
            if member.jobs == 0 and self._now() - member.ready_at < 1.0:
                return True
            if member.busy > 1:  # a job that passed its check runs on it right now: alive
                return True
            member.check = self._spawn(self._check(member))
        try:
            healthy = await asyncio.shield(member.check)
        except BaseException:
            self._give_back(member, None, counted=False)
            raise
        if not healthy:
            member.busy -= 1  # nothing of the job ran there: it looks for another machine
        return healthy

    async def _check(self, member: _Member) -> bool:
        try:
            await member.lease.client.ping(timeout=self.settings.health_timeout)
        except UplodrError as error:
            log.warning("machine failed its health check, destroying it: %s", error)
            self._retire(member, "failed its health check")
            return False
        finally:
            member.check = None
        return True

    def _occupy(self, member: _Member) -> None:
        now = self._now()
        member.advance(now)
        if member.idle_since is not None:
            self._idle_total += now - member.idle_since
            member.idle_since = None
        if member.timer is not None:
            member.timer.cancel()
            member.timer = None
        member.busy += 1

    def _give_back(
        self, member: _Member, failure: BaseException | None, counted: bool = True
    ) -> None:
        """A job is done with the machine: keep it, or — when the job failed — drain it (no new
        job; destroyed once its other jobs are done)."""
        member.advance(self._now())
        member.busy -= 1
        if counted:
            member.jobs += 1
        if failure is not None and member.state is _State.READY:
            self._drain(member, failure)
        if member.state is _State.DRAINING and member.busy == 0:
            self._retire(member, member.drain_reason)
        elif member.state is _State.READY and member.busy == 0:
            member.idle_since = self._now()
            self._review(member)
        self._notify()

    def _drain(self, member: _Member, failure: BaseException) -> None:
        """The machine takes no new job: it read a bad input, or a job on it failed otherwise
        (it may be dead, or busy with a cancelled conversion)."""
        member.move(_State.DRAINING)
        if isinstance(failure, UplodrError) and failure.about_input:
            self._retired_bad_input[failure.kind] += 1
            member.drain_reason = f"a job on it failed on its input ({failure.kind})"
        else:
            member.drain_reason = "a job on it failed"

    def _review(self, member: _Member) -> None:
        """Decide what becomes of an idle machine: destroy it now, or look again later."""
        if member.state is not _State.READY or member.busy > 0 or member.idle_since is None:
            return
        now = self._now()
        settings = self.settings
        if self._closed:
            self._retire(member, "the gateway is shutting down")
        elif member.jobs >= settings.max_jobs_per_machine:
            self._retire(member, f"it ran {member.jobs} jobs (--max-jobs-per-machine)")
        elif now - member.born >= settings.machine_lifetime:
            self._retire(member, "it reached the pool's machine lifetime")
        elif now - member.idle_since >= settings.idle and self._spare():
            if self._may_park(member):
                self._park(member)
            else:
                self._retire(member, f"idle for {settings.idle:g}s")
        else:
            end_of_life = member.born + settings.machine_lifetime
            at = (
                end_of_life
                if not self._spare()
                else min(end_of_life, member.idle_since + settings.idle)
            )
            loop = asyncio.get_running_loop()
            member.timer = loop.call_later(max(0.0, at - now), self._review, member)

    def _spare(self) -> bool:
        """More live machines than `min`: one may go."""
        return len(self._members) > self.settings.min

    # -- growing and shrinking -----------------------------------------------------------------

    def _grow(self) -> _Member:
        """A machine more: a stopped one started again if there is one, else a new one."""
        while self._stopped:
            member = self._stopped.pop()
            if self._now() - member.born < self.settings.machine_lifetime:
                member.move(_State.BOOTING)
                self._members.append(member)
                member.booting = self._spawn(self._boot(member, resume=True))
                return member
            self._release(member, "it reached the pool's machine lifetime while stopped")
        stoppable = self.settings.keep_stopped > 0
        lease = self.dispatcher.new_lease(lifetime=self.lifetime, stoppable=stoppable)
        member = _Member(lease, self._now())
        self._members.append(member)
        member.booting = self._spawn(self._boot(member))
        return member

    async def _boot(self, member: _Member, resume: bool = False) -> None:
        try:
            if resume:
                await member.lease.resume()
            else:
                if self._limiter is not None:
                    await self._limiter.acquire()
                member.born = member.ready_at = self._now()
                await member.lease.acquire()
        except BaseException as error:
            # A stopped machine that will not start again is replaced: nothing of a job ran
            # on it, so its waiter is not failed for it.
            if not resume:
                member.error = error
            self._retire(member, f"it did not become ready: {error}")
            if not isinstance(error, Exception):
                raise
            return
        finally:
            member.booting = None
        if member.state is not _State.BOOTING:  # retired while it booted (a shutdown)
            return
        member.move(_State.READY)
        member.ready_at = member.idle_since = self._now()
        member.advance(member.ready_at)
        self._review(member)
        self._notify()

    def _leave(self, member: _Member) -> None:
        """Take the machine out of the running pool (its idle time counted, its timer off)."""
        if member.idle_since is not None:
            self._idle_total += self._now() - member.idle_since
            member.idle_since = None
        if member.timer is not None:
            member.timer.cancel()
            member.timer = None
        self._members.remove(member)

    def _retire(self, member: _Member, why: str) -> None:
        """Take the machine out of the pool and destroy it (its lease's shielded release)."""
        if member.state not in _RUNNING:
            return  # retired already (or parked: `_release` ends those)
        self._leave(member)
        self._release(member, why)

    def _release(self, member: _Member, why: str) -> None:
        member.move(_State.RETIRED)
        if member.lease.machine is not None:
            log.info("pool: destroying machine %s: %s", member.lease.machine.id, why)
        self._destroying += 1
        self._spawn(self._destroy(member))
        self._notify()

    # -- stopped machines (--pool-keep-stopped) ------------------------------------------------

    def _may_park(self, member: _Member) -> bool:
        settings = self.settings
        young = self._now() - member.born < settings.machine_lifetime / 2
        room = len(self._stopped) + self._parking < settings.keep_stopped
        return young and room and not self._closed

    def _park(self, member: _Member) -> None:
        self._leave(member)
        member.move(_State.PARKING)
        self._parking += 1
        self._spawn(self._stop(member))
        self._notify()

    async def _stop(self, member: _Member) -> None:
        try:
            await member.lease.park()
        except Exception as error:
            self._release(member, f"it could not be stopped: {error}")
            return
        finally:
            self._parking -= 1
        if self._closed:
            self._release(member, "the gateway is shutting down")
            return
        member.move(_State.STOPPED)
        self._stopped.append(member)
        end_of_life = member.born + self.settings.machine_lifetime - self._now()
        loop = asyncio.get_running_loop()
        loop.call_later(max(0.0, end_of_life), self._expire_stopped, member)
        self._notify()

    def _expire_stopped(self, member: _Member) -> None:
        if member in self._stopped:
            self._stopped.remove(member)
            self._release(member, "it reached the pool's machine lifetime while stopped")

    async def _destroy(self, member: _Member) -> None:
        try:
            await member.lease.release()
        finally:
            self._destroying -= 1
            self._notify()
            self._top_up()

    def _top_up(self) -> None:
        while not self._closed and len(self._members) + self._destroying < self.settings.min:
            self._grow()

    def _spawn(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _notify(self) -> None:
        self._wake.set()
        self._wake = asyncio.Event()

    async def _changed(self) -> None:
        await self._wake.wait()
