from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.storage.conftest import read_stream
from uplodr.errors import InvalidRequest, StorageUnavailable
from uplodr.storage import IMMUTABLE_CACHE_CONTROL, LocalStore
from uplodr.storage.base import READ_CHUNK

URL = "http://127.0.0.1:8080/files/{key}"


async def test_round_trip_and_url(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, URL)
    await store.put("a/b c.webp", b"hello", "image/webp", IMMUTABLE_CACHE_CONTROL)
    assert await store.get("a/b c.webp") == b"hello"
    stored = await store.info("a/b c.webp")
    assert stored is not None and stored.size == 5
    assert store.url("a/b c.webp") == "http://127.0.0.1:8080/files/a/b%20c.webp"
    assert await store.put_new("a/b c.webp", b"other", "image/webp", "x") is False
    assert await store.get("a/b c.webp") == b"hello"
    assert await store.put_new("a/new.webp", b"new", "image/webp", "x") is True
    await store.delete("a/b c.webp")
    await store.delete("a/b c.webp")  # missing is fine
    assert await store.get("a/b c.webp") is None
    assert await store.info("a/b c.webp") is None
    await store.check_writable()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["new.webp"]  # no temp files


async def test_a_streamed_read_holds_a_chunk_at_a_time(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, URL)
    data = os.urandom(READ_CHUNK * 2 + 12345)
    await store.put("big/original.jpg", data, "image/jpeg", IMMUTABLE_CACHE_CONTROL)
    read, sizes = await read_stream(await store.get_stream("big/original.jpg"))
    assert read == data and sizes == [READ_CHUNK, READ_CHUNK, 12345]
    assert await store.get_stream("big/missing.jpg") is None
    assert await store.get_stream("big") is None  # a folder is no object
    with pytest.raises(InvalidRequest):
        await store.get_stream("../outside")


@pytest.mark.parametrize(
    "key", ["", "/etc/passwd", "../x", "a/../../x", "a/./b", "a//b", "a\\..\\b", "a/\x00"]
)
async def test_refuses_keys_outside_root(tmp_path: Path, key: str) -> None:
    store = LocalStore(tmp_path / "root", URL)
    with pytest.raises(InvalidRequest):
        await store.put(key, b"x", "text/plain", "x")
    with pytest.raises(InvalidRequest):
        await store.get(key)
    assert not (tmp_path / "x").exists()


async def test_refuses_symlink_out_of_root(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path / "outside")
    store = LocalStore(tmp_path / "root", URL)
    with pytest.raises(InvalidRequest):
        await store.put("link/x.webp", b"x", "image/webp", "x")
    assert list((tmp_path / "outside").iterdir()) == []


async def test_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, URL)
    versions = [bytes([n]) * (4 * 1024 * 1024) for n in range(1, 6)]
    await store.put("big.bin", versions[0], "application/octet-stream", "x")
    path = tmp_path / "big.bin"
    stop = threading.Event()
    seen: set[bytes] = set()
    bad: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            data = path.read_bytes()
            if data not in versions:
                bad.append(len(data))
            seen.add(data[:1])

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(3):
            for version in versions:
                await store.put("big.bin", version, "application/octet-stream", "x")
    finally:
        stop.set()
        thread.join()
    assert bad == []
    assert len(seen) > 1
    assert [p.name for p in tmp_path.iterdir()] == ["big.bin"]


async def test_concurrent_put_new_has_one_winner(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, URL)
    results = await asyncio.gather(
        *(store.put_new("k.bin", bytes([n]) * 1000, "x", "x") for n in range(8))
    )
    assert results.count(True) == 1


async def test_check_writable_names_the_store(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "missing", URL)
    with pytest.raises(StorageUnavailable, match=r"local:.*missing.*does not exist"):
        await store.check_writable()
    (tmp_path / "file").write_bytes(b"")
    blocked = LocalStore(tmp_path / "file", URL)
    with pytest.raises(StorageUnavailable):
        await blocked.check_writable()


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """`folder` read-only for this process: without write permission, or — for root, whom
    permissions do not stop — as a read-only bind mount of itself (writes fail with EROFS)."""
    if os.geteuid() != 0:
        folder.chmod(0o500)
        try:
            yield
        finally:
            folder.chmod(0o700)
        return
    subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


async def test_read_only_folder_is_unavailable(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    with read_only(store):
        with pytest.raises(StorageUnavailable, match="store"):
            await LocalStore(store, URL).check_writable()
        assert list(store.iterdir()) == []  # nothing was written
    await LocalStore(store, URL).check_writable()  # writable again: the same check passes
