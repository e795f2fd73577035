"""Remove what failed jobs left in a store, long after they failed.

A job's rollback deletes its own partial objects, but it cannot when the store is down for
longer than the rollback's deadline, or when the worker is killed while it writes. What is
left is recognisable: the objects of a variant set whose manifest (the commit point) was never
written, plus the local store's temporary files and the start-up probe objects. `sweep` finds
them and, once they are older than any job could still be running, deletes them.

What counts as a set is the key shape of digest mode, `{folder}/{stem}-{digest}{suffix}.{ext}`
with its manifest at `{folder}/{stem}-{digest}.json`. Name-mode keys carry no digest and are
never touched. The sweep assumes the store (its bucket and prefix) belongs to uplodr: an
object of someone else's that happens to have that shape and no manifest would be taken for
debris, which is why `--dry-run` exists.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from dataclasses import dataclass, field

from uplodr.storage.base import PROBE_KEY_PREFIX, Store, StoredObject
from uplodr.storage.keys import DIGEST_HEX_CHARS, MANIFEST_EXT
from uplodr.storage.local import TEMP_PREFIX

# `{stem}-{digest}` (the set), an optional `-suffix` like `-thumb`, then the extension.
_SET_MEMBER = re.compile(
    rf"^(?P<set>(?:.*/)?[^/]*-[0-9a-f]{{{DIGEST_HEX_CHARS}}})(?:-[a-z]+)?\.(?P<ext>[a-z0-9]+)$"
)
_DEBRIS_PREFIXES = (TEMP_PREFIX, PROBE_KEY_PREFIX)


@dataclass(frozen=True)
class Leftover:
    """Objects that belong together and go together: one incomplete set, or one stray file."""

    name: str  # the set's `{folder}/{stem}-{digest}`, or the stray object's key
    kind: str  # "incomplete set" or "leftover temporary object"
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


def find_leftovers(objects: list[StoredObject]) -> list[Leftover]:
    """The incomplete sets and stray temporary/probe objects among a listing."""
    manifests = {
        item.key.removesuffix(f".{MANIFEST_EXT}")
        for item in objects
        if item.key.endswith(f".{MANIFEST_EXT}")
    }
    sets: dict[str, list[StoredObject]] = defaultdict(list)
    found: list[Leftover] = []
    for item in objects:
        basename = item.key.rsplit("/", 1)[-1]
        if basename.startswith(_DEBRIS_PREFIXES):
            found.append(Leftover(item.key, "leftover temporary object", (item,)))
            continue
        match = _SET_MEMBER.match(item.key)
        if match and match["ext"] != MANIFEST_EXT and match["set"] not in manifests:
            sets[match["set"]].append(item)
    found += [Leftover(name, "incomplete set", tuple(items)) for name, items in sets.items()]
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

    A set is checked once more right before it goes: a job that committed its manifest since
    the listing keeps its objects. Raises StorageUnavailable when the listing fails; a failed
    delete is reported in the result and the sweep goes on."""
    cutoff = (time.time() if now is None else now) - older_than
    listing = [item async for item in store.list_objects(prefix)]
    result = SweepResult()
    for leftover in find_leftovers(listing):
        if leftover.newest >= cutoff:
            result.young += 1
            continue
        result.stale.append(leftover)
        if dry_run:
            continue
        try:
            if leftover.kind == "incomplete set":
                manifest = f"{leftover.name}.{MANIFEST_EXT}"
                if await store.size(manifest) is not None:
                    result.stale.pop()  # committed meanwhile: complete after all
                    continue
            for item in leftover.objects:
                await store.delete(item.key)
        except Exception as error:  # a store error, reported per leftover
            result.failed[leftover.name] = str(error)
            continue
        result.deleted.append(leftover)
    return result
