"""Spool a request body to a temporary file, hashing and counting as it arrives.

The gateway never holds a whole image in memory: chunks go straight to disk. Spooling first
(rather than piping the socket into a worker) also means no machine is created — and billed —
while a slow client is still uploading, and the content digest is known before any machine is
created, so an identical upload is answered from storage.

The disk work runs off the event loop (`asyncio.to_thread`): a write to a busy or slow disk
would otherwise stall every request of the gateway, health probes included. Chunks (uvicorn
hands over up to 64 KiB at a time) are gathered to `WRITE_CHUNK` before each hop to the thread,
so a 12 MB body costs a dozen hops, not two hundred; the hashing goes along (hashlib releases
the GIL on large buffers). The folder the file sits in is made and removed off the loop too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from uplodr.errors import TooLarge

WRITE_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Spooled:
    path: Path
    size: int
    sha256: str


def _write(handle: IO[bytes], digest: Any, data: bytes) -> None:
    digest.update(data)
    handle.write(data)


async def spool(
    chunks: AsyncIterator[bytes],
    path: Path,
    limit: int,
    reserve: Callable[[int], None] | None = None,
) -> Spooled:
    """Write `chunks` to `path` (TooLarge past `limit` bytes). `reserve(total)` is told the
    size so far before each write, and may refuse it (the spool budget)."""
    digest = hashlib.sha256()
    size = 0
    pending = bytearray()
    handle = await asyncio.to_thread(path.open, "wb")
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise TooLarge.over_limit("upload", limit)
            if reserve is not None:
                reserve(size)
            pending += chunk
            if len(pending) >= WRITE_CHUNK:
                await asyncio.to_thread(_write, handle, digest, bytes(pending))
                pending.clear()
        if pending:
            await asyncio.to_thread(_write, handle, digest, bytes(pending))
    finally:
        await asyncio.to_thread(handle.close)
    return Spooled(path=path, size=size, sha256=digest.hexdigest())


@contextlib.asynccontextmanager
async def spool_folder(parent: Path | None) -> AsyncIterator[Path]:
    """A fresh private folder for one upload's file (under `parent`, or the system's temporary
    folder), removed with whatever it holds when the block ends, however it ends."""
    folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="uplodr-upload-", dir=parent))
    try:
        yield folder
    finally:
        # shielded: a cancelled request (the client hung up) still removes its file
        await asyncio.shield(asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True))
