"""All-or-nothing publishing to one or two real stores (Swift buckets and a local folder)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.procs import free_port
from tests.support.swift import SwiftServer
from tests.support.waiting import until
from uplodr.errors import StorageUnavailable
from uplodr.storage import (
    IMMUTABLE_CACHE_CONTROL,
    Blob,
    LocalStore,
    NameTaken,
    Publisher,
    S3Store,
    SetInfo,
    content_digest,
)
from uplodr.storage.publish import ROLLBACK_DEADLINE_S

MakeStore = Callable[..., S3Store]
PRESET = '{"formats":["webp","avif","jpeg"],"thumbnail_width":800}'
# For tests of what a failed job leaves, not of how long its rollback keeps trying (that is
# test_server_stopped_mid_job_then_back): a dead store's deletes give up after this, not 30 s.
SHORT_ROLLBACK_S = 2.0


def blobs(scale: int = 1, seed: int = 0) -> list[Blob]:
    """Four variants shaped like a 12 MP photo's (random bytes; storage never decodes them)."""

    def data(size: int) -> bytes:
        n = size * scale // 64
        return os.urandom(n) if seed < 0 else bytes([seed % 256]) * n

    return [
        Blob("", "webp", "image/webp", 4096, 3072, data(1_400_000)),
        Blob("", "avif", "image/avif", 4096, 3072, data(900_000)),
        Blob("", "jpg", "image/jpeg", 4096, 3072, data(2_100_000)),
        Blob("-thumb", "png", "image/png", 800, 600, data(450_000)),
    ]


DIGEST = content_digest("ab" * 32, "preset1")


async def test_two_stores_hold_everything(
    swift: SwiftServer, make_bucket: Callable[[], str], s3_store: MakeStore
) -> None:
    a, b = make_bucket(), make_bucket()
    publisher = Publisher([s3_store(a), s3_store(b)], "digest")
    variants = blobs(seed=1)
    published = await publisher.publish("blog", "cat", DIGEST, variants, PRESET)
    assert not published.deduplicated
    keys = [v.key for v in published.variants]
    assert keys == [f"blog/cat-{DIGEST}{b.suffix}.{b.ext}" for b in variants]
    manifest = f"blog/cat-{DIGEST}.json"
    for bucket in (a, b):
        assert sorted(swift.list_keys(bucket)) == sorted([*keys, manifest])
    for variant, blob in zip(published.variants, variants, strict=True):
        assert variant.url == f"{swift.endpoint}/v1/AUTH_test/{a}/{variant.key}"  # primary's URL
        assert variant.size_bytes == len(blob.data)
        response = swift.anonymous_get(a, variant.key)
        assert response.content == blob.data
        assert response.headers["content-type"] == blob.mime_type
        assert response.headers["cache-control"] == IMMUTABLE_CACHE_CONTROL
        assert int(response.headers["content-length"]) == variant.size_bytes
        assert swift.anonymous_get(b, variant.key).content == blob.data
    document = json.loads(swift.anonymous_get(b, manifest).content)
    assert document["digest"] == DIGEST
    assert document["preset"]["thumbnail_width"] == 800
    assert [v["key"] for v in document["variants"]] == keys
    assert {"url", "mime_type", "size_bytes", "width", "height"} <= set(document["variants"][0])

    # Dedupe: the same digest is answered from the primary's manifest, with the same URLs.
    again = await publisher.lookup("blog", "cat", DIGEST)
    assert again is not None and again.deduplicated
    assert again.variants == published.variants
    assert await publisher.lookup("blog", "cat", content_digest("cd" * 32, "preset1")) is None
    assert await publisher.lookup("other", "cat", DIGEST) is None


async def assert_nothing_published(swift: SwiftServer, *buckets: str) -> None:
    for bucket in buckets:
        assert swift.list_keys(bucket) == [], bucket


async def test_mirror_down_leaves_no_partial_set(
    swift: SwiftServer, make_bucket: Callable[[], str], s3_store: MakeStore
) -> None:
    a = make_bucket()
    dead = s3_store(a, deadline_s=1.0, AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{free_port()}")
    publisher = Publisher([s3_store(a), dead], "digest", rollback_deadline_s=SHORT_ROLLBACK_S)
    with pytest.raises(StorageUnavailable) as caught:
        await publisher.publish("blog", "cat", DIGEST, blobs(seed=2), PRESET)
    assert f"s3://{a}" in str(caught.value) and "cannot connect" in str(caught.value)
    await assert_nothing_published(swift, a)  # the primary's objects were removed again
    assert await publisher.lookup("blog", "cat", DIGEST) is None


async def test_primary_refused_leaves_no_partial_set(
    swift: SwiftServer, make_bucket: Callable[[], str], s3_store: MakeStore
) -> None:
    a, b = make_bucket(), make_bucket()
    broken = s3_store(a, AWS_SECRET_ACCESS_KEY="wrong")
    publisher = Publisher([broken, s3_store(b)], "digest", rollback_deadline_s=SHORT_ROLLBACK_S)
    with pytest.raises(StorageUnavailable, match="secret key is wrong"):
        await publisher.publish("", "cat", DIGEST, blobs(seed=3), PRESET)
    await assert_nothing_published(swift, a, b)


async def test_server_stopped_mid_job_then_back(
    swift: SwiftServer,
    make_bucket: Callable[[], str],
    s3_store: MakeStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The proxy dies right after the first object is written and comes back only once the
    job has failed and a delete of its rollback has given up (so the outage outlasts the job
    and one store call, not the rollback): the job fails, the rollback's retries remove what it
    wrote, and the next job through the same Publisher succeeds."""
    a = make_bucket()
    store = s3_store(a)
    publisher = Publisher([store], "digest", concurrency=1)
    first_write, first_delete = store.put_new, store.delete
    restarter = threading.Thread(target=swift.start_proxy)

    async def write_then_stop_the_server(
        key: str, data: bytes, content_type: str, cache_control: str
    ) -> bool:
        created = await first_write(key, data, content_type, cache_control)
        monkeypatch.setattr(store, "put_new", first_write)  # once
        await asyncio.to_thread(swift.stop_proxy)
        return created

    async def restart_once_a_delete_failed(key: str) -> None:
        try:
            await first_delete(key)
        except StorageUnavailable:
            # One store call of the rollback gave up: the server comes back now, so only the
            # rollback's own retries (not the store's) can remove what the job wrote.
            if restarter.ident is None:
                restarter.start()
            raise

    monkeypatch.setattr(store, "delete", restart_once_a_delete_failed)
    monkeypatch.setattr(store, "put_new", write_then_stop_the_server)
    started = time.monotonic()
    try:
        with pytest.raises(StorageUnavailable, match=f"s3://{a}"):
            await publisher.publish("blog", "cat", DIGEST, blobs(scale=64, seed=4), PRESET)
        assert time.monotonic() - started < 3.0 + ROLLBACK_DEADLINE_S + 1
    finally:
        if restarter.ident is None:  # the rollback never ran: later tests need the server
            restarter.start()
        await asyncio.to_thread(restarter.join)
    assert swift.list_keys(a) == []
    published = await publisher.publish("blog", "cat", DIGEST, blobs(seed=5), PRESET)
    assert len(swift.list_keys(a)) == 5 and not published.deduplicated


async def test_existing_object_is_never_deleted(
    swift: SwiftServer, make_bucket: Callable[[], str], s3_store: MakeStore
) -> None:
    a = make_bucket()
    primary = s3_store(a)
    variants = blobs(seed=6)
    key = f"blog/cat-{DIGEST}.webp"
    await primary.put(key, variants[0].data, "image/webp", IMMUTABLE_CACHE_CONTROL)
    dead = s3_store(a, deadline_s=0.5, AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StorageUnavailable):
        await Publisher([primary, dead], "digest", rollback_deadline_s=SHORT_ROLLBACK_S).publish(
            "blog", "cat", DIGEST, variants, PRESET
        )
    assert swift.list_keys(a) == [key]  # the earlier object stays, only this job's are gone


async def test_name_mode_never_overwrites(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, "http://h/{key}")
    publisher = Publisher([store], "name")
    first = await publisher.publish("blog", "cat", DIGEST, blobs(seed=7), PRESET)
    assert first.variants[0].key == "blog/cat.webp"
    same = await publisher.publish("blog", "cat", DIGEST, blobs(seed=7), PRESET)
    assert same.deduplicated and same.variants == first.variants
    other = content_digest("ef" * 32, "preset1")
    with pytest.raises(NameTaken):
        await publisher.publish("blog", "cat", other, blobs(seed=8), PRESET)
    assert (tmp_path / "blog/cat.webp").read_bytes() == blobs(seed=7)[0].data
    # A leftover object of other content (no manifest) is refused too, and kept.
    (tmp_path / "blog/dog.avif").write_bytes(b"someone else's")
    with pytest.raises(NameTaken):
        await publisher.publish("blog", "dog", other, blobs(seed=9), PRESET)
    assert sorted(p.name for p in (tmp_path / "blog").iterdir()) == sorted(
        ["cat.webp", "cat.avif", "cat.jpg", "cat-thumb.png", "cat.json", "dog.avif"]
    )


async def test_publish_timing_swift_vs_local(
    swift: SwiftServer, bucket: str, s3_store: MakeStore, tmp_path: Path
) -> None:
    """Four variants of a 12 MP photo's sizes (~4.8 MB): time in storage, printed for the notes."""
    variants = blobs(scale=64, seed=-1)
    timings: dict[str, float] = {}
    for name, store in (
        ("swift", s3_store(bucket, deadline_s=20.0)),
        ("local", LocalStore(tmp_path, "http://h/{key}")),
    ):
        best = float("inf")
        for run in range(3):
            digest = content_digest(f"{run:064x}", name)
            started = time.perf_counter()
            await Publisher([store], "digest").publish("bench", "photo", digest, variants, PRESET)
            best = min(best, time.perf_counter() - started)
        timings[name] = best
    print(
        f"\n4-variant publish ({sum(len(b.data) for b in variants) / 1e6:.1f} MB): "
        f"swift {timings['swift'] * 1000:.0f} ms, local {timings['local'] * 1000:.0f} ms"
    )
    assert timings["swift"] < 20


def set_with_original(seed: int) -> tuple[list[Blob], bytes]:
    """A set as the worker writes it with keep_original: typed variants, a width, the
    thumbnail and the upload itself (random bytes standing for a HEIC with its EXIF)."""
    upload = os.urandom(300_000) + bytes([seed])
    typed = [
        Blob("", "webp", "image/webp", 4032, 3024, bytes([seed]) * 1000, "webp", "full"),
        Blob("-480w", "webp", "image/webp", 480, 360, bytes([seed]) * 100, "webp", "width"),
        Blob("-thumb", "png", "image/png", 800, 600, bytes([seed]) * 200, "png", "thumbnail"),
        Blob("-original", "heic", "image/heic", 4032, 3024, upload, "heif", "original"),
    ]
    return typed, upload


INFO = SetInfo(
    4032,
    3024,
    {"thumbhash": "AbC=", "blurhash": "LKO2?U%2", "data_url": "data:x"},
    file_name="Cat on the mat.HEIC",
    alt="A cat",
)


async def test_the_manifest_keeps_what_a_repeated_answer_needs(tmp_path: Path) -> None:
    publisher = Publisher([LocalStore(tmp_path, "http://h/{key}")], "digest")
    blobs_, _ = set_with_original(11)
    published = await publisher.publish("blog", "cat", DIGEST, blobs_, PRESET, INFO)
    assert published.info == INFO and not published.deduplicated
    assert [(v.format, v.role) for v in published.variants] == [
        ("webp", "full"),
        ("webp", "width"),
        ("png", "thumbnail"),
        ("heif", "original"),
    ]
    assert published.variants[-1].key == f"blog/cat-{DIGEST}-original.heic"
    document = json.loads((tmp_path / f"blog/cat-{DIGEST}.json").read_bytes())
    assert document["version"] == 3
    assert (document["width"], document["height"]) == (4032, 3024)
    assert (document["file_name"], document["alt"]) == ("Cat on the mat.HEIC", "A cat")
    assert document["placeholder"] == dict(INFO.placeholder or {})
    assert document["variants"][1]["role"] == "width"
    again = await publisher.lookup("blog", "cat", DIGEST)
    assert again is not None and again.deduplicated
    assert again.variants == published.variants and again.info == INFO


async def test_a_manifest_from_before_answers_without_the_new_fields(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, "http://h/{key}")
    old = {
        "version": 1,
        "digest": DIGEST,
        "variants": [
            {"key": "b/c.webp", "url": "x", "mime_type": "image/webp", "size_bytes": 3,
             "width": 2, "height": 1}
        ],
    }  # fmt: skip
    await store.put(f"b/c-{DIGEST}.json", json.dumps(old).encode(), "application/json", "no-cache")
    found = await Publisher([store]).lookup("b", "c", DIGEST)
    assert found is not None and found.info is None
    # a version 2 manifest: its set's size and placeholder, and no name or alt (empty)
    v2 = {**old, "version": 2, "width": 2, "height": 1, "placeholder": None}
    await store.put(f"b/d-{DIGEST}.json", json.dumps(v2).encode(), "application/json", "no-cache")
    found = await Publisher([store]).lookup("b", "d", DIGEST)
    assert found is not None and found.info == SetInfo(2, 1, None, "", "")
    assert (found.variants[0].format, found.variants[0].role) == ("", "")


async def test_the_original_is_byte_identical_and_rolled_back_with_the_set(
    swift: SwiftServer, make_bucket: Callable[[], str], s3_store: MakeStore
) -> None:
    """On the real Swift server: with a mirror down, neither the original nor any variant
    remains; with the stores up, the original reads back byte for byte under its own type."""
    a = make_bucket()
    dead = s3_store(a, deadline_s=1.0, AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{free_port()}")
    blobs_, upload = set_with_original(12)
    with pytest.raises(StorageUnavailable):
        await Publisher(
            [s3_store(a), dead], "digest", rollback_deadline_s=SHORT_ROLLBACK_S
        ).publish("blog", "cat", DIGEST, blobs_, PRESET, INFO)
    await assert_nothing_published(swift, a)

    published = await Publisher([s3_store(a)], "digest").publish(
        "blog", "cat", DIGEST, blobs_, PRESET, INFO
    )
    original = published.variants[-1]
    response = swift.anonymous_get(a, original.key)
    assert response.content == upload
    assert response.headers["content-type"] == "image/heic"
    assert original.size_bytes == len(upload)


async def test_a_cancelled_job_leaves_no_manifest_that_lands_after_its_rollback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job cancelled while its manifest is being written (a second Ctrl-C of `uplodr
    rebuild`): the write cannot be called back (a local store's thread; an S3 server that has
    the PUT), so the cancellation waits for it and the rollback removes it with the rest —
    never a manifest left over whose variants the rollback deleted."""
    root = tmp_path / "store"
    store = LocalStore(root, "http://h/{key}")
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()
    first_put_new = store.put_new

    async def manifest_write_in_a_thread(
        key: str, data: bytes, content_type: str, cache_control: str
    ) -> bool:
        if not key.endswith(".json"):
            return await first_put_new(key, data, content_type, cache_control)

        def write() -> bool:
            entered.set()
            release.wait(30)
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            (root / key).write_bytes(data)  # what the thread does, cancelled or not
            finished.set()
            return True

        return await asyncio.to_thread(write)

    monkeypatch.setattr(store, "put_new", manifest_write_in_a_thread)
    job = asyncio.create_task(
        Publisher([store], "digest").publish("blog", "cat", DIGEST, blobs(seed=9), PRESET)
    )
    await until(entered.is_set, "the manifest's write began")
    job.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert finished.is_set()  # the write landed...
    assert [p for p in root.rglob("*") if p.is_file()] == []  # ...and was rolled back
