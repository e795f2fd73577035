"""One file's life inside a worker: spool the chunks to disk, convert, publish.

Chunks go to a temporary file as they arrive (memory stays flat whatever the file size) and are
hashed on the way, so the content digest is known the moment the file ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from uplodr.imaging import EncodedVariant, convert
from uplodr.names import safe_file_name, safe_folder
from uplodr.storage import Blob, Published, Publisher
from uplodr.storage.keys import content_digest
from uplodr.worker.config import WorkerConfig


@dataclass(frozen=True)
class FileResult:
    file_name: str
    folder: str
    published: Published
    receive_seconds: float
    convert_seconds: float
    store_seconds: float


def _blob(variant: EncodedVariant) -> Blob:
    return Blob(
        suffix=variant.suffix,
        ext=variant.ext,
        mime_type=variant.mime_type,
        width=variant.width,
        height=variant.height,
        data=variant.data,
    )


class FileJob:
    """Receives one file's bytes, then converts and publishes it. Always call close()."""

    def __init__(self, config: WorkerConfig, publisher: Publisher, file_name: str, folder: str):
        self._config = config
        self._publisher = publisher
        self._name = safe_file_name(file_name)
        self._folder = safe_folder(folder)
        self._dir = tempfile.TemporaryDirectory(prefix="uplodr-job-")
        self._path = Path(self._dir.name) / "upload"
        self._file = self._path.open("wb")
        self._sha256 = hashlib.sha256()
        self._started = time.monotonic()

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._sha256.update(data)

    async def finish(self) -> FileResult:
        self._file.close()
        received = time.monotonic()
        preset = self._config.preset
        digest = content_digest(self._sha256.hexdigest(), preset.fingerprint())
        known = await self._publisher.lookup(self._folder, self._name.stem, digest)
        if known is not None:
            return self._result(known, received, received, time.monotonic())
        variants = await asyncio.to_thread(convert, self._path, preset, self._config.limits)
        converted = time.monotonic()
        published = await self._publisher.publish(
            self._folder,
            self._name.stem,
            digest,
            [_blob(v) for v in variants],
            preset.to_json(),
        )
        return self._result(published, received, converted, time.monotonic())

    def _result(
        self, published: Published, received: float, converted: float, stored: float
    ) -> FileResult:
        return FileResult(
            file_name=self._name.file_name,
            folder=self._folder,
            published=published,
            receive_seconds=received - self._started,
            convert_seconds=converted - received,
            store_seconds=stored - converted,
        )

    def close(self) -> None:
        self._file.close()
        self._dir.cleanup()
