"""A store in a local folder: the gateway serves it, or a shared volume holds it.

Writes are atomic: the bytes go to a temporary file in the target's own folder, are fsynced, and
only then renamed (or hard-linked, for `put_new`) into place, so a reader sees the whole file or
none. Keys must stay inside the root: `..`, absolute paths and symlinks leading out are refused
here too, although names are validated before they reach a store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO, ParamSpec, TypeVar
from urllib.parse import quote

from uplodr.errors import InvalidRequest, StorageUnavailable
from uplodr.storage.base import READ_CHUNK, StoredObject, is_check_key, write_read_delete

TEMP_PREFIX = ".tmp-"

P = ParamSpec("P")
T = TypeVar("T")


class LocalStore:
    """Objects as files under `root`; `public_url` is a template containing `{key}`."""

    def __init__(self, root: Path, public_url: str) -> None:
        if "{key}" not in public_url:
            raise ValueError("public_url must contain {key}")
        self.root = Path(root).resolve()
        self.public_url = public_url
        self.description = f"local:{self.root}"

    # -- the Store contract --------------------------------------------------------------------

    async def put(self, key: str, data: bytes, content_type: str, cache_control: str) -> None:
        path = self.path_of(key)
        await self._io(key, "write", self._write, path, data, False)

    async def put_new(self, key: str, data: bytes, content_type: str, cache_control: str) -> bool:
        path = self.path_of(key)
        return await self._io(key, "write", self._write, path, data, True)

    async def info(self, key: str) -> StoredObject | None:
        path = self.path_of(key)
        return await self._io(key, "read", _stat, path, key)

    async def get(self, key: str) -> bytes | None:
        path = self.path_of(key)
        return await self._io(key, "read", _read, path)

    async def get_stream(self, key: str) -> AsyncGenerator[bytes] | None:
        path = self.path_of(key)
        handle = await self._io(key, "read", _open, path)
        return None if handle is None else self._chunks(key, handle)

    async def _chunks(self, key: str, handle: BinaryIO) -> AsyncGenerator[bytes]:
        try:
            while chunk := await self._io(key, "read", handle.read, READ_CHUNK):
                yield chunk
        finally:
            handle.close()

    async def delete(self, key: str) -> None:
        path = self.path_of(key)
        await self._io(key, "delete", _unlink, path)

    async def list_objects(self, prefix: str = "") -> AsyncIterator[StoredObject]:
        folder = self.path_of(prefix.strip("/")) if prefix.strip("/") else self.root
        self._require_root()
        # One folder per step, so a large store is never held in memory as a whole.
        folders = os.walk(folder, onerror=_raise)
        where = prefix or "/"
        while True:
            found = await self._io(where, "list keys under", _next, folders, self.root)
            if found is None:  # the walk is done ([] is a folder holding only folders)
                return
            for item in found:
                yield item

    def is_debris(self, key: str) -> bool:
        # a temporary file of a write whose process died, in any folder; or a check object
        return key.rsplit("/", 1)[-1].startswith(TEMP_PREFIX) or is_check_key(key)

    def url(self, key: str) -> str:
        self.path_of(key)
        return self.public_url.replace("{key}", quote(key, safe="/"))

    async def check_writable(self) -> None:
        self._require_root()
        await write_read_delete(self)

    async def aclose(self) -> None:
        return None

    # -- helpers -------------------------------------------------------------------------------

    def _require_root(self) -> None:
        if not self.root.is_dir():
            raise StorageUnavailable(f"{self.description}: the folder does not exist")

    def path_of(self, key: str) -> Path:
        """The file for a key; refuses any key that would land outside the root."""
        pure = PurePosixPath(key)
        if (
            not key
            or "\\" in key
            or "\x00" in key
            or pure.is_absolute()
            or any(part in ("", ".", "..") for part in key.split("/"))
        ):
            raise InvalidRequest(f"refused storage key {key!r}: not a plain relative path")
        path = self.root.joinpath(*pure.parts)
        # Symlinks inside the root must not lead out of it either.
        if not path.resolve().is_relative_to(self.root):
            raise InvalidRequest(f"refused storage key {key!r}: it leads outside the store")
        return path

    async def _io(
        self, key: str, verb: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except OSError as error:
            reason = error.strerror or type(error).__name__
            if error.filename and Path(error.filename) != self.root:
                with contextlib.suppress(ValueError):  # name the file or folder at fault
                    reason += f" ({Path(error.filename).relative_to(self.root).as_posix()})"
            raise StorageUnavailable(
                f"{self.description}: cannot {verb} {key!r}: {reason}"
            ) from None

    def _write(self, path: Path, data: bytes, only_if_absent: bool) -> bool:
        path.parent.mkdir(parents=True, exist_ok=True)
        if only_if_absent and path.exists():
            return False
        fd, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
        temp = Path(temp_name)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            temp.chmod(0o644)
            if only_if_absent:
                try:
                    os.link(temp, path)  # atomic, and fails when the name is taken
                except FileExistsError:
                    return False
            else:
                temp.replace(path)
            _fsync_dir(path.parent)
            return True
        finally:
            temp.unlink(missing_ok=True)


def _stat(path: Path, key: str) -> StoredObject | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return StoredObject(key, stat.st_size, stat.st_mtime) if path.is_file() else None


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None


def _open(path: Path) -> BinaryIO | None:
    try:
        return path.open("rb")
    except (FileNotFoundError, IsADirectoryError):
        return None


_Folder = tuple[str, list[str], list[str]]


def _next(folders: Iterator[_Folder], root: Path) -> list[StoredObject] | None:
    """The regular files of the next folder of a walk as objects of the store at `root`, in
    name order (temporary files of writes in flight, or of writers that died, included); None
    when the walk is done."""
    try:
        directory, subdirectories, files = next(folders)
    except StopIteration:
        return None
    subdirectories.sort()
    found: list[StoredObject] = []
    for name in sorted(files):
        path = Path(directory, name)
        with contextlib.suppress(FileNotFoundError):  # removed meanwhile
            stat = path.lstat()
            if not path.is_symlink():
                key = path.relative_to(root).as_posix()
                found.append(StoredObject(key, stat.st_size, stat.st_mtime))
    return found


def _raise(error: OSError) -> None:
    if not isinstance(error, FileNotFoundError):  # a folder removed meanwhile is fine
        raise error


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
