"""`uplodr sweep` against real stores: a folder and a Swift bucket. Only what failed jobs left
(sets without a manifest, stray temporary and check objects) goes, and only once it is old and
still unused; complete sets, name-mode keys and other files stay."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.support.procs import free_port
from tests.support.swift import SwiftServer
from uplodr.storage import IMMUTABLE_CACHE_CONTROL, Blob, LocalStore, Publisher, content_digest
from uplodr.storage import s3 as s3_module
from uplodr.storage.base import Store, StoredObject
from uplodr.storage.keys import manifest_key, variant_key
from uplodr.storage.s3 import S3Store
from uplodr.storage.sweep import sweep

MakeStore = Callable[..., S3Store]
URL = "http://127.0.0.1:8080/files/{key}"
PRESET = '{"formats":["webp","jpeg"],"thumbnail_width":800}'
HOUR = 3600.0


def blobs(tag: bytes) -> list[Blob]:
    return [
        Blob("", "webp", "image/webp", 40, 30, b"webp-" + tag),
        Blob("", "jpg", "image/jpeg", 40, 30, b"jpeg-" + tag),
        Blob("-thumb", "png", "image/png", 8, 6, b"png-" + tag),
    ]


async def half_a_set(store: Store, folder: str, stem: str, digest: str) -> list[str]:
    """What a job killed while publishing leaves: some variants, no manifest."""
    keys = []
    for blob in blobs(stem.encode())[:2]:
        key = variant_key(folder, stem, digest, blob.suffix, blob.ext)
        await store.put(key, blob.data, blob.mime_type, IMMUTABLE_CACHE_CONTROL)
        keys.append(key)
    return keys


async def keys_in(store: Store) -> list[str]:
    return [item.key async for item in store.list_objects()]


def digest(n: int) -> str:
    return content_digest(f"{n:064x}", "preset")


async def test_local_sweep_removes_only_old_leftovers(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, URL)
    complete = await Publisher([store]).publish("blog", "done", digest(1), blobs(b"1"), PRESET)
    by_name = await Publisher([store], "name").publish("blog", "plain", digest(2), blobs(b"2"), "")
    # name-mode stems that look like digests, one complete and one left half-written
    by_name_tricky = await Publisher([store], "name").publish(
        "blog", "cam-1732761080123456-edit", digest(10), blobs(b"10"), ""
    )
    tricky_half = [
        f"blog/cam-{n}-1732761080123456-edit.webp" for n in (1, 2)
    ]  # no manifest, but not digest-shaped: never a set
    partial = await half_a_set(store, "blog", "cat", digest(3))
    fresh = await half_a_set(store, "blog", "dog", digest(4))  # a job may still be writing it
    (tmp_path / "blog" / ".tmp-x1y2").write_bytes(b"a writer died here")
    (tmp_path / ".uplodr-probe-0011223344556677").write_bytes(b"probe")
    (tmp_path / "blog" / "readme-0123456789abcdef.txt").write_bytes(b"not a variant's shape")
    (tmp_path / "blog" / "x-0123456789abcdef-edit.webp").write_bytes(b"not a variant's shape")
    for key in tricky_half:
        (tmp_path / key).write_bytes(b"name mode")
    old = time.time() - 2 * HOUR
    for path in tmp_path.rglob("*"):
        if path.is_file() and "dog" not in path.name:
            os.utime(path, (old, old))
    before = await keys_in(store)

    dry = await sweep(store, HOUR, dry_run=True)
    assert sorted(leftover.name for leftover in dry.stale) == [
        ".uplodr-probe-0011223344556677",
        "blog/.tmp-x1y2",
        f"blog/cat-{digest(3)}",
    ]
    assert dry.deleted == [] and dry.young == 1 and await keys_in(store) == before

    swept = await sweep(store, HOUR)
    assert [leftover.name for leftover in swept.deleted] == [
        leftover.name for leftover in dry.stale
    ]
    assert swept.failed == {}
    left = await keys_in(store)
    assert not set(partial) & set(left)
    assert set(fresh) <= set(left)
    kept = complete.variants + by_name.variants + by_name_tricky.variants
    assert {v.key for v in kept} <= set(left)
    assert {"blog/readme-0123456789abcdef.txt", "blog/x-0123456789abcdef-edit.webp"} <= set(left)
    assert set(tricky_half) <= set(left)
    assert manifest_key("blog", "done", digest(1)) in left
    assert manifest_key("blog", "plain", None) in left


async def test_local_listing_walks_every_folder(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, URL)
    keys = ["a/b/c/deep.webp", "a/b/mid.webp", "a/top.webp", "z/last.webp"]  # no file at the root
    for key in keys:
        await store.put(key, b"x", "image/webp", IMMUTABLE_CACHE_CONTROL)
    assert sorted(await keys_in(store)) == keys
    assert sorted([item.key async for item in store.list_objects("a/b")]) == keys[:2]
    assert [item.key async for item in store.list_objects("nothing/here")] == []


async def test_a_set_committed_after_the_listing_is_kept(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, URL)
    keys = await half_a_set(store, "", "late", digest(5))
    mkey = manifest_key("", "late", digest(5))
    listed = store.list_objects

    async def listing_then_commit(prefix: str = "") -> AsyncIterator[StoredObject]:
        async for item in listed(prefix):
            yield item
        # the job that owns the set writes its manifest while the sweep decides
        await store.put(mkey, b"{}", "application/json", "no-cache")

    store.list_objects = listing_then_commit  # type: ignore[method-assign]
    result = await sweep(store, 0.0, now=time.time() + HOUR)
    assert result.stale == [] and result.deleted == []
    assert await keys_in(store) == sorted([*keys, mkey])


async def test_a_set_a_job_is_reusing_is_kept(tmp_path: Path) -> None:
    """A retry of a failed upload writes the failed run's objects again (same bytes) before its
    manifest: if that happens while the sweep decides, the set is in use and stays."""
    store = LocalStore(tmp_path, URL)
    keys = await half_a_set(store, "", "again", digest(11))
    listed = store.list_objects

    async def listing_then_reuse(prefix: str = "") -> AsyncIterator[StoredObject]:
        async for item in listed(prefix):
            yield item
        for key in keys:
            data = await store.get(key)
            assert data is not None
            await store.put(key, data, "image/webp", IMMUTABLE_CACHE_CONTROL)

    store.list_objects = listing_then_reuse  # type: ignore[method-assign]
    old = time.time() - 2 * HOUR
    for key in keys:
        os.utime(tmp_path / key, (old, old))
    result = await sweep(store, HOUR)
    assert result.stale == [] and result.deleted == [] and result.young == 1
    assert await keys_in(store) == sorted(keys)


async def test_sweep_takes_every_variant_the_encoders_write_and_nothing_else(
    tmp_path: Path,
) -> None:
    """A real conversion in every output format and role of the registry (full size, a width,
    the thumbnail) and a kept original of every input format, left without its manifest, is
    one incomplete set; keys in a role or format nobody writes are never taken."""
    import pyvips

    from uplodr import formats
    from uplodr.imaging import ImageLimits, convert
    from uplodr.preset import Preset

    source = tmp_path / "in.png"
    pyvips.Image.black(40, 30, bands=4).write_to_file(str(source))
    preset = Preset(  # every format kept, winning or not (format_margin 0)
        formats=tuple(f.name for f in formats.formats_for("full")),
        widths=(16,),
        thumbnail_width=8,
        format_margin=0,
    )
    variants = convert(source, preset, ImageLimits()).variants
    # and a thumbnail in each format a preset may ask for (`thumbnail_format`)
    for name in [f.name for f in formats.thumbnail_formats()][1:]:
        other = preset.with_changes(thumbnail_format=name, formats=["webp"], widths=[])
        variants += convert(source, other, ImageLimits()).variants[-1:]
    written = [(v.suffix, v.ext, v.data, v.mime_type) for v in variants]
    # the worker keeps an original in the format it was sniffed as: every input format; or
    # repacked losslessly (a JPEG as JPEG XL, `original_jxl`)
    originals = [*formats.input_formats(), *(f for f in formats.REGISTRY if f.repacks)]
    written += [("-original", f.ext, b"original", f.mime_type) for f in originals]
    shapes = {(v.role, v.format) for v in variants}
    shapes |= {("original", f.name) for f in originals}
    assert shapes == {(role.name, fmt.name) for role, fmt in formats.variant_shapes()}

    store = LocalStore(tmp_path / "store", URL)
    keys = []
    for suffix, ext, data, mime_type in written:
        key = variant_key("blog", "cat", digest(12), suffix, ext)
        await store.put(key, data, mime_type, IMMUTABLE_CACHE_CONTROL)
        keys.append(key)
    shapes_nobody_writes = [
        ("-thumb", "avif"),
        ("", "png"),
        ("", "gif"),
        ("-thumb", "jpg"),
        ("-480w", "png"),  # the thumbnail's format has no widths
        ("-0480w", "webp"),  # not a width the role writes
        ("-original", "txt"),  # not an input format
    ]
    never_written = [f"blog/cat-{digest(12)}{suffix}.{ext}" for suffix, ext in shapes_nobody_writes]
    for key in never_written:
        await store.put(key, b"not ours", "application/octet-stream", IMMUTABLE_CACHE_CONTROL)

    result = await sweep(store, 0.0, now=time.time() + HOUR)
    (leftover,) = result.deleted
    assert leftover.name == f"blog/cat-{digest(12)}"
    assert sorted(item.key for item in leftover.objects) == sorted(keys)
    assert await keys_in(store) == sorted(never_written)


async def test_publish_rewrites_a_reused_object_swept_before_its_manifest(
    tmp_path: Path,
) -> None:
    """A retry of a failed upload reuses the objects its failed run left; if the sweep takes
    one of them before the manifest is written, the publish writes it again: the committed
    set is whole."""
    store = LocalStore(tmp_path, URL)
    leftover = await half_a_set(store, "blog", "cat", digest(6))
    write_new = store.put_new

    async def sweep_races_the_manifest(
        key: str, data: bytes, content_type: str, cache_control: str
    ) -> bool:
        if key.endswith(".json"):
            await store.delete(leftover[0])
        return await write_new(key, data, content_type, cache_control)

    store.put_new = sweep_races_the_manifest  # type: ignore[method-assign]
    published = await Publisher([store]).publish("blog", "cat", digest(6), blobs(b"cat"), PRESET)
    for variant, blob in zip(published.variants, blobs(b"cat"), strict=True):
        assert await store.get(variant.key) == blob.data
    assert (await sweep(store, 0.0, now=time.time() + HOUR)).stale == []


async def test_s3_listing_pages_and_prefix(
    swift: SwiftServer, bucket: str, s3_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3_module, "LIST_PAGE", 3)  # several pages, each after the last key
    store = s3_store(bucket, prefix="site")
    keys = [f"blog/{n:02d}.webp" for n in range(8)] + ["blog.txt", "blogx/y.webp", "other/x.webp"]
    for key in keys:
        await store.put(key, key.encode(), "image/webp", IMMUTABLE_CACHE_CONTROL)
    outside = s3_store(bucket)  # the same bucket without the prefix
    await outside.put("sitex/z.webp", b"not under site/", "image/webp", IMMUTABLE_CACHE_CONTROL)
    listed = [item async for item in store.list_objects()]
    assert [item.key for item in listed] == sorted(keys)
    assert [item.size for item in listed] == [len(key) for key in sorted(keys)]
    assert all(abs(item.modified - time.time()) < 600 for item in listed)
    assert [item.key async for item in store.list_objects("blog/")] == keys[:8]
    assert [item.key async for item in store.list_objects("blog")] == keys[:8]  # not blogx/
    assert [item.key async for item in store.list_objects("nothing")] == []
    assert sorted(swift.list_keys(bucket)) == sorted(
        [*(f"site/{key}" for key in keys), "sitex/z.webp"]
    )


async def test_s3_sweep(swift: SwiftServer, bucket: str, s3_store: MakeStore) -> None:
    store = s3_store(bucket)
    complete = await Publisher([store]).publish("", "done", digest(7), blobs(b"7"), PRESET)
    partial = await half_a_set(store, "", "cat", digest(8))
    await store.put(".uplodr-probe-0011223344556677", b"p", "text/plain", "no-store")
    await store.put("cache/.tmp-mine", b"someone's", "text/plain", "no-store")  # not S3 debris
    # S3 keeps its own modification times: judge them from two hours ahead instead
    result = await sweep(store, HOUR, now=time.time() + 2 * HOUR)
    assert [leftover.name for leftover in result.deleted] == [
        ".uplodr-probe-0011223344556677",
        f"cat-{digest(8)}",
    ]
    left = swift.list_keys(bucket)
    assert not set(partial) & set(left)
    assert {v.key for v in complete.variants} < set(left)
    assert "cache/.tmp-mine" in left
    young = await sweep(store, HOUR)
    assert young.stale == [] and young.young == 0


def run_sweep(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`uplodr sweep ARGS` in its own process, with `env` over this one's environment."""
    return subprocess.run(
        [sys.executable, "-m", "uplodr", "sweep", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **env},
    )


def test_cli_dry_run_then_sweep(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (store / "blog").mkdir(parents=True)
    leftover = store / "blog" / f"cat-{digest(9)}.webp"
    leftover.write_bytes(b"half a set")
    old = time.time() - 2 * HOUR
    os.utime(leftover, (old, old))
    at = ("--store", str(store))

    dry = run_sweep(*at, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would delete incomplete set blog/cat-{digest(9)} (1 object" in dry.stdout
    assert leftover.exists()
    assert "0 stale" in run_sweep(*at, "--older-than", "3h").stdout and leftover.exists()
    done = run_sweep(*at, "--folder", "blog")
    assert done.returncode == 0, done.stderr
    assert "1 stale, 1 deleted (1 objects" in done.stdout
    assert not leftover.exists()


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    bad_spec = run_sweep("--store", "s3://")
    assert bad_spec.returncode == 1 and "expected s3://BUCKET" in bad_spec.stderr
    nowhere = run_sweep("--store", str(tmp_path / "typo"))
    assert nowhere.returncode == 1
    assert nowhere.stderr.strip().endswith("the folder does not exist")
    climbing = run_sweep("--store", str(tmp_path), "--folder", "a/../b")
    assert climbing.returncode == 2 and "Invalid value for '--folder'" in climbing.stderr
    unreachable = run_sweep(
        "--store",
        "s3://bucket",
        AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{free_port()}",
        AWS_ACCESS_KEY_ID="id",
        AWS_SECRET_ACCESS_KEY="secret",
        UPLODR_STORAGE_DEADLINE="2",
    )
    assert unreachable.returncode == 1
    # one line, without the retry notices before it (it may or may not add how long it tried)
    (line,) = unreachable.stderr.strip().splitlines()
    assert line.startswith(
        "s3://bucket: cannot list keys under '/': cannot connect to the endpoint "
        "(refused or unreachable)"
    )
    for run in (bad_spec, nowhere, climbing, unreachable):
        assert "Traceback" not in run.stderr
