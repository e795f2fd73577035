"""Remove what failed jobs left in a store, long after they failed.

A job's rollback deletes its own partial objects, but it cannot when the store is down for
longer than the rollback's deadline, or when the worker is killed while it writes. What is
left is recognisable: the objects of a variant set whose manifest (the commit point) was never
written, and the store's own temporary and check objects (`Store.is_debris`). `sweep` finds
them and, once they are older than any job could still be running, deletes them.

A set is recognised by the exact key shapes of digest mode: `{folder}/{stem}-{digest}{suffix}.
{ext}` for the (role suffix, format extension) pairs the encoders write (`storage.keys.
variant_shape`, from `uplodr.formats`), with its manifest at
`{folder}/{stem}-{digest}.json`. Anything else — name-mode keys that do not have that shape,
other files — is never touched. The sweep assumes the store (its bucket and prefix) belongs to
uplodr: an object of someone else's with exactly that shape and no manifest would be taken for
a leftover, which is why `--dry-run` exists.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import AsyncIterable
from dataclasses import dataclass, field

from uplodr.storage.base import Store, StoredObject
from uplodr.storage.keys import MANIFEST_EXT, variant_shape

INCOMPLETE_SET = "incomplete set"
DEBRIS = "leftover temporary object"


@dataclass(frozen=True)
class Leftover:
    """Objects that belong together and go together: one incomplete set, or one stray object."""

    name: str  # the set's `{folder}/{stem}-{digest}`, or the stray object's key
    kind: str  # INCOMPLETE_SET or DEBRIS
    objects: tuple[StoredObject, ...]

    @property
    def size(self) -> int:
        return sum(item.size for item in self.objects)

    @property
    def newest(self) -> float:
        return max(item.modified for item in self.objects)


@dataclass
class SweepResult:
    stale: list[Leftover] = field(default_factory=list)  # old enough to go
    young: int = 0  # leftovers that may still belong to a running job: left alone
    deleted: list[Leftover] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # name → why


def set_of(key: str) -> str | None:
    """The `{folder}/{stem}-{digest}` a variant key belongs to, None for any other key."""
    shape = variant_shape(key)
    return shape.set if shape is not None else None


async def find_leftovers(store: Store, objects: AsyncIterable[StoredObject]) -> list[Leftover]:
    """The incomplete sets and the store's stray temporary objects in a listing. Only manifest
    names and the objects of sets not (yet) known to be complete are kept while it streams by:
    a set's keys are next to one another in key order, so a large bucket costs little memory."""
    manifests: set[str] = set()
    sets: dict[str, list[StoredObject]] = defaultdict(list)
    found: list[Leftover] = []
    async for item in objects:
        if store.is_debris(item.key):
            found.append(Leftover(item.key, DEBRIS, (item,)))
        elif item.key.endswith(f".{MANIFEST_EXT}"):
            complete = item.key.removesuffix(f".{MANIFEST_EXT}")
            manifests.add(complete)
            sets.pop(complete, None)
        elif (member_of := set_of(item.key)) is not None and member_of not in manifests:
            sets[member_of].append(item)
    found += [Leftover(name, INCOMPLETE_SET, tuple(items)) for name, items in sets.items()]
    return sorted(found, key=lambda leftover: leftover.name)


async def sweep(
    store: Store,
    older_than: float,
    *,
    dry_run: bool = False,
    prefix: str = "",
    now: float | None = None,
) -> SweepResult:
    """Delete the leftovers under `prefix` whose newest object is older than `older_than` s.

    Right before a leftover goes, it is looked at again: a set whose manifest appeared since the
    listing is complete after all, and an object written since (a job reusing it) is in use;
    either keeps what is left of it. Raises StorageUnavailable when the listing fails; a failed
    delete is reported in the result and the sweep goes on."""
    cutoff = (time.time() if now is None else now) - older_than
    result = SweepResult()
    for leftover in await find_leftovers(store, store.list_objects(prefix)):
        if leftover.newest >= cutoff:
            result.young += 1
            continue
        if dry_run:
            result.stale.append(leftover)
            continue
        try:
            gone = await _delete_if_still_stale(store, leftover, cutoff)
        except Exception as error:  # a store error, reported per leftover
            result.stale.append(leftover)
            result.failed[leftover.name] = str(error)
            continue
        if gone:
            result.stale.append(leftover)
            result.deleted.append(leftover)
        else:
            result.young += 1
    return result


async def _delete_if_still_stale(store: Store, leftover: Leftover, cutoff: float) -> bool:
    """Delete the leftover's objects unless it became part of a live job; True when it went."""
    manifest = f"{leftover.name}.{MANIFEST_EXT}"
    if leftover.kind == INCOMPLETE_SET and await store.info(manifest) is not None:
        return False  # committed since the listing
    for item in leftover.objects:
        current = await store.info(item.key)
        if current is not None and current.modified >= cutoff:
            return False  # written again since the listing: a job is reusing it
        if current is not None:
            await store.delete(item.key)
    return True
