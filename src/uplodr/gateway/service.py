"""What the gateway does with one upload, independent of HTTP: answer it from storage when the
same bytes were converted before with the same preset, otherwise run a job on a machine."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from uplodr.dispatch.job import Dispatcher
from uplodr.dispatch.worker_client import UploadSource
from uplodr.errors import Busy
from uplodr.gateway import metrics
from uplodr.gateway.spool import Spooled
from uplodr.names import SafeName
from uplodr.preset import Preset
from uplodr.storage import Published, Publisher
from uplodr.storage.keys import content_digest

log = logging.getLogger("uplodr.gateway")


@dataclass
class Answer:
    file_name: str
    folder: str
    variants: list[dict[str, Any]]
    deduplicated: bool
    timings: dict[str, float]
    job: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "file_name": self.file_name,
            "folder": self.folder,
            "variants": self.variants,
            "deduplicated": self.deduplicated,
            "timings": self.timings,
            **({"job": self.job} if self.job else {}),
        }


def _variants_from_storage(published: Published) -> list[dict[str, Any]]:
    return [
        {
            "url": v.url,
            "mime_type": v.mime_type,
            "width": v.width,
            "height": v.height,
            "size_bytes": v.size_bytes,
        }
        for v in published.variants
    ]


class ConversionService:
    """Converts uploads, at most `max_machines` at once (each job is a machine: on the local
    provider a ~450 MB process, on Fly a bill); up to `max_queue` more wait for a turn, and
    beyond that an upload is answered 503 at once rather than piling up machines."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        publisher: Publisher,
        preset: Preset,
        max_machines: int = 2,
        max_queue: int = 16,
    ) -> None:
        self.dispatcher = dispatcher
        self.publisher = publisher
        self.preset = preset
        self._fingerprint = preset.fingerprint()
        self.max_machines = max_machines
        self.max_queue = max_queue
        self._slots = asyncio.Semaphore(max_machines)
        self._queued = 0

    @contextlib.asynccontextmanager
    async def _machine_slot(self) -> AsyncIterator[None]:
        if self._slots.locked() and self._queued >= self.max_queue:
            metrics.JOBS.labels(outcome="busy").inc()
            raise Busy(
                f"busy: {self.max_machines} conversion(s) running and {self._queued} waiting; "
                "try again shortly"
            )
        self._queued += 1
        metrics.WAITING.inc()
        try:
            await self._slots.acquire()
        finally:
            self._queued -= 1
            metrics.WAITING.dec()
        metrics.RUNNING.inc()
        try:
            yield
        finally:
            metrics.RUNNING.dec()
            self._slots.release()

    async def convert(self, spooled: Spooled, name: SafeName, folder: str) -> Answer:
        started = time.monotonic()
        digest = content_digest(spooled.sha256, self._fingerprint)
        known = await self.publisher.lookup(folder, name.stem, digest)
        if known is not None:
            metrics.JOBS.labels(outcome="deduplicated").inc()
            return Answer(
                name.file_name,
                folder,
                _variants_from_storage(known),
                deduplicated=True,
                timings={"total": round(time.monotonic() - started, 4)},
            )
        async with self._machine_slot():
            result = await self.dispatcher.run([UploadSource(spooled.path, name.file_name, folder)])
        cost = result.cost
        metrics.observe_job(result.timings.as_dict())
        log.info(
            "job %s on %s: %.2fs total, %.2f machine-seconds, cost %.6f",
            result.job_id,
            result.machine_id,
            result.timings.total,
            result.timings.machine_seconds,
            cost,
        )
        (response,) = result.responses
        return Answer(
            response.file_name,
            response.folder,
            [
                {
                    "url": v.url,
                    "mime_type": v.mime_type,
                    "width": v.width,
                    "height": v.height,
                    "size_bytes": v.size_bytes,
                }
                for v in response.variants
            ],
            deduplicated=response.deduplicated,
            timings=result.timings.as_dict(),
            job={
                "id": result.job_id,
                "machine": result.machine_id,
                "machine_seconds": round(result.timings.machine_seconds, 4),
                "cost": cost,
            },
        )
