"""The provider contract: create, wait, list, destroy, failure — and what a provider can do.

A provider runs uplodr workers (`uplodr worker`) on machines it creates. It decides where the
worker listens and reports that as `Machine.address`; the worker's configuration arrives as
environment variables in `MachineSpec.env`. Tags identify uplodr's machines so that a reaper in
another process can find them and never touch anything else: `create` always adds the marker
tag, and `list` only ever returns machines that carry it.

Everything the gateway asks of a provider beyond these calls is in its `Capabilities`: whether
a worker sees the host's folders, how many machines to run at once by default, what a
machine-second costs, how fast machines may be created. Providers are chosen by name from
`uplodr.machines.providers`; `tests/machines/contract/` is the suite every provider passes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from uplodr.errors import UplodrError

# Every machine uplodr creates carries this tag; the reaper and `machines ls` only ever
# look at machines that have it.
MARKER_TAG = "uplodr"
MARKER_VALUE = "worker"


@dataclass(frozen=True)
class MachineSpec:
    """What to run: the worker's environment, tags, and the machine's size.

    `memory_mb` and `cpus` override the provider's defaults for this machine. `host_paths` are
    folders on the gateway's host that the worker must read and write at the same path (a
    local-folder store); a provider whose `capabilities.shares_host_files` is true makes them
    visible (the local provider runs on the host; a container provider bind-mounts them)."""

    env: Mapping[str, str]
    tags: Mapping[str, str]
    memory_mb: int | None = None
    cpus: int | None = None
    host_paths: tuple[Path, ...] = ()
    # The pool may `stop` this machine and `start` it again: the provider keeps it when its
    # worker exits (instead of, on Fly, auto-destroying it); the reaper ends it by its tags.
    stoppable: bool = False


@dataclass(frozen=True)
class Machine:
    id: str
    address: str  # host:port where the worker's gRPC server listens
    tags: Mapping[str, str] = field(default_factory=dict)
    created_at: float = 0.0  # unix time
    # "started" while it runs, "stopped" once its worker exited and it waits to be destroyed;
    # providers may report their own intermediate states ("created", "starting", ...)
    state: str = "unknown"


class StopKind(StrEnum):
    """Why a machine's worker stopped, as the provider saw it."""

    OUT_OF_MEMORY = "out_of_memory"  # the kernel's OOM killer (cgroup, container, Fly VM)
    KILLED = "killed"  # a signal other than the OOM killer's (a crash: SIGSEGV, SIGABRT, …)
    EXITED = "exited"  # the worker exited by itself, with `exit_code`
    DEADLINE = "deadline"  # it ended itself, cleanly, once its `deadline` tag had passed
    GONE = "gone"  # the machine (or its engine) no longer exists: nothing more is known


@dataclass(frozen=True)
class StopReason:
    """Why a machine stopped: what the lease and the pool decide from (never its text).

    `str()` is the one line a client may read ("out of memory (512 MB limit)", "killed by
    signal 9", "exited with code 3: <last line it logged>"); `detail` is the provider's own
    one line (an engine's error, the worker's last log line), already free of secrets."""

    kind: StopKind
    exit_code: int | None = None  # EXITED: the code; KILLED: the signal's number
    memory_mb: int | None = None  # OUT_OF_MEMORY: the limit it hit, when known
    detail: str = ""

    @classmethod
    def out_of_memory(cls, memory_mb: int | None = None) -> StopReason:
        return cls(StopKind.OUT_OF_MEMORY, memory_mb=memory_mb or None)

    @classmethod
    def killed(cls, signal: int, detail: str = "") -> StopReason:
        return cls(StopKind.KILLED, exit_code=signal, detail=detail)

    @classmethod
    def exited(cls, code: int, detail: str = "") -> StopReason:
        return cls(StopKind.EXITED, exit_code=code, detail=detail)

    @classmethod
    def gone(cls, detail: str) -> StopReason:
        return cls(StopKind.GONE, detail=detail)

    @classmethod
    def deadline(cls, detail: str) -> StopReason:
        return cls(StopKind.DEADLINE, detail=detail)

    def at_deadline(self, tags: Mapping[str, str], now: float) -> StopReason:
        """This reason, or DEADLINE when it is a clean exit after the machine's `deadline`
        tag: the worker ended itself at its maximum lifetime (the tag and the worker's
        `--max-lifetime` are the same span), which is neither a crash nor the input's."""
        if self.kind is not StopKind.EXITED or self.exit_code != 0:
            return self
        try:
            deadline = float(tags["deadline"])
        except (KeyError, ValueError):
            return self
        if now < deadline:
            return self
        return StopReason.deadline("it reached the end of its lifetime")

    @property
    def crashed(self) -> bool:
        """The worker died by a signal or a non-zero exit: a fault in the process itself."""
        if self.kind is StopKind.KILLED:
            return True
        return self.kind is StopKind.EXITED and self.exit_code != 0

    def __str__(self) -> str:
        kind = self.kind
        if kind is StopKind.OUT_OF_MEMORY:
            limit = f" ({self.memory_mb} MB limit)" if self.memory_mb else ""
            return f"out of memory{limit}"
        if kind is StopKind.KILLED:
            line = f"killed by signal {self.exit_code}"
        elif kind is StopKind.EXITED:
            if self.exit_code is None:  # stopped, and the provider knows no more
                return self.detail or "exited"
            line = f"exited with code {self.exit_code}" if self.exit_code else "exited"
        else:
            return self.detail or kind.value
        return f"{line}: {self.detail}" if self.detail else line


@dataclass(frozen=True)
class RateLimit:
    """At most `per_second` requests on average, `burst` at once (a token bucket)."""

    per_second: float
    burst: int = 1


@dataclass(frozen=True)
class Capabilities:
    """What the gateway (and the pool) may rely on a provider for."""

    # A worker reads and writes the gateway host's folders at the same path (MachineSpec.
    # host_paths), so a local-folder store works. False: the gateway refuses a local store.
    shares_host_files: bool
    # Machines at once when the user does not say (--max-machines).
    default_max_machines: int
    # Price of one machine-second of the configured machine size, to report each job's cost.
    price_per_second: float = 0.0
    # How fast machines may be created; None: as fast as asked.
    create_rate: RateLimit | None = None
    # A stopped machine can be started again (a pool may keep stopped machines).
    can_stop: bool = False

    def __post_init__(self) -> None:
        if self.default_max_machines < 1:
            raise ValueError("default_max_machines must be at least 1")
        if self.price_per_second < 0:
            raise ValueError("price_per_second must not be negative")


class Provider(Protocol):
    """Machines of one kind. Every call is safe to make from several tasks at once."""

    @property
    def name(self) -> str: ...

    @property
    def capabilities(self) -> Capabilities: ...

    async def create(self, spec: MachineSpec) -> Machine:
        """Create and start a machine running a worker, tagged with `spec.tags` and the marker.
        Raises WorkerUnavailable (may be retried) or ProviderError (configuration: it will not
        work by retrying)."""
        ...

    async def wait_started(self, machine: Machine, timeout: float) -> None:
        """Return once the provider reports the machine started (not that the worker answers);
        raise WorkerUnavailable when it will not (gone, stopped, `timeout` passed)."""
        ...

    async def list(self, tags: Mapping[str, str]) -> list[Machine]:
        """Machines not yet destroyed whose tags include all of `tags` and the uplodr marker;
        never a machine without the marker, whatever `tags` asks."""
        ...

    async def destroy(self, machine_id: str) -> None:
        """Destroy the machine; a machine that is already gone is not an error. Returns once it
        is gone."""
        ...

    async def stop(self, machine_id: str) -> None:
        """Stop the machine without destroying it; return once it is stopped. Only when
        `capabilities.can_stop` (others raise ProviderError); WorkerUnavailable when it is gone
        or the provider fails."""
        ...

    async def start(self, machine_id: str) -> Machine:
        """Start a stopped machine again; the machine as started (its address may change).
        Follow with `wait_started`. Only when `capabilities.can_stop` (others raise
        ProviderError); WorkerUnavailable when it is gone or will not start."""
        ...

    async def failure(self, machine_id: str) -> StopReason | None:
        """Why the machine stopped, when the provider knows (`StopReason.out_of_memory(512)`,
        `exited(3)`, `killed(9)`, `gone(...)` once it no longer exists); None while it runs or
        when the reason is unknown. Call before destroy."""
        ...

    async def check(self) -> None:
        """Whether a machine can be started now, answered quickly (a few seconds at most,
        without creating one): the provider's service answers, the credentials and image are
        good. Raises ProviderError (configuration) or WorkerUnavailable (outage) with one line
        naming what failed. `uplodr doctor` runs it."""
        ...

    async def aclose(self) -> None:
        """Release the provider's own resources (connections; machines it still owns)."""
        ...


def has_tags(tags: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    """True when `tags` carry the uplodr marker and every one of `wanted` (asking for another
    marker value cannot widen the search)."""
    if tags.get(MARKER_TAG) != MARKER_VALUE:
        return False
    return all(tags.get(key) == value for key, value in wanted.items())


def marked(tags: Mapping[str, str]) -> dict[str, str]:
    """`tags` with the uplodr marker, as `create` must store them."""
    return {**{str(k): str(v) for k, v in tags.items()}, MARKER_TAG: MARKER_VALUE}


async def destroy_leftovers(
    creating: Collection[asyncio.Task[Machine]],
    ours: Collection[str],
    destroy: Callable[[str], Awaitable[None]],
    what: str,
    log: logging.Logger,
) -> None:
    """At a provider's `aclose`: let the creates in flight settle, then destroy every machine it
    made that nobody destroyed. A failure is logged (one line naming `what`, e.g. "worker pod")
    and the rest go on: the reaper finds a leftover by its marker."""
    if creating:
        await asyncio.gather(*creating, return_exceptions=True)
    for machine_id in sorted(ours):
        try:
            await destroy(machine_id)
        except UplodrError as error:
            log.error("could not remove %s %s: %s", what, machine_id, error)
