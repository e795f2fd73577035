"""What the gateway does with one upload, independent of HTTP: answer it from storage when the
same bytes were converted before with the same preset and original choice, otherwise run a job
on a machine, whose worker sends the outputs back for the gateway to publish
(`uplodr.gateway.outputs`; workers hold no store credential); either way the answer is built by
`uplodr.gateway.answers`.

A request picks a named preset (`?preset=`; "default" is the gateway's own) and what happens to
the uploaded bytes (`?original=`); both go to the worker with the file, and both are in the
dedupe digest exactly as the worker computes it (`Preset.for_original`, then its fingerprint),
so a repeat is found only when it would have produced the same set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from uplodr import answer
from uplodr.dispatch.pool import Pool
from uplodr.dispatch.worker_client import UploadSource
from uplodr.errors import Busy, InvalidRequest
from uplodr.gateway import metrics
from uplodr.gateway.answers import from_job, from_storage
from uplodr.gateway.outputs import publish_outputs
from uplodr.gateway.spool import Spooled
from uplodr.names import SafeName
from uplodr.preset import OriginalMode, Preset
from uplodr.storage import Publisher
from uplodr.storage.catalog import ImageRef
from uplodr.storage.keys import content_digest

log = logging.getLogger("uplodr.gateway")

# The name of the gateway's own preset (`serve --preset`), what an upload without ?preset= gets.
DEFAULT_PRESET_NAME: Final = "default"


@dataclass(frozen=True)
class Choice:
    """What one request chose: a named preset and what to do with the original."""

    name: str
    preset: Preset  # as named, before the original choice is folded in (what the worker is sent)
    original: OriginalMode = "preset"

    @property
    def effective(self) -> Preset:
        """The preset the file is converted with: the one its digest and keys are made of."""
        return self.preset.for_original(self.original)


class ConversionService:
    """Converts uploads on the pool's machines, at most `max_machines` times `jobs_per_machine` at
    once (a machine is on the local provider a ~450 MB process, on Fly a bill); up to
    `max_queue` more wait for a turn, and beyond that an upload is answered 503 at once rather
    than piling up."""

    def __init__(
        self,
        pool: Pool,
        publisher: Publisher,
        preset: Preset,
        max_machines: int = 2,
        max_queue: int = 16,
        presets: Mapping[str, Preset] | None = None,
        jobs_per_machine: int = 1,
    ) -> None:
        self.pool = pool
        self.publisher = publisher
        self.preset = preset
        # The presets a request may name: "default" (the gateway's own preset) first.
        self.presets: dict[str, Preset] = {DEFAULT_PRESET_NAME: preset}
        self.presets.update((n, p) for n, p in (presets or {}).items() if n != DEFAULT_PRESET_NAME)
        self.max_machines = max_machines
        self.max_queue = max_queue
        self.slots = max_machines * jobs_per_machine
        self._slots = asyncio.Semaphore(self.slots)
        self._queued = 0

    @contextlib.asynccontextmanager
    async def _machine_slot(self) -> AsyncIterator[None]:
        if self._slots.locked() and self._queued >= self.max_queue:
            metrics.UPLOADS.labels(outcome="busy").inc()
            raise Busy(
                f"busy: {self.slots} conversion(s) running and {self._queued} waiting; "
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

    def choose(self, preset: str | None = None, original: OriginalMode = "preset") -> Choice:
        """The request's choice of preset (by name; None: the default) and original.
        InvalidRequest names the known presets when the name is not one."""
        name = DEFAULT_PRESET_NAME if preset is None else preset
        if name not in self.presets:
            shown = name if len(name) <= 40 else name[:39] + "…"
            raise InvalidRequest(
                f"unknown preset {shown!r}; known presets: {', '.join(self.presets)}"
            )
        return Choice(name, self.presets[name], original)

    async def convert(
        self,
        spooled: Spooled,
        name: SafeName,
        folder: str,
        choice: Choice | None = None,
        alt: str = "",
    ) -> answer.Conversion:
        started = time.monotonic()
        choice = choice or self.choose()
        digest = content_digest(spooled.sha256, choice.effective.fingerprint())
        ref = ImageRef(folder, name.stem, self.publisher.key_digest(digest))
        known = await self.publisher.lookup(folder, name.stem, digest)
        if known is not None:
            metrics.UPLOADS.labels(outcome="deduplicated").inc()
            timings = {"total": round(time.monotonic() - started, 4)}
            return from_storage(known, name.file_name, ref, alt, timings)
        with tempfile.TemporaryDirectory(prefix="uplodr-outputs-") as outputs:
            source = UploadSource(
                spooled.path,
                name.file_name,
                folder,
                choice.preset.to_json(),
                choice.original,
                outputs=Path(outputs),
            )
            async with self._machine_slot():
                result = await self.pool.run([source])
            # The machine is free again: publishing is the gateway's, after the job.
            publish_started = time.monotonic()
            published = await publish_outputs(
                self.publisher,
                result.responses[0],
                Path(outputs),
                folder,
                name.stem,
                digest,
                choice.effective.to_json(),
                name.file_name,
                alt,
            )
        stored = time.monotonic() - publish_started
        result.timings.store += stored
        result.timings.total += stored
        cost = result.cost
        conversion = from_job(result, published, alt, ref)
        metrics.observe_job(
            result.timings.as_dict(),
            [(v.format or "", v.quality) for v in conversion.variants if v.quality is not None],
        )
        log.info(
            "job %s on %s: %.2fs total, %.2f machine-seconds, cost %.6f",
            result.job_id,
            result.machine_id,
            result.timings.total,
            result.timings.machine_seconds,
            cost,
        )
        return conversion
