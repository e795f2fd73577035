"""One file's life inside a worker: spool the chunks to disk, convert, hand the outputs back.

Chunks go to a temporary file as they arrive (memory stays flat whatever the file size) and are
hashed on the way, so the content digest is known the moment the file ends.

The worker holds no store and no credentials (docs/security.md): its outputs — every variant,
and the kept original — go back to the gateway on the same call, which checks them against the
job's keys and publishes the set. A worker that one crafted file took over can therefore write
nothing anywhere; the worst it can do is answer its own job with wrong pixels.

The preset is the one the request carries (every setting, as the gateway resolved a named
preset), else the worker's own; the request's `original` choice is folded into it
(`Preset.for_original`). The kept original is the spooled file, byte for byte, sent back from
disk in chunks like the variants.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from uplodr import formats
from uplodr.errors import InvalidRequest
from uplodr.formats import ORIGINAL
from uplodr.imaging import EncodedVariant, convert, original
from uplodr.imaging.convert import Conversion
from uplodr.imaging.targeted import Receipt
from uplodr.imaging.winners import Skipped
from uplodr.names import safe_file_name, safe_folder
from uplodr.preset import OriginalMode, Preset, PresetError
from uplodr.worker.config import WorkerConfig


@dataclass(frozen=True)
class Output:
    """One converted output (a variant or the kept original), what the gateway needs to store
    it: where it goes among its set's keys (suffix, ext) and its bytes (in memory, or the
    spooled upload's file for the original)."""

    suffix: str  # of its key: "", "-thumb", "-480w", "-original"
    ext: str
    mime_type: str
    width: int
    height: int
    format: str
    role: str
    data: bytes = field(default=b"", repr=False)
    path: Path | None = None  # when set, the bytes are this file's
    quality: Receipt | None = None  # the look it was delivered at (a quality target)

    @property
    def size(self) -> int:
        return self.path.stat().st_size if self.path is not None else len(self.data)

    def chunks(self, size: int) -> Iterator[bytes]:
        """The bytes in pieces of at most `size` (at least one piece, maybe empty)."""
        if self.path is None:
            yield from (self.data[i : i + size] for i in range(0, len(self.data), size))
            if not self.data:
                yield b""
            return
        with self.path.open("rb") as handle:
            first = True
            while (piece := handle.read(size)) or first:
                first = False
                yield piece


@dataclass(frozen=True)
class FileResult:
    file_name: str
    folder: str
    outputs: list[Output]
    # The full-size output's intrinsic size, and the placeholder (None: nothing was decoded).
    width: int
    height: int
    placeholder: Mapping[str, str] | None
    receive_seconds: float
    convert_seconds: float
    # Formats the preset asked for and not stored, and why.
    skipped: list[Skipped] = field(default_factory=list)


def _output(variant: EncodedVariant) -> Output:
    return Output(
        suffix=variant.suffix,
        ext=variant.ext,
        mime_type=variant.mime_type,
        width=variant.width,
        height=variant.height,
        format=variant.format,
        role=variant.role,
        data=variant.data,
        quality=variant.quality,
    )


def _original(path: Path, conversion: Conversion, repack: bool) -> Output:
    """The upload as it came, typed as it was sniffed, with its size from the header; or, when
    `repack` (the preset's `original_jxl`) and it can be, the same bytes repacked losslessly."""
    fmt = formats.get(conversion.source.format)
    width, height = conversion.source.display_size
    repacked = original.repack(path, fmt.name) if repack else None
    if repacked is not None:
        fmt = repacked.format
    return Output(
        suffix=ORIGINAL.key_suffix(),
        ext=fmt.ext,
        mime_type=fmt.mime_type,
        width=width,
        height=height,
        format=fmt.name,
        role=ORIGINAL.name,
        data=repacked.data if repacked is not None else b"",
        path=None if repacked is not None else path,
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
    """Receives one file's bytes, then converts it. Always call close() (after the outputs were
    sent: the original's bytes are read from the spooled file)."""

    def __init__(
        self,
        config: WorkerConfig,
        file_name: str,
        folder: str,
        preset_json: str = "",
        original: OriginalMode = "preset",
    ):
        self._config = config
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
        conversion = await asyncio.to_thread(convert, self._path, preset, self._config.limits)
        outputs = [_output(v) for v in conversion.variants]
        if preset.keep_original:
            outputs.append(
                await asyncio.to_thread(_original, self._path, conversion, preset.original_jxl)
            )
        placeholder = conversion.placeholder.as_dict() if conversion.placeholder else None
        return FileResult(
            file_name=self._name.file_name,
            folder=self._folder,
            outputs=outputs,
            width=conversion.width,
            height=conversion.height,
            placeholder=placeholder,
            receive_seconds=received - self._started,
            convert_seconds=time.monotonic() - received,
            skipped=conversion.skipped,
        )

    def close(self) -> None:
        self._file.close()
        self._dir.cleanup()
