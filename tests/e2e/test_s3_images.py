"""Deleting an image from S3 stores, through a real `uplodr serve` whose primary and mirror are
buckets of a real Swift (s3api) and whose second mirror is a local folder: after a delete no
object of the set is left in any store and the id answers 404, while another name's set of the
same bytes is whole; with the S3 endpoint stopped a delete answers 503 in one line — the local
mirror has lost its manifest by then, a half-deleted set that is never answered — and once S3 is
back a retry finishes the job."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_images import keys_of
from tests.e2e.test_s3_gateway import new_bucket, no_machine_left, s3_gateway_env
from tests.support.gateway import Gateway, running_gateway
from tests.support.paths import corpus_file
from tests.support.swift import SECRET_KEY, SwiftServer
from uplodr.storage.catalog import ImageRef

PHOTO = "sample-16bit.png"


@pytest.fixture(scope="module")
def buckets(swift: SwiftServer) -> tuple[str, str]:
    return new_bucket(swift, "primary"), new_bucket(swift, "mirror")


@pytest.fixture(scope="module")
def local_mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("local-mirror")


@pytest.fixture(scope="module")
def gateway(
    swift: SwiftServer,
    buckets: tuple[str, str],
    local_mirror: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    primary, mirror = buckets
    with running_gateway(
        tmp_path_factory.mktemp("s3-images"),
        "--store",
        f"s3://{primary}",
        "--store",
        f"s3://{mirror}",
        "--store",
        str(local_mirror),
        "--public-url",
        swift.public_url(primary),
        env=s3_gateway_env(swift),
    ) as running:
        yield running
        assert running.workers() == [] and running.machine_records() == []


def upload(gateway: Gateway, name: str, folder: str) -> dict[str, Any]:
    response = httpx.post(
        f"{gateway.url}/v1/images",
        params={"name": name, "folder": folder},
        content=corpus_file(PHOTO).read_bytes(),
        timeout=120,
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def delete(gateway: Gateway, answer: dict[str, Any]) -> httpx.Response:
    return httpx.delete(
        f"{gateway.url}/v1/images/{answer['id']}",
        headers={"Uplodr-Delete-Token": answer["delete_token"]},
        timeout=60,
    )


def in_set(keys: list[str], answer: dict[str, Any]) -> list[str]:
    base = ImageRef.from_id(answer["id"]).base
    return sorted(k for k in keys if k.startswith((base + "-", base + ".")))


def test_upload_get_list_delete_leaves_nothing_in_any_store(
    swift: SwiftServer, buckets: tuple[str, str], local_mirror: Path, gateway: Gateway
) -> None:
    primary, mirror = buckets
    first = upload(gateway, "harbour.png", "s3del")
    twin = upload(gateway, "harbour-copy.png", "s3del")  # same bytes, another name
    got = httpx.get(f"{gateway.url}/v1/images/{first['id']}", timeout=30)
    assert got.status_code == 200 and got.json()["variants"] == first["variants"]
    listed = httpx.get(f"{gateway.url}/v1/images", params={"folder": "s3del"}, timeout=30).json()
    # Both, in either order: S3 records a write time to the whole second, and the two sets are
    # often written within one (the order's rule is tested with set times in tests/storage).
    assert sorted(image["id"] for image in listed["images"]) == sorted([twin["id"], first["id"]])
    for bucket in (primary, mirror):
        assert len(in_set(swift.list_keys(bucket), first)) == len(first["variants"]) + 1
    twin_keys = in_set(swift.list_keys(primary), twin)

    assert delete(gateway, first).status_code == 204
    for bucket in (primary, mirror):
        assert in_set(swift.list_keys(bucket), first) == [], bucket
        assert in_set(swift.list_keys(bucket), twin) == twin_keys, bucket
    assert keys_of(local_mirror, ImageRef.from_id(first["id"]).base) == []
    assert httpx.get(f"{gateway.url}/v1/images/{first['id']}", timeout=30).status_code == 404
    assert all(httpx.get(v["url"], timeout=30).status_code == 404 for v in first["variants"])
    assert all(httpx.get(v["url"], timeout=30).status_code == 200 for v in twin["variants"])
    no_machine_left(gateway)


def test_a_delete_during_an_s3_outage_is_a_503_and_a_retry_finishes(
    swift: SwiftServer, buckets: tuple[str, str], local_mirror: Path, gateway: Gateway
) -> None:
    primary, mirror = buckets
    image = upload(gateway, "outage.png", "s3outage")
    base = ImageRef.from_id(image["id"]).base
    local_keys = keys_of(local_mirror, base)
    assert f"{base}.json" in local_keys

    with swift.proxy_stopped():
        failed = delete(gateway, image)
        assert failed.status_code == 503, failed.text
        body = failed.json()
        assert body["code"] == "storage_unavailable" and "\n" not in body["error"]
        assert f"s3://{primary}" in body["error"] or f"s3://{mirror}" in body["error"]
        assert SECRET_KEY not in failed.text and "Traceback" not in failed.text
        # The reachable store lost the set's manifest first: what is left there is incomplete
        # by definition (and `uplodr sweep` would take it); S3 kept everything.
        assert f"{base}.json" not in keys_of(local_mirror, base)
        down = httpx.get(f"{gateway.url}/v1/images/{image['id']}", timeout=60)
        assert down.status_code == 503, down.text
    for bucket in (primary, mirror):
        assert len(in_set(swift.list_keys(bucket), image)) == len(local_keys)

    retried = delete(gateway, image)
    assert retried.status_code == 204, retried.text
    for bucket in (primary, mirror):
        assert in_set(swift.list_keys(bucket), image) == [], bucket
    assert keys_of(local_mirror, base) == []
    assert httpx.get(f"{gateway.url}/v1/images/{image['id']}", timeout=30).status_code == 404
    assert delete(gateway, image).status_code == 404  # nothing left to do
