"""S3Store against a real Swift s3api server: bytes, headers, multipart, errors, outages."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

from tests.storage.conftest import TEST_DEADLINE_S, read_stream
from tests.support.procs import free_port
from tests.support.swift import SwiftServer
from uplodr.errors import StorageUnavailable
from uplodr.storage import IMMUTABLE_CACHE_CONTROL, S3Store
from uplodr.storage.base import READ_CHUNK

MakeStore = Callable[..., S3Store]


def assert_clean_message(error: StorageUnavailable, store: S3Store, *secrets: str) -> str:
    message = str(error)
    assert message.startswith(store.description + ":"), message
    assert "\n" not in message and "Traceback" not in message
    for secret in secrets:
        assert secret not in message
    assert "StringToSign" not in message and "http" not in message
    return message


async def test_put_then_anonymous_get(swift: SwiftServer, bucket: str, s3_store: MakeStore) -> None:
    store = s3_store(bucket)
    data = bytes(range(256)) * 400
    await store.put("blog/cat-0123.webp", data, "image/webp", IMMUTABLE_CACHE_CONTROL)
    url = store.url("blog/cat-0123.webp")
    assert url == f"{swift.endpoint}/v1/AUTH_test/{bucket}/blog/cat-0123.webp"
    response = swift.anonymous_get(bucket, "blog/cat-0123.webp")
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "image/webp"
    assert response.headers["cache-control"] == IMMUTABLE_CACHE_CONTROL
    assert await store.get("blog/cat-0123.webp") == data
    stored = await store.info("blog/cat-0123.webp")
    assert stored is not None and stored.size == len(data)
    assert await store.get("nope") is None
    assert await store.info("nope") is None
    await store.delete("blog/cat-0123.webp")
    await store.delete("blog/cat-0123.webp")
    assert swift.list_keys(bucket) == []


async def test_prefix_and_put_new(swift: SwiftServer, bucket: str, s3_store: MakeStore) -> None:
    store = s3_store(bucket, "site/media")
    assert store.description == f"s3://{bucket}/site/media"
    assert await store.put_new("a.png", b"first", "image/png", IMMUTABLE_CACHE_CONTROL) is True
    assert await store.put_new("a.png", b"second", "image/png", IMMUTABLE_CACHE_CONTROL) is False
    assert swift.list_keys(bucket) == ["site/media/a.png"]
    assert swift.anonymous_get(bucket, "site/media/a.png").content == b"first"
    assert store.url("a.png").endswith(f"/{bucket}/site/media/a.png")


async def test_multipart_round_trip(swift: SwiftServer, bucket: str, s3_store: MakeStore) -> None:
    store = s3_store(bucket, deadline_s=30.0)
    data = bytes(range(251)) * (12 * 1024 * 1024 // 251)  # 12 MiB > 8 MiB threshold
    assert len(data) > store.multipart_threshold
    await store.put("big.avif", data, "image/avif", IMMUTABLE_CACHE_CONTROL)
    response = swift.anonymous_get(bucket, "big.avif")
    assert response.content == data
    assert response.headers["content-type"] == "image/avif"
    assert response.headers["cache-control"] == IMMUTABLE_CACHE_CONTROL
    # s3api stores a completed multipart upload as a Swift static large object (its parts in a
    # +segments bucket): proof the upload really went in parts.
    assert response.headers["x-static-large-object"].lower() == "true"
    assert await store.put_new("big.avif", data, "image/avif", IMMUTABLE_CACHE_CONTROL) is False
    assert await store.put_new("big2.avif", data, "image/avif", IMMUTABLE_CACHE_CONTROL) is True
    assert await store.get("big2.avif") == data


async def test_a_streamed_read_holds_about_a_chunk_at_a_time(
    swift: SwiftServer, bucket: str, s3_store: MakeStore
) -> None:
    store = s3_store(bucket, "site", deadline_s=30.0)
    data = os.urandom(10 * READ_CHUNK + 4321)  # 10 MiB: a multipart upload, as a large original
    await store.put("blog/original.heic", data, "image/heic", IMMUTABLE_CACHE_CONTROL)
    read, sizes = await read_stream(await store.get_stream("blog/original.heic"))
    assert read == data
    # obstore joins the body's frames into chunks of at least READ_CHUNK (the last one less).
    assert len(sizes) >= 5 and max(sizes) < 2 * READ_CHUNK, sizes
    assert await store.get_stream("blog/missing.heic") is None


async def test_a_streamed_read_of_a_missing_bucket_is_one_clear_line(s3_store: MakeStore) -> None:
    store = s3_store("no-such-bucket-for-stream")
    with pytest.raises(StorageUnavailable) as caught:
        await store.get_stream("any.jpg")
    assert_clean_message(caught.value, store, "testing")


async def test_check_writable_ok(swift: SwiftServer, bucket: str, s3_store: MakeStore) -> None:
    await s3_store(bucket).check_writable()
    assert swift.list_keys(bucket) == []


async def test_wrong_secret_is_one_clear_line(bucket: str, s3_store: MakeStore) -> None:
    # retried, a 403 would go on until this deadline
    store = s3_store(bucket, deadline_s=30.0, AWS_SECRET_ACCESS_KEY="not-the-secret-42")
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as caught:
        await store.check_writable()
    assert time.monotonic() - started < 10.0, "a 403 must not be retried"
    message = assert_clean_message(caught.value, store, "not-the-secret-42", "testing")
    assert "secret key is wrong" in message


async def test_missing_bucket_is_one_clear_line(s3_store: MakeStore) -> None:
    store = s3_store("no-such-bucket-here")
    with pytest.raises(StorageUnavailable) as caught:
        await store.check_writable()
    message = assert_clean_message(caught.value, store, "testing")
    assert message.endswith("the bucket does not exist")


async def test_unreachable_endpoint_is_one_clear_line(bucket: str, s3_store: MakeStore) -> None:
    store = s3_store(bucket, deadline_s=1.5, AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as caught:
        await store.check_writable()
    elapsed = time.monotonic() - started
    assert 0.5 < elapsed < 1.5 + 3.0, elapsed  # retried, then gave up at the deadline
    message = assert_clean_message(caught.value, store, "testing")
    assert "cannot connect" in message or "no answer" in message


async def test_proxy_down_then_back(swift: SwiftServer, bucket: str, s3_store: MakeStore) -> None:
    store = s3_store(bucket)
    await store.put("before.webp", b"1", "image/webp", IMMUTABLE_CACHE_CONTROL)
    swift.stop_proxy()
    try:
        started = time.monotonic()
        with pytest.raises(StorageUnavailable) as caught:
            await store.put("during.webp", b"2", "image/webp", IMMUTABLE_CACHE_CONTROL)
        elapsed = time.monotonic() - started
        assert elapsed < TEST_DEADLINE_S + 3.0, elapsed  # gave up at the deadline, no hang
        assert_clean_message(caught.value, store, "testing")
    finally:
        swift.start_proxy()
    # The same store object works again: no reconnect, no new store needed.
    await store.put("after.webp", b"3", "image/webp", IMMUTABLE_CACHE_CONTROL)
    assert sorted(swift.list_keys(bucket)) == ["after.webp", "before.webp"]


async def test_default_deadline_is_bounded() -> None:
    store = S3Store("b-default", endpoint=f"http://127.0.0.1:{free_port()}")
    assert store.deadline_s <= 20.0
