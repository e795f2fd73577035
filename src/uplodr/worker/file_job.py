"""One file's life inside a worker: spool the chunks to disk, convert, publish.

Chunks go to a temporary file as they arrive (memory stays flat whatever the file size) and are
hashed on the way, so the content digest is known the moment the file ends.

The preset is the one the request carries (every setting, as the gateway resolved a named
preset), else the worker's own; the request's `original` choice is folded into it
(`Preset.for_original`) before its fingerprint goes into the digest, so a set with the original
and one without never share keys or a dedupe answer. The kept original is the spooled file,
byte for byte, published with the variants in the same all-or-nothing step.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from uplodr import formats
from uplodr.errors import InvalidRequest
from uplodr.formats import ORIGINAL
from uplodr.imaging import EncodedVariant, convert
from uplodr.imaging.convert import Conversion
from uplodr.names import safe_file_name, safe_folder
from uplodr.preset import OriginalMode, Preset, PresetError
from uplodr.storage import Blob, Published, Publisher, SetInfo
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
        format=variant.format,
        role=variant.role,
    )


def _original(path: Path, conversion: Conversion) -> Blob:
    """The upload as it came, typed as it was sniffed, with its size from the header."""
    fmt = formats.get(conversion.source.format)
    width, height = conversion.source.display_size
    return Blob(
        suffix=ORIGINAL.key_suffix(),
        ext=fmt.ext,
        mime_type=fmt.mime_type,
        width=width,
        height=height,
        data=path.read_bytes(),
        format=fmt.name,
        role=ORIGINAL.name,
    )


def request_preset(base: Preset, preset_json: str, original: OriginalMode) -> Preset:
    """The preset one file is converted with: the request's settings (else `base`), with its
    choice about the original folded in. InvalidRequest for settings that are not a preset."""
    preset = base
    if preset_json:
        try:
            preset = Preset.from_json(preset_json)
        except PresetError as error:
            raise InvalidRequest(f"the request's {error}") from None
    return preset.for_original(original)


class FileJob:
    """Receives one file's bytes, then converts and publishes it. Always call close()."""

    def __init__(
        self,
        config: WorkerConfig,
        publisher: Publisher,
        file_name: str,
        folder: str,
        preset_json: str = "",
        original: OriginalMode = "preset",
    ):
        self._config = config
        self._publisher = publisher
        self._name = safe_file_name(file_name)
        self._folder = safe_folder(folder)
        self._preset = request_preset(config.preset, preset_json, original)
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
        preset = self._preset
        digest = content_digest(self._sha256.hexdigest(), preset.fingerprint())
        known = await self._publisher.lookup(self._folder, self._name.stem, digest)
        if known is not None:
            return self._result(known, received, received, time.monotonic())
        conversion = await asyncio.to_thread(convert, self._path, preset, self._config.limits)
        converted = time.monotonic()
        blobs = [_blob(v) for v in conversion.variants]
        if preset.keep_original:
            blobs.append(await asyncio.to_thread(_original, self._path, conversion))
        placeholder = conversion.placeholder.as_dict() if conversion.placeholder else None
        published = await self._publisher.publish(
            self._folder,
            self._name.stem,
            digest,
            blobs,
            preset.to_json(),
            SetInfo(conversion.width, conversion.height, placeholder),
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
