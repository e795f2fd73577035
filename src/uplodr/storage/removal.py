"""Deleting one image everywhere: its manifest, then every object of its set, in every store.

The manifest goes first, in every store, so a half-deleted set is never answered as complete
(a set without its manifest is incomplete by definition: `publish.py`). Then every key the
manifest listed goes; a store that no longer had the manifest (a delete that a store outage
interrupted, a publish that never committed there) is listed under the set's folder instead
and whatever belongs to the set is removed (`keys.in_set`). So a retry after a failure
finishes the job, and a repeat is harmless.

Only the set's own keys are touched: another name's set holds the same bytes under its own
keys (the stem is in every key), so deleting one never touches the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TypeVar

from uplodr.storage.base import Store
from uplodr.storage.catalog import ImageRef, parse_manifest
from uplodr.storage.keys import in_set

T = TypeVar("T")

# Deletes in flight per store: as a publish writes (`Publisher.concurrency`).
_CONCURRENCY = 4


async def _keys_in(store: Store, ref: ImageRef) -> tuple[bool, set[str]]:
    """Whether `store` holds the set's manifest, and every key of the set it holds or lists."""
    manifest = parse_manifest(await store.get(ref.manifest_key))
    if manifest is not None:
        listed = {str(item["key"]) for item in manifest["variants"] if "key" in item}
        return True, {key for key in listed if in_set(key, ref.base)}
    found = {obj.key async for obj in store.list_objects(ref.folder) if in_set(obj.key, ref.base)}
    found.discard(ref.manifest_key)
    return False, found


async def _delete_manifest(store: Store, ref: ImageRef) -> tuple[bool, set[str]]:
    had_manifest, keys = await _keys_in(store, ref)
    if had_manifest:
        await store.delete(ref.manifest_key)
    return had_manifest, keys


async def _delete_keys(store: Store, keys: set[str]) -> None:
    limit = asyncio.Semaphore(_CONCURRENCY)

    async def one(key: str) -> None:
        async with limit:
            await store.delete(key)

    _raise_first(await asyncio.gather(*(one(key) for key in sorted(keys)), return_exceptions=True))


def _raise_first(results: Sequence[T | BaseException]) -> list[T]:
    """Every result once all calls have settled (no delete left in flight), or the first error."""
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [result for result in results if not isinstance(result, BaseException)]


async def delete_image(stores: Sequence[Store], ref: ImageRef) -> bool:
    """Delete the image's set from every store; False when no store held any of it.
    Raises StorageUnavailable (naming the store) when one could not be reached: what was
    deleted stays deleted, and calling again finishes the job."""
    # Every store's manifest goes before any store's variant.
    found = _raise_first(
        await asyncio.gather(*(_delete_manifest(s, ref) for s in stores), return_exceptions=True)
    )
    _raise_first(
        await asyncio.gather(
            *(_delete_keys(s, keys) for s, (_, keys) in zip(stores, found, strict=True)),
            return_exceptions=True,
        )
    )
    return any(had or keys for had, keys in found)
