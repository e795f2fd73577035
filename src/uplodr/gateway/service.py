"""What the gateway does with one upload, independent of HTTP: answer it from storage when the
same bytes were converted before with the same preset and original choice, otherwise run a job
on a machine — and build the one typed answer (`uplodr.answer.Conversion`, which the client
decodes and the OpenAPI document is made from) the same way from either: a repeated upload gets
the answer of the first, `<picture>` markup and placeholder included, only with no job.

A request picks a named preset (`?preset=`; "default" is the gateway's own) and what happens to
the uploaded bytes (`?original=`); both go to the worker with the file, and both are in the
dedupe digest exactly as the worker computes it (`Preset.for_original`, then its fingerprint),
so a repeat is found only when it would have produced the same set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final, Protocol

import msgspec

from uplodr import answer
from uplodr.dispatch.dispatcher import Dispatcher
from uplodr.dispatch.job import JobResult
from uplodr.dispatch.worker_client import UploadSource
from uplodr.errors import Busy, InvalidRequest
from uplodr.gateway import metrics
from uplodr.gateway.spool import Spooled
from uplodr.markup import MarkupError, picture
from uplodr.names import SafeName
from uplodr.preset import OriginalMode, Preset
from uplodr.storage import Published, Publisher
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


def answer_json(conversion: answer.Conversion) -> dict[str, Any]:
    """The answer as JSON: every field, `null` where unknown, and no `job` when no machine ran."""
    data: dict[str, Any] = msgspec.to_builtins(conversion)
    if data.get("job") is None:
        data.pop("job", None)
    return data


def markup(variants: Iterable[answer.Variant], alt: str) -> str | None:
    """The `<picture>` element for these variants; None when there is nothing a page can show
    (only the original was kept)."""
    try:
        return picture([asdict(v) for v in variants], alt=alt)
    except MarkupError:
        return None


class _StoredVariant(Protocol):
    """A variant as storage's manifest and the worker's answer both describe it."""

    @property
    def url(self) -> str: ...
    @property
    def mime_type(self) -> str: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def size_bytes(self) -> int: ...
    @property
    def format(self) -> str: ...
    @property
    def role(self) -> str: ...


def _variant(v: _StoredVariant) -> answer.Variant:
    # "" is what a manifest or worker from before these fields says: unknown.
    return answer.Variant(
        url=v.url,
        mime_type=v.mime_type,
        width=v.width,
        height=v.height,
        size_bytes=v.size_bytes,
        format=v.format or None,
        role=v.role or None,
    )


def _conversion(
    file_name: str,
    folder: str,
    variants: Sequence[answer.Variant],
    *,
    deduplicated: bool,
    timings: dict[str, float],
    size: tuple[int, int] | None,
    placeholder: Mapping[str, str] | None,
    alt: str,
    job: answer.Job | None = None,
) -> answer.Conversion:
    return answer.Conversion(
        file_name=file_name,
        folder=folder,
        variants=tuple(variants),
        deduplicated=deduplicated,
        timings=timings,
        width=size[0] if size else None,
        height=size[1] if size else None,
        placeholder=answer.Placeholder(**placeholder) if placeholder else None,
        html=markup(variants, alt),
        job=job,
    )


def from_storage(
    published: Published, file_name: str, folder: str, alt: str, timings: dict[str, float]
) -> answer.Conversion:
    """The answer of a set found in storage (its manifest)."""
    info = published.info
    return _conversion(
        file_name,
        folder,
        [_variant(v) for v in published.variants],
        deduplicated=published.deduplicated,
        timings=timings,
        size=(info.width, info.height) if info else None,
        placeholder=info.placeholder if info else None,
        alt=alt,
    )


def from_worker(result: JobResult, alt: str) -> answer.Conversion:
    """The answer of a job's conversion of one file (an older worker leaves the new fields
    empty: they are answered as unknown)."""
    (response,) = result.responses
    placeholder = response.placeholder if response.HasField("placeholder") else None
    return _conversion(
        response.file_name,
        response.folder,
        [_variant(v) for v in response.variants],
        deduplicated=response.deduplicated,
        timings=result.timings.as_dict(),
        size=(response.width, response.height) if response.width and response.height else None,
        placeholder=(
            {
                "thumbhash": placeholder.thumbhash,
                "blurhash": placeholder.blurhash,
                "data_url": placeholder.data_url,
            }
            if placeholder is not None
            else None
        ),
        alt=alt,
        job=answer.Job(
            id=result.job_id,
            machine=result.machine_id,
            machine_seconds=round(result.timings.machine_seconds, 4),
            cost=result.cost,
        ),
    )


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
        presets: Mapping[str, Preset] | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.publisher = publisher
        self.preset = preset
        # The presets a request may name: "default" (the gateway's own preset) first.
        self.presets: dict[str, Preset] = {DEFAULT_PRESET_NAME: preset}
        self.presets.update((n, p) for n, p in (presets or {}).items() if n != DEFAULT_PRESET_NAME)
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
        known = await self.publisher.lookup(folder, name.stem, digest)
        if known is not None:
            metrics.JOBS.labels(outcome="deduplicated").inc()
            timings = {"total": round(time.monotonic() - started, 4)}
            return from_storage(known, name.file_name, folder, alt, timings)
        source = UploadSource(
            spooled.path, name.file_name, folder, choice.preset.to_json(), choice.original
        )
        async with self._machine_slot():
            result = await self.dispatcher.run([source])
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
        return from_worker(result, alt)
