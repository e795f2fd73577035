"""What happens to machines and jobs, as public events: observers subscribe instead of
overriding private methods (the fault bench, metrics, logs, tests).

A lease (one machine's life, `uplodr.dispatch.lease`) emits, in order:
    create_requested → created → ready → (job_started → job_finished)* →
    (stopped → ready → (job_started → job_finished)*)* →
    destroy_requested → destroyed | destroy_failed → released
(`stopped`: a pool parked the machine; the `ready` after it is its start again.)
A lease that fails early skips what did not happen (a refused create goes straight to
`released`); a create whose answer was lost still gets `destroy_requested` for the machine
found by its tag. `released` always comes last, once per lease, with the machine-seconds the
lease used (create requested → destroy confirmed; 0 when no machine existed).

Observers are plain callables run in the emitting task; they must be quick and must not block.
An observer that raises is logged and otherwise ignored: watching never breaks a job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

log = logging.getLogger("uplodr.dispatch")


class EventKind(StrEnum):
    CREATE_REQUESTED = "create_requested"
    CREATED = "created"
    READY = "ready"  # the worker answered its first Ping; machine_seconds: create → ready
    JOB_STARTED = "job_started"
    JOB_FINISHED = "job_finished"  # detail: "ok", an error code, or "cancelled"
    STOPPED = "stopped"  # parked by the pool (provider.stop), to be started again
    DESTROY_REQUESTED = "destroy_requested"
    DESTROYED = "destroyed"
    DESTROY_FAILED = "destroy_failed"  # detail: why; the reaper will find the machine
    RELEASED = "released"  # machine_seconds: what the lease used


@dataclass(frozen=True)
class Event:
    kind: EventKind
    at: float  # monotonic seconds, from the lease's clock
    lease_id: str
    machine_id: str | None = None
    job_id: str | None = None  # on job events, and on every event of a lease made for one job
    detail: str = ""
    machine_seconds: float = 0.0


Observer = Callable[[Event], None]


class Events:
    """Where events go: every subscribed observer, in subscription order."""

    def __init__(self) -> None:
        self._observers: list[Observer] = []

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Start sending events to `observer`; returns the call that stops it."""
        self._observers.append(observer)
        return lambda: self._observers.remove(observer)

    def emit(self, event: Event) -> None:
        for observer in list(self._observers):
            try:
                observer(event)
            except Exception:
                log.exception("event observer %r failed on %s", observer, event.kind)


def log_event(event: Event) -> None:
    """An observer that logs a machine's life: one line per event that matters to a reader."""
    scope = f"lease {event.lease_id}" + (f", job {event.job_id}" if event.job_id else "")
    machine = f"machine {event.machine_id}"
    if event.kind is EventKind.CREATED:
        log.info("%s: %s created", scope, machine)
    elif event.kind is EventKind.DESTROYED:
        log.info("%s: %s destroyed", scope, machine)
    elif event.kind is EventKind.DESTROY_FAILED:
        log.error("%s: could not destroy %s (left to the reaper): %s", scope, machine, event.detail)
