"""Re-derive a folder's images with another preset, from their kept originals, on the pool.

When a site's design changes (new widths, a new format), every set under a folder whose
manifest lists a kept original (a variant of role "original") is converted again with the new
preset through the very path an upload takes — `ConversionService.convert`: the dedupe lookup,
a machine of the pool, `publish_outputs` — with the original kept in the new set too, so that
it can be rebuilt again. A set without a kept original is listed as skipped: re-encoding a lossy
variant would compound its loss, so it is never done.

Resumable for free: the new set's digest is made of the original's SHA-256 and the new preset's
fingerprint, the digest an upload of the same bytes with that preset gets; a set rebuilt before
(by an interrupted run, or uploaded so) is found by the dedupe lookup, and no machine runs
("already done"). Sets whose own manifest is in the new preset (the new sets themselves) are
no work at all ("current").

`replace`: the old set is deleted (`storage.removal.delete_image`, every store) only after its
new set is published — or found published — never before, so an interruption leaves both sets,
never neither, and the next run finishes the deletion.

At most `concurrency` sets are in hand at once (the pool's size): each one's original is
streamed from the primary store (`Store.get_stream`, a megabyte at a time) to a temporary file
as an upload is spooled, hashed on the way (`gateway.spool`): a lane holds a chunk, never a
whole original (up to the upload limit, 64 MiB, each), so a gateway with a pool of ten stays
as small as one with a pool of two.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from uplodr import answer
from uplodr.errors import Busy, InvalidRequest, NotFound, UplodrError
from uplodr.gateway.service import Choice, ConversionService
from uplodr.gateway.spool import spool, spool_folder
from uplodr.names import SafeName, safe_file_name
from uplodr.storage.catalog import ImageRef, manifests_under, read_image
from uplodr.storage.removal import delete_image

log = logging.getLogger("uplodr.rebuild")

State = Literal["running", "stopping", "done", "stopped", "failed"]
# Finished rebuilds a gateway remembers (each a few hundred bytes plus its failures' lines).
KEEP_FINISHED = 64
# Failures and skipped sets listed one by one; beyond, only counted (an answer stays small).
MAX_LISTED = 1000


@dataclass
class Progress:
    """How far one rebuild got: what the CLI's bar and summary and the HTTP answer show."""

    folder: str
    preset: str
    replace: bool
    id: str = field(default_factory=lambda: "rb_" + secrets.token_urlsafe(12))
    state: State = "running"
    total: int = 0
    rebuilt: int = 0
    already_done: int = 0
    current: int = 0
    replaced: int = 0
    skipped: list[str] = field(default_factory=list)
    failed: list[answer.RebuildFailure] = field(default_factory=list)
    machine_seconds: float = 0.0
    cost: float = 0.0
    error: str | None = None

    @property
    def finished(self) -> int:
        """Sets dealt with, whatever the outcome."""
        return (
            self.rebuilt + self.already_done + self.current + len(self.skipped) + len(self.failed)
        )

    def fail(self, image: str, error: UplodrError) -> None:
        line = " ".join(str(error).split())
        self.failed.append(answer.RebuildFailure(image, error.code, line))

    def as_answer(self) -> answer.Rebuild:
        return answer.Rebuild(
            id=self.id,
            folder=self.folder,
            preset=self.preset,
            replace=self.replace,
            state=self.state,
            total=self.total,
            rebuilt=self.rebuilt,
            already_done=self.already_done,
            current=self.current,
            skipped=tuple(self.skipped[:MAX_LISTED]),
            failed=tuple(self.failed[:MAX_LISTED]),
            replaced=self.replaced,
            machine_seconds=round(self.machine_seconds, 3),
            cost=round(self.cost, 6),
            error=self.error,
        )


def _shown(ref: ImageRef) -> str:
    return f"{ref.folder}/{ref.stem}" if ref.folder else ref.stem


def _original_of(manifest: dict[str, Any]) -> dict[str, Any] | None:
    for item in manifest["variants"]:
        if isinstance(item, dict) and item.get("role") == "original" and "key" in item:
            return item
    return None


def display_name(manifest: dict[str, Any], ref: ImageRef, original_key: str) -> SafeName:
    """The name the set is converted under: the manifest's `file_name` (manifest v3) when it has
    one, else the stem and the original's extension; its key stem is always the old set's, so
    the new set sits beside it."""
    ext = original_key.rsplit(".", 1)[-1] if "." in original_key.rsplit("/", 1)[-1] else ""
    given = manifest.get("file_name")
    file_name = given if isinstance(given, str) and given else f"{ref.stem}.{ext}"
    try:
        return SafeName(safe_file_name(file_name).file_name, ref.stem)
    except InvalidRequest:
        return SafeName(f"{ref.stem}.{ext}", ref.stem)


class Rebuilder:
    """One rebuild of `folder` with the named preset on `service`'s pool."""

    def __init__(
        self,
        service: ConversionService,
        progress: Progress,
        *,
        concurrency: int,
        max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        if service.publisher.key_mode != "digest":
            # name mode: the new set's keys would be the old set's own
            raise InvalidRequest("rebuild needs digest keys (--keys digest)")
        self.service = service
        self.progress = progress
        self.choice: Choice = service.choose(progress.preset, "keep")
        self._target = json.loads(self.choice.effective.to_json())
        self.concurrency = max(1, concurrency)
        self.max_bytes = max_bytes
        self.stopping = asyncio.Event()
        self._targets: dict[tuple[str, str, str], asyncio.Lock] = {}

    def stop(self) -> None:
        """Start no other set; the ones in hand finish."""
        self.stopping.set()
        if self.progress.state == "running":
            self.progress.state = "stopping"

    async def run(self) -> Progress:
        progress = self.progress
        store = self.service.publisher.primary
        try:
            listed = await manifests_under(store, progress.folder)
        except UplodrError as error:
            progress.state, progress.error = "failed", str(error)
            return progress
        progress.total = len(listed)
        refs: Iterator[ImageRef] = iter([ref for ref, _ in listed])

        async def lane() -> None:
            while not self.stopping.is_set():
                ref = next(refs, None)
                if ref is None:
                    return
                await self._one(ref)

        await asyncio.gather(*(lane() for _ in range(self.concurrency)))
        progress.state = "stopped" if progress.finished < progress.total else "done"
        return progress

    async def _one(self, ref: ImageRef) -> None:
        progress = self.progress
        try:
            await self._rebuild(ref)
        except UplodrError as error:
            progress.fail(_shown(ref), error)
        except Exception:
            log.exception("rebuild of %s failed", _shown(ref))
            progress.fail(_shown(ref), UplodrError("internal error"))

    async def _rebuild(self, ref: ImageRef) -> None:
        progress = self.progress
        store = self.service.publisher.primary
        image = await read_image(store, ref)
        if image is None:  # deleted since the listing
            raise NotFound("the set was deleted during the rebuild")
        if image.manifest.get("preset") == self._target:
            progress.current += 1
            return
        original = _original_of(image.manifest)
        if original is None:
            progress.skipped.append(_shown(ref))
            return
        key = str(original["key"])
        name = display_name(image.manifest, ref, key)
        async with spool_folder(None) as folder:
            chunks = await store.get_stream(key)  # opened here: closed by `aclosing` below
            if chunks is None:
                raise NotFound(f"the set's manifest lists {key}, which the store does not hold")
            async with contextlib.aclosing(chunks):
                spooled = await spool(chunks, folder / "original", self.max_bytes)
            # Two sets of one original under one name (an earlier rebuild kept the old set)
            # have one new set: the second waits for the first, then finds it by dedupe.
            target = (ref.folder, ref.stem, spooled.sha256)
            async with self._targets.setdefault(target, asyncio.Lock()):
                converted = await self._convert(spooled, name, ref.folder)
        if converted.deduplicated or converted.job is None:
            progress.already_done += 1
        else:
            progress.rebuilt += 1
            progress.machine_seconds += converted.job.machine_seconds
            progress.cost += converted.job.cost
        if progress.replace:
            # the new set is published (its manifest answered the conversion): now the old goes
            await delete_image(self.service.publisher.stores, ref)
            progress.replaced += 1

    async def _convert(self, spooled: Any, name: SafeName, folder: str) -> answer.Conversion:
        """The conversion; a full queue (uploads on the same gateway) is waited out, not failed."""
        while True:
            try:
                return await self.service.convert(spooled, name, folder, self.choice)
            except Busy as error:
                if self.stopping.is_set():
                    raise
                await asyncio.sleep(max(1, error.retry_after))


class Rebuilds:
    """The gateway's rebuilds (POST /v1/rebuilds), in memory: lost on a restart — running one
    again is resumable (the sets done are found by dedupe), so nothing is kept on disk."""

    def __init__(self, service: ConversionService) -> None:
        self.service = service
        self._runs: dict[str, tuple[Rebuilder, asyncio.Task[Progress]]] = {}

    def start(self, folder: str, preset: str, replace: bool) -> Progress:
        rebuilder = Rebuilder(
            self.service,
            Progress(folder, preset, replace),
            concurrency=self.service.slots,
        )
        self._forget_finished()
        task = asyncio.create_task(rebuilder.run())
        self._runs[rebuilder.progress.id] = (rebuilder, task)
        return rebuilder.progress

    def get(self, rebuild_id: str) -> Progress:
        found = self._runs.get(rebuild_id)
        if found is None:
            raise NotFound("no rebuild has this id on this gateway (rebuilds are kept in memory)")
        return found[0].progress

    def _forget_finished(self) -> None:
        finished = [rid for rid, (_, task) in self._runs.items() if task.done()]
        for rid in finished[: max(0, len(finished) - KEEP_FINISHED + 1)]:
            del self._runs[rid]

    async def aclose(self) -> None:
        """At shutdown: start no other set; the sets in hand are cancelled with the gateway's
        jobs (a publish rolls back; the next run picks them up)."""
        tasks: Sequence[asyncio.Task[Progress]] = [task for _, task in self._runs.values()]
        for rebuilder, _ in self._runs.values():
            rebuilder.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
