"""The store contract: put bytes under a key, read them back, delete, form a public URL.

Stores know nothing of images: a variant arrives as bytes with a content type.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from uplodr.errors import StorageUnavailable

# Variants are content-addressed by default, so they may be cached forever.
IMMUTABLE_CACHE_CONTROL = "public, max-age=31536000, immutable"
# A manifest is the set's commit point: a cache must ask again (it goes when the set is removed).
MANIFEST_CACHE_CONTROL = "no-cache"


# Keys of the check objects `check_writable` writes and deletes at once (a killed process may
# leave one behind; `uplodr sweep` removes them). The key keeps the name of the first release
# ("probe"), so that `sweep` still recognises what its processes left.
CHECK_KEY_PREFIX = ".uplodr-probe-"
# Chunks of a streamed read (`get_stream`): what one reader holds at a time.
READ_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredObject:
    """One object as a listing reports it."""

    key: str
    size: int
    modified: float  # seconds since the epoch


class Store(Protocol):
    # Names the store in messages ("s3://bucket/prefix", "local:/srv/uplodr"); never a secret.
    description: str

    async def put(self, key: str, data: bytes, content_type: str, cache_control: str) -> None:
        """Write atomically: a reader sees the whole object or nothing.
        Raises StorageUnavailable."""
        ...

    async def put_new(self, key: str, data: bytes, content_type: str, cache_control: str) -> bool:
        """Like `put`, but never replaces an existing object: True when this call wrote the
        object, False when one already existed under the key (left untouched).
        Raises StorageUnavailable."""
        ...

    async def info(self, key: str) -> StoredObject | None:
        """The object's size and modification time, or None when there is no such key.
        Raises StorageUnavailable."""
        ...

    async def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is no such key. Raises StorageUnavailable."""
        ...

    async def get_stream(self, key: str) -> AsyncGenerator[bytes] | None:
        """The object's bytes in chunks of about `READ_CHUNK`, or None when there is no such
        key: a large object (a kept original, up to the upload limit) is never held whole.
        Opening raises StorageUnavailable (after the store's retries); so does the iteration
        when the connection fails mid-way (not retried: the caller starts again)."""
        ...

    async def delete(self, key: str) -> None:
        """Delete; a missing key is not an error. Raises StorageUnavailable."""
        ...

    def list_objects(self, prefix: str = "") -> AsyncIterator[StoredObject]:
        """Every object whose key starts with the folder `prefix` ("" = all): in key order
        from S3, folder by folder (each in name order) from a local store.
        Raises StorageUnavailable."""
        ...

    def is_debris(self, key: str) -> bool:
        """True for a temporary object this store's own writes or checks may leave behind when
        their process dies (never a variant or a manifest)."""
        ...

    def url(self, key: str) -> str:
        """The public URL of a key."""
        ...

    async def check_writable(self) -> None:
        """Write, read back and delete a check object. Raises StorageUnavailable with one
        clear line (wrong key, missing bucket, unreachable endpoint)."""
        ...

    async def aclose(self) -> None: ...


def is_check_key(key: str) -> bool:
    """A check object of `write_read_delete`: always at the store's root."""
    return key.startswith(CHECK_KEY_PREFIX) and "/" not in key


async def write_read_delete(store: Store) -> None:
    """Write, read back and delete a check object. Each call uses its own key: workers that
    boot at the same moment must not race on one check object."""
    key = f"{CHECK_KEY_PREFIX}{secrets.token_hex(8)}"
    data = key.encode()
    await store.put(key, data, "text/plain", "no-store")
    try:
        if await store.get(key) != data:
            raise StorageUnavailable(f"{store.description}: a check object did not read back")
    finally:
        await store.delete(key)
