"""All-or-nothing publishing of one job's variants to every store, with a manifest as commit point.

    1. every variant goes to every store (stores concurrently, a few objects at a time per store),
       each written "create only": an object that already exists under a key is never replaced;
    2. only when all of them are in all stores, the manifest (variants with their sizes,
       dimensions, format and role; the digest, the preset, and what a repeated upload's answer
       needs besides: the full-size output's intrinsic size and the placeholder) is written to
       every store: a set without its manifest is incomplete by definition;
    3. if anything fails, the objects this job created are deleted again (manifests first), and
       StorageUnavailable names the store that failed. Objects this job did not create are never
       deleted.

Keys in digest mode embed a hash of the upload and the preset, so an existing key holds the same
bytes: it is reused (written again with those same bytes, see `_write_variants`) and never deleted
by this job. In name mode a key may be
reused by another upload: when the name's manifest belongs to other content, or an object under
one of the keys holds other bytes, the job is refused with NameTaken and nothing is written over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import stamina

from uplodr.errors import InvalidRequest, StorageUnavailable, UplodrError
from uplodr.storage.base import IMMUTABLE_CACHE_CONTROL, MANIFEST_CACHE_CONTROL, Store
from uplodr.storage.catalog import parse_manifest
from uplodr.storage.keys import manifest_key, variant_key

KeyMode = Literal["digest", "name"]
T = TypeVar("T")
MANIFEST_MIME = "application/json"
# 2: variants carry format and role; the set its intrinsic size and placeholder (`SetInfo`).
# 3: and the upload's file name and alt text, so GET /v1/images/{id} answers as the upload did;
# optional (issue 17): a variant's `quality` receipt, the set's `skipped` formats.
MANIFEST_VERSION = 3
# How long a failed job keeps trying to remove what it wrote. A store that is down for a short
# while (a proxy restart) comes back within this; objects left after it carry no manifest, so
# they are incomplete by definition and never returned. The client's error waits for this.
ROLLBACK_DEADLINE_S = 30.0


class NameTaken(InvalidRequest):
    """Name mode: the plain key already holds another upload's variants; never overwritten."""


@dataclass(frozen=True)
class Blob:
    """One variant (or the kept original), ready to store: its bytes in memory, or in a file
    (`path`) read only when it is written, so a publish holds at most `concurrency` objects
    per store in memory, not a whole set (the gateway publishes what its workers sent back)."""

    suffix: str  # of its key: "", "-thumb", "-480w", "-original"
    ext: str  # "webp", "avif", "jpg", "png", "heic", ...
    mime_type: str
    width: int
    height: int
    data: bytes = field(default=b"", repr=False)
    format: str = ""  # "webp", ...: a format's name in uplodr.formats
    role: str = ""  # "full", "width", "thumbnail", "original"
    path: Path | None = None  # when set, the bytes are this file's (and `data` is unused)
    # Its quality receipt (metric, score, setting, ...): JSON storage keeps, not interprets.
    quality: Mapping[str, Any] | None = None

    async def read(self) -> bytes:
        if self.path is None:
            return self.data
        return await asyncio.to_thread(self.path.read_bytes)


@dataclass(frozen=True)
class StoredVariant:
    url: str
    key: str
    mime_type: str
    width: int
    height: int
    size_bytes: int
    format: str = ""
    role: str = ""
    quality: Mapping[str, Any] | None = None  # a manifest from before receipts: None


@dataclass(frozen=True)
class SetInfo:
    """What an answer needs beyond its variants, kept in the manifest so that a repeated upload
    answered from storage gets the same answer: the intrinsic size of the full-size output and
    the placeholder (strings storage does not interpret); and (version 3) the file name and alt
    text of the upload that stored the set, for the answer of GET /v1/images/{id}."""

    width: int
    height: int
    placeholder: Mapping[str, str] | None = None
    file_name: str = ""  # "": a manifest from before version 3
    alt: str = ""
    # Formats asked for and not stored ({"format", "reason"}); written only when there are some.
    skipped: tuple[Mapping[str, str], ...] = ()

    def as_json(self) -> dict[str, Any]:
        placeholder = dict(self.placeholder) if self.placeholder is not None else None
        document: dict[str, Any] = {
            "width": self.width,
            "height": self.height,
            "placeholder": placeholder,
            "file_name": self.file_name,
            "alt": self.alt,
        }
        if self.skipped:
            document["skipped"] = [dict(item) for item in self.skipped]
        return document

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> SetInfo | None:
        """From a manifest's fields; None for a manifest written before they existed."""
        width, height = manifest.get("width"), manifest.get("height")
        if not isinstance(width, int) or not isinstance(height, int):
            return None
        raw = manifest.get("placeholder")
        placeholder = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, Mapping) else None
        file_name, alt = manifest.get("file_name"), manifest.get("alt")
        listed = manifest.get("skipped")
        skipped = tuple(
            {"format": str(item.get("format", "")), "reason": str(item.get("reason", ""))}
            for item in (listed if isinstance(listed, list) else [])
            if isinstance(item, Mapping)
        )
        return cls(
            width,
            height,
            placeholder,
            file_name if isinstance(file_name, str) else "",
            alt if isinstance(alt, str) else "",
            skipped,
        )


@dataclass(frozen=True)
class Published:
    variants: list[StoredVariant]
    deduplicated: bool
    info: SetInfo | None = None


@dataclass
class _StoreJob:
    """What one job did in one store: the keys it created (only these may be deleted)."""

    store: Store
    created: list[str] = field(default_factory=list)
    uncertain: list[str] = field(default_factory=list)  # write failed: may or may not exist
    sizes: dict[str, int] = field(default_factory=dict)
    # Keys that already held our bytes (an identical job's, maybe a failed one's): reused.
    reused: dict[str, Blob] = field(default_factory=dict)
    manifest_created: bool = False


class Publisher:
    def __init__(
        self,
        stores: Sequence[Store],
        key_mode: KeyMode = "digest",
        concurrency: int = 4,
        rollback_deadline_s: float = ROLLBACK_DEADLINE_S,
    ) -> None:
        if not stores:
            raise ValueError("a publisher needs at least one store")
        if key_mode not in ("digest", "name"):
            raise ValueError(f"key_mode must be 'digest' or 'name', not {key_mode!r}")
        self.stores = list(stores)
        self.key_mode: KeyMode = key_mode
        self.concurrency = concurrency
        self.rollback_deadline_s = rollback_deadline_s

    @property
    def primary(self) -> Store:
        return self.stores[0]

    async def check_writable(self) -> None:
        """Fail fast, before any job: every store must accept a write (StorageUnavailable)."""
        await asyncio.gather(*(store.check_writable() for store in self.stores))

    async def aclose(self) -> None:
        for store in self.stores:
            await store.aclose()

    def key_digest(self, digest: str) -> str | None:
        """The digest as the set's keys carry it: None in name mode."""
        return digest if self.key_mode == "digest" else None

    # -- dedupe ----------------------------------------------------------------------------------

    async def lookup(self, folder: str, stem: str, digest: str) -> Published | None:
        """The stored variants of an identical earlier upload (same bytes, preset and folder),
        read from the primary store's manifest; None when there is none."""
        key = manifest_key(folder, stem, self.key_digest(digest))
        manifest = parse_manifest(await self.primary.get(key))
        if manifest is None or manifest.get("digest") != digest:
            return None
        return self.from_manifest(manifest)

    def from_manifest(self, manifest: dict[str, Any]) -> Published:
        """A stored set as its manifest describes it, with URLs of the primary store."""
        variants = self._variants_from_manifest(manifest)
        return Published(variants, deduplicated=True, info=SetInfo.from_manifest(manifest))

    def _variants_from_manifest(self, manifest: dict[str, Any]) -> list[StoredVariant]:
        return [
            StoredVariant(
                url=self.primary.url(str(item["key"])),
                key=str(item["key"]),
                mime_type=str(item["mime_type"]),
                width=int(item["width"]),
                height=int(item["height"]),
                size_bytes=int(item["size_bytes"]),
                format=str(item.get("format", "")),
                role=str(item.get("role", "")),
                quality=item["quality"] if isinstance(item.get("quality"), Mapping) else None,
            )
            for item in manifest["variants"]
        ]

    # -- publish ---------------------------------------------------------------------------------

    async def publish(
        self,
        folder: str,
        stem: str,
        digest: str,
        blobs: Sequence[Blob],
        preset_json: str,
        info: SetInfo | None = None,
    ) -> Published:
        """Store every blob in every store, then the manifest (with `info`); all or nothing."""
        key_digest = self.key_digest(digest)
        planned = [(variant_key(folder, stem, key_digest, b.suffix, b.ext), b) for b in blobs]
        keys = [key for key, _ in planned]
        if len(set(keys)) != len(keys):
            raise ValueError(f"two variants map to the same key: {keys}")
        mkey = manifest_key(folder, stem, key_digest)

        if self.key_mode == "name":
            earlier = await self._check_name_free(mkey, digest)
            if earlier is not None:
                return earlier

        jobs = [_StoreJob(store) for store in self.stores]
        try:
            await self._all_stores(jobs, lambda job: self._write_variants(job, planned))
            variants = [
                StoredVariant(
                    url=self.primary.url(key),
                    key=key,
                    mime_type=blob.mime_type,
                    width=blob.width,
                    height=blob.height,
                    size_bytes=jobs[0].sizes[key],
                    format=blob.format,
                    role=blob.role,
                    quality=blob.quality,
                )
                for key, blob in planned
            ]
            manifest = _manifest_bytes(variants, digest, preset_json, info)
            await self._all_stores(jobs, lambda job: self._write_manifest(job, mkey, manifest))
            await self._all_stores(jobs, self._restore_reused)
        except BaseException:
            await asyncio.shield(self._roll_back(jobs, mkey, digest))
            raise
        return Published(variants, deduplicated=False, info=info)

    async def _all_stores(
        self, jobs: list[_StoreJob], step: Callable[[_StoreJob], Awaitable[None]]
    ) -> None:
        """Run one step in every store at once; wait for all, then raise what failed."""
        results = await asyncio.gather(*(step(job) for job in jobs), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if not failures:
            return
        for failure in failures:
            if not isinstance(failure, Exception):
                raise failure  # cancellation and the like
        clear = [f for f in failures if isinstance(f, UplodrError)]
        if len(clear) == len(failures):
            if len(clear) == 1 or not all(isinstance(f, StorageUnavailable) for f in clear):
                raise clear[0]
            raise StorageUnavailable("; ".join(str(f) for f in clear))
        raise failures[0]

    async def _write_variants(self, job: _StoreJob, planned: list[tuple[str, Blob]]) -> None:
        limit = asyncio.Semaphore(self.concurrency)

        async def write(key: str, blob: Blob) -> None:
            async with limit:
                data = await blob.read()
                job.uncertain.append(key)

                def record(created: bool) -> None:  # also when the job was cancelled meanwhile
                    job.uncertain.remove(key)
                    if created:
                        job.created.append(key)
                        job.sizes[key] = len(data)

                write = job.store.put_new(key, data, blob.mime_type, IMMUTABLE_CACHE_CONTROL)
                if await settled(write, record):
                    return
                # Someone wrote this key before us; it is not ours to replace or delete.
                if self.key_mode == "name":
                    if await job.store.get(key) != data:
                        raise NameTaken(
                            f"{key!r} already exists in {job.store.description} with other "
                            "content; uplodr never overwrites it in name mode: choose another "
                            "name or use digest keys"
                        )
                    job.sizes[key] = len(data)
                    return
                # Digest mode: the key holds these very bytes, from an identical job that is
                # running or failed (a committed one is answered by dedupe before any machine).
                # Writing them again gives the object a fresh modification time, so that
                # `uplodr sweep` does not take a failed run's object this job is about to commit.
                await settled(job.store.put(key, data, blob.mime_type, IMMUTABLE_CACHE_CONTROL))
                job.sizes[key] = len(data)
                job.reused[key] = blob

        # Every write settles before a failure is raised, so the rollback cannot race a write
        # still in flight (a thread of the local store cannot be cancelled).
        results = await asyncio.gather(
            *(write(key, blob) for key, blob in planned), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _write_manifest(self, job: _StoreJob, mkey: str, manifest: bytes) -> None:
        job.uncertain.append(mkey)

        def record(created: bool) -> None:  # also when the job was cancelled meanwhile
            job.uncertain.remove(mkey)
            job.manifest_created = created

        write = job.store.put_new(mkey, manifest, MANIFEST_MIME, MANIFEST_CACHE_CONTROL)
        created = await settled(write, record)
        if not created and self.key_mode == "name":
            existing = parse_manifest(await job.store.get(mkey))
            if existing is None or existing.get("digest") != json.loads(manifest)["digest"]:
                raise NameTaken(
                    f"{mkey!r} was published by another upload in {job.store.description} "
                    "meanwhile; choose another name or use digest keys"
                )

    async def _restore_reused(self, job: _StoreJob) -> None:
        """A reused object may also go between our write and our manifest (the rollback of the
        identical job that created it, or a sweep that judged it just before our write): it is
        written again, so the committed set is whole."""
        for key, blob in job.reused.items():
            if await job.store.info(key) is None:
                data = await blob.read()
                await settled(job.store.put(key, data, blob.mime_type, IMMUTABLE_CACHE_CONTROL))

    async def _check_name_free(self, mkey: str, digest: str) -> Published | None:
        """Name mode: the same content already published → that; other content → NameTaken."""
        manifests = await asyncio.gather(*(store.get(mkey) for store in self.stores))
        parsed = [parse_manifest(raw) for raw in manifests]
        for store, raw, manifest in zip(self.stores, manifests, parsed, strict=True):
            if raw is not None and (manifest is None or manifest.get("digest") != digest):
                raise NameTaken(
                    f"{mkey!r} in {store.description} belongs to another upload; uplodr never "
                    "overwrites it in name mode: choose another name or use digest keys"
                )
        if all(manifest is not None for manifest in parsed):
            assert parsed[0] is not None
            return self.from_manifest(parsed[0])
        return None

    async def _roll_back(self, jobs: list[_StoreJob], mkey: str, digest: str) -> None:
        """Best effort: delete what this job created, manifest first. A key whose write failed
        with an unknown outcome is deleted too, unless a committed manifest now claims it."""

        async def one(job: _StoreJob) -> None:
            doomed = list(job.created)
            if job.uncertain:
                committed = None
                with contextlib.suppress(Exception):
                    committed = parse_manifest(await job.store.get(mkey))
                if committed is None or committed.get("digest") != digest or job.manifest_created:
                    doomed += job.uncertain
            if job.manifest_created:
                await _delete_within_rollback(job.store, mkey, self.rollback_deadline_s)
            await asyncio.gather(
                *(
                    _delete_within_rollback(job.store, key, self.rollback_deadline_s)
                    for key in doomed
                )
            )

        async def bounded(job: _StoreJob) -> None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.rollback_deadline_s):
                    await one(job)

        await asyncio.gather(*(bounded(job) for job in jobs))


async def settled(write: Coroutine[Any, Any, T], record: Callable[[T], None] | None = None) -> T:
    """A store write, run to its end even when the job is cancelled meanwhile (a second Ctrl-C
    of `uplodr rebuild`, a shutdown). A write cut off on our side can still land — a local
    store's thread cannot be stopped, an S3 server may already hold the PUT — and if it lands
    after the rollback, it stays: a manifest written after the rollback deleted its variants
    was a set that looked complete and was not (seen once in a CI run of
    tests/cli/test_rebuild.py). So the cancellation waits for the write's outcome, then goes
    on, and `record` (called with the write's result whenever it succeeded, cancelled or not)
    has told the rollback what exists."""
    task = asyncio.ensure_future(write)
    try:
        result = await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        if record is not None and not task.cancelled() and task.exception() is None:
            record(task.result())
        raise
    if record is not None:
        record(result)
    return result


async def _delete_within_rollback(store: Store, key: str, deadline_s: float) -> None:
    """One key of a rollback, tried again while the store is unavailable — one store call gives
    up after the store's own deadline (seconds), the rollback only after `deadline_s`."""
    async for attempt in stamina.retry_context(
        on=StorageUnavailable, attempts=None, timeout=deadline_s, wait_max=2.0
    ):
        with attempt:
            await store.delete(key)


def _manifest_bytes(
    variants: list[StoredVariant], digest: str, preset_json: str, info: SetInfo | None
) -> bytes:
    try:
        preset: Any = json.loads(preset_json)
    except ValueError:
        preset = preset_json
    document = {
        "version": MANIFEST_VERSION,
        "digest": digest,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "preset": preset,
        **(info.as_json() if info is not None else {}),
        "variants": [
            {
                "key": v.key,
                "url": v.url,
                "mime_type": v.mime_type,
                "size_bytes": v.size_bytes,
                "width": v.width,
                "height": v.height,
                "format": v.format,
                "role": v.role,
                **({"quality": dict(v.quality)} if v.quality is not None else {}),
            }
            for v in variants
        ],
    }
    return json.dumps(document, indent=1, sort_keys=True).encode()
