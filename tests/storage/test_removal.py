"""Deleting an image's set everywhere (`storage/removal.py`), on real stores: Swift buckets and a
local folder; and finding it again (`storage/catalog.py`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.storage.test_publish import DIGEST, PRESET, blobs
from tests.support.swift import SwiftServer
from uplodr.errors import InvalidRequest
from uplodr.storage import LocalStore, Publisher, S3Store, Store
from uplodr.storage.catalog import ImageRef, list_page, read_image
from uplodr.storage.keys import in_set
from uplodr.storage.removal import delete_image


def test_a_set_holds_its_own_keys_only() -> None:
    assert in_set(f"blog/cat-{DIGEST}.webp", f"blog/cat-{DIGEST}")
    assert in_set(f"blog/cat-{DIGEST}-thumb.png", f"blog/cat-{DIGEST}")
    assert in_set(f"blog/cat-{DIGEST}-480w.avif", f"blog/cat-{DIGEST}")
    assert in_set(f"blog/cat-{DIGEST}.json", f"blog/cat-{DIGEST}")
    assert in_set("blog/cat-thumb.png", "blog/cat")  # name mode
    assert not in_set("blog/cat2.webp", "blog/cat")
    assert not in_set("blog/cat-other.webp", "blog/cat")
    assert not in_set(f"blog/cat-{DIGEST}-0w.webp", f"blog/cat-{DIGEST}")
    assert not in_set(f"blog/cat-{DIGEST}.webp.tmp", f"blog/cat-{DIGEST}")


def test_an_id_names_one_set_and_nothing_outside_the_store() -> None:
    ref = ImageRef("blog/2026", "cat", DIGEST)
    assert ImageRef.from_id(ref.id) == ref
    assert ImageRef.from_manifest_key(ref.manifest_key) == ref
    assert ImageRef("", "cat", None).base == "cat"
    for bad in (
        "",
        "img_",
        "cat",
        ref.id + "=",
        ref.id.replace("img_", "IMG_"),
        "img_" + "A" * 700,
    ):
        with pytest.raises(InvalidRequest):
            ImageRef.from_id(bad)
    with pytest.raises(InvalidRequest):  # "../etc/cat-0123456789abcdef"
        ImageRef.from_id("img_Li4vZXRjL2NhdC0wMTIzNDU2Nzg5YWJjZGVm")


async def test_delete_removes_the_set_from_every_store_and_nothing_else(
    tmp_path: Path, swift: SwiftServer, bucket: str, s3_store: Callable[..., S3Store]
) -> None:
    local = LocalStore(tmp_path / "store", "http://files.test/{key}")
    stores: list[Store] = [s3_store(bucket), local]
    publisher = Publisher(stores, "digest")
    await publisher.publish("blog", "cat", DIGEST, blobs(seed=1), PRESET)
    # The same bytes under another name: its own keys, to be left alone.
    await publisher.publish("blog", "dog", DIGEST, blobs(seed=1), PRESET)
    cat, dog = ImageRef("blog", "cat", DIGEST), ImageRef("blog", "dog", DIGEST)
    dog_keys = sorted(k for k in swift.list_keys(bucket) if k.startswith("blog/dog"))
    assert len(dog_keys) == 5

    page = await list_page(stores[0], "blog", None, 10)
    assert {image.ref for image in page.images} == {cat, dog} and page.cursor is None
    assert await read_image(stores[0], cat) is not None

    assert await delete_image(stores, cat) is True
    assert sorted(swift.list_keys(bucket)) == dog_keys
    assert sorted([o.key async for o in local.list_objects("")]) == dog_keys
    assert await read_image(stores[0], cat) is None
    assert await read_image(stores[0], dog) is not None
    assert await delete_image(stores, cat) is False  # a repeat finds nothing: harmless


async def test_a_delete_cut_short_is_finished_by_the_next(tmp_path: Path) -> None:
    primary = LocalStore(tmp_path / "a", "http://a.test/{key}")
    mirror = LocalStore(tmp_path / "b", "http://b.test/{key}")
    publisher = Publisher([primary, mirror], "digest")
    await publisher.publish("", "cat", DIGEST, blobs(seed=2), PRESET)
    ref = ImageRef("", "cat", DIGEST)
    # As an outage would leave it: the manifests gone, the variants still there.
    await primary.delete(ref.manifest_key)
    await mirror.delete(ref.manifest_key)
    assert await delete_image([primary, mirror], ref) is True
    for store in (primary, mirror):
        assert [o.key async for o in store.list_objects("")] == []


async def test_pages_go_newest_first_and_end(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s", "http://s.test/{key}")
    publisher = Publisher([store], "digest")
    for n in range(5):
        await publisher.publish("f", f"img{n}", DIGEST, blobs(seed=n)[:1], PRESET)
        path = tmp_path / "s" / "f" / f"img{n}-{DIGEST}.json"
        os.utime(path, (1_000_000 + n, 1_000_000 + n))
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = await list_page(store, "f", cursor, 2)
        seen += [image.ref.stem for image in page.images]
        if page.cursor is None:
            break
        cursor = page.cursor
    assert seen == ["img4", "img3", "img2", "img1", "img0"]
    with pytest.raises(InvalidRequest):
        await list_page(store, "f", "not-a-cursor!", 2)
