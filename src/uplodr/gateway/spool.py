"""Spool a request body to a temporary file, hashing and counting as it arrives.

The gateway never holds a whole image in memory: chunks go straight to disk. Spooling first
(rather than piping the socket into a worker) also means no machine is created — and billed —
while a slow client is still uploading, and the content digest is known before any machine is
created, so an identical upload is answered from storage.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from uplodr.errors import TooLarge


@dataclass(frozen=True)
class Spooled:
    path: Path
    size: int
    sha256: str


async def spool(chunks: AsyncIterator[bytes], path: Path, limit: int) -> Spooled:
    digest = hashlib.sha256()
    size = 0
    with path.open("wb") as handle:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"upload is larger than the limit of {limit} bytes")
            digest.update(chunk)
            handle.write(chunk)
    return Spooled(path=path, size=size, sha256=digest.hexdigest())
