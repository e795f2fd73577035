"""The provider contract: create, wait, list, destroy. Five calls, nothing about images.

A provider runs uplodr workers (`uplodr worker`) on machines it creates. It decides where the
worker listens and reports that as `Machine.address`; the worker's configuration arrives as
environment variables in `MachineSpec.env`. Tags identify uplodr's machines so that a reaper in
another process can find them and never touch anything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

# Every machine uplodr creates carries this tag; the reaper and `machines ls` only ever
# look at machines that have it.
MARKER_TAG = "uplodr"
MARKER_VALUE = "worker"


@dataclass(frozen=True)
class MachineSpec:
    """What to run: the worker's environment, tags, and the machine's size."""

    env: Mapping[str, str]
    tags: Mapping[str, str]
    memory_mb: int | None = None


@dataclass(frozen=True)
class Machine:
    id: str
    address: str  # host:port where the worker's gRPC server listens
    tags: Mapping[str, str] = field(default_factory=dict)
    created_at: float = 0.0  # unix time
    state: str = "unknown"


class Provider(Protocol):
    name: str

    async def create(self, spec: MachineSpec) -> Machine:
        """Create and start a machine running a worker. Raises WorkerUnavailable/ProviderError."""
        ...

    async def wait_started(self, machine: Machine, timeout: float) -> None:
        """Return once the provider reports the machine started (not that the worker answers)."""
        ...

    async def list(self, tags: Mapping[str, str]) -> list[Machine]:
        """Machines whose tags include all of `tags` (always including the uplodr marker)."""
        ...

    async def destroy(self, machine_id: str) -> None:
        """Destroy the machine; a machine that is already gone is not an error."""
        ...

    async def failure(self, machine_id: str) -> str | None:
        """Why the machine stopped, when the provider knows (e.g. "out of memory (512 MB
        limit)"); None when it is running or the reason is unknown. Call before destroy."""
        ...

    async def aclose(self) -> None: ...
