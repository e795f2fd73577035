"""Which phase a dispatcher's job is in, watched through the public lease events: create →
boot → stream → destroy. Tests and the fault bench cancel jobs at a chosen phase with it."""

from __future__ import annotations

import asyncio

from uplodr.dispatch.events import Event, EventKind, Events

PHASES = ("create", "boot", "stream", "destroy")
_ENTERS = {
    EventKind.CREATE_REQUESTED: "create",
    EventKind.CREATED: "boot",
    EventKind.READY: "stream",
    EventKind.DESTROY_REQUESTED: "destroy",
}


class PhaseWatch:
    """The phase of the (one) lease at a time that `events` report; `entered[phase]` is set
    once it began. `reset()` before the next job."""

    def __init__(self, events: Events) -> None:
        self.phase = "idle"
        self.entered: dict[str, asyncio.Event] = {}
        self.lease_id = ""
        self.machine_id = ""
        self.reset()
        self.stop = events.subscribe(self._see)

    def reset(self) -> PhaseWatch:
        self.phase = "idle"
        self.entered = {phase: asyncio.Event() for phase in PHASES}
        self.lease_id = self.machine_id = ""
        return self

    def _see(self, event: Event) -> None:
        if event.kind is EventKind.CREATE_REQUESTED:
            self.lease_id = event.lease_id
        if event.machine_id:
            self.machine_id = event.machine_id
        phase = _ENTERS.get(event.kind)
        if phase is not None:
            self.phase = phase
            self.entered[phase].set()
