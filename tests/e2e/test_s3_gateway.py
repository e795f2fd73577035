"""Object storage end to end: real `uplodr serve` processes writing through S3 to a real Swift
(s3api checks SigV4 like a cloud does), one Swift server for the whole module.

Shown here: four variants and a manifest per job, each readable anonymously with its exact bytes
and Content-Type; fail-fast start-up (wrong secret, missing bucket, unreachable endpoint) with one
clear line that never holds the secret; an S3 outage mid-job answered 503 with nothing left behind
and a recovery without a restart; mirrors that hold the same set, or nothing of a failed job;
dedupe from the manifest without creating a machine. Also prints the time a 12 MP job spends in
storage with S3 against the local folder store (run with `pytest -s`).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pyvips

from tests.support.gateway import Gateway, running_gateway
from tests.support.made import mime_types, of_json
from tests.support.paths import corpus_file
from tests.support.procs import free_port
from tests.support.swift import ACCESS_KEY, SECRET_KEY, SwiftServer
from tests.support.waiting import busy_worker, wait_for
from uplodr.storage.s3 import S3Store

# Short storage deadline for gateways (workers hold no store): an outage is
# reported within seconds, while a healthy Swift answers in milliseconds.
STORAGE_DEADLINE_S = "2"
DEADLINE = 60.0
WRONG_SECRET = "not-the-secret-5f1c9e"
PHOTO_12MP = "book-beside-flowers.jpg"
LOADERS = {
    "image/webp": "webpload_buffer",
    "image/avif": "heifload_buffer",
    "image/jpeg": "jpegload_buffer",
    "image/png": "pngload_buffer",
}


# -- helpers ---------------------------------------------------------------------------------


def no_machine_left(gateway: Gateway) -> None:
    wait_for(lambda: gateway.workers() == [] and gateway.machine_records() == [], "no machine left")


def post(gateway: Gateway, path: Path, folder: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/images",
        params={"name": path.name, "folder": folder},
        content=path.read_bytes(),
        timeout=120,
    )


def post_in_background(gateway: Gateway, path: Path, folder: str) -> Callable[[], httpx.Response]:
    """Start an upload in a thread; the returned function waits for its response."""
    result: dict[str, httpx.Response] = {}
    thread = threading.Thread(target=lambda: result.update(response=post(gateway, path, folder)))
    thread.start()

    def response() -> httpx.Response:
        thread.join(timeout=DEADLINE * 2)
        assert "response" in result, "the upload got no answer"
        return result["response"]

    return response


def machines_created(gateway: Gateway) -> float:
    text = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("uplodr_machines_created_total "):
            return float(line.split()[1])
    raise AssertionError("uplodr_machines_created_total is not exported")


def key_of(url: str, public_url: str) -> str:
    prefix = public_url.removesuffix("{key}")
    assert url.startswith(prefix), f"{url} is not under {prefix}"
    return url.removeprefix(prefix)


def s3_gateway_env(swift: SwiftServer, **overrides: str) -> dict[str, str]:
    return {**swift.s3_env(**overrides), "UPLODR_STORAGE_DEADLINE": STORAGE_DEADLINE_S}


def new_bucket(swift: SwiftServer, tag: str) -> str:
    name = f"{tag}-{uuid.uuid4().hex[:8]}"
    swift.create_bucket(name, public_read=True)
    return name


def delete_bucket(swift: SwiftServer, bucket: str) -> None:
    """Empty and delete a bucket through Swift's own API (a store that stops existing)."""
    token = httpx.get(
        f"{swift.endpoint}/auth/v1.0",
        headers={"X-Auth-User": ACCESS_KEY, "X-Auth-Key": SECRET_KEY},
        timeout=10,
    ).headers["X-Auth-Token"]
    url = f"{swift.endpoint}/v1/AUTH_test/{bucket}"

    def deleted() -> bool:
        swift.empty_bucket(bucket)
        status = httpx.delete(url, headers={"X-Auth-Token": token}, timeout=10).status_code
        return status in (204, 404)  # 409 while the listing still shows a deleted object

    wait_for(deleted, f"bucket {bucket} to be deleted", deadline=10)


def read_through_s3(swift: SwiftServer, bucket: str, key: str) -> bytes | None:
    """The object's bytes through the S3 API (SigV4), a second path beside the anonymous GET."""
    store = S3Store.from_env(bucket, "", swift.s3_env(), deadline_s=5)
    return asyncio.run(store.get(key))


def check_served(swift: SwiftServer, bucket: str, variant: dict[str, Any], public_url: str) -> str:
    """Anonymous GET of the URL gives the stored object: same bytes as through the S3 API, the
    claimed Content-Type, size and dimensions, and the immutable cache header. Returns its key."""
    key = key_of(variant["url"], public_url)
    response = httpx.get(variant["url"], timeout=30)
    assert response.status_code == 200, (variant["url"], response.status_code)
    assert response.headers["content-type"] == variant["mime_type"]
    assert "immutable" in response.headers.get("cache-control", "")
    assert len(response.content) == variant["size_bytes"]
    assert int(response.headers["content-length"]) == variant["size_bytes"]
    assert read_through_s3(swift, bucket, key) == response.content
    image = pyvips.Image.new_from_buffer(response.content, "")
    assert image.get("vips-loader") == LOADERS[variant["mime_type"]]
    assert (image.width, image.height) == (variant["width"], variant["height"])
    return key


def job_keys(keys: list[str], folder: str) -> list[str]:
    return sorted(k for k in keys if k.startswith(f"{folder}/"))


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bucket(swift: SwiftServer) -> str:
    return new_bucket(swift, "media")


@pytest.fixture(scope="module")
def s3_gateway(
    swift: SwiftServer, bucket: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    with running_gateway(
        tmp_path_factory.mktemp("s3-gateway"),
        "--store",
        f"s3://{bucket}",
        "--public-url",
        swift.public_url(bucket),
        env=s3_gateway_env(swift),
    ) as running:
        yield running
        assert running.workers() == []
        assert running.machine_records() == []


@pytest.fixture(scope="module")
def photo_answer(s3_gateway: Gateway) -> dict[str, Any]:
    """The 12 MP photo, converted once through the S3 gateway (shared by several tests)."""
    response = post(s3_gateway, corpus_file(PHOTO_12MP), folder="photos")
    assert response.status_code == 200, response.text
    no_machine_left(s3_gateway)
    answer: dict[str, Any] = response.json()
    return answer


# -- a job through S3 --------------------------------------------------------------------------


def test_job_stores_four_variants_and_a_manifest_readable_anonymously(
    swift: SwiftServer, bucket: str, photo_answer: dict[str, Any]
) -> None:
    assert photo_answer["deduplicated"] is False
    variants = photo_answer["variants"]
    made = sorted([*mime_types(of_json(photo_answer)), "image/png"])  # the formats that won
    assert sorted(v["mime_type"] for v in variants) == made
    public_url = swift.public_url(bucket)
    keys = [check_served(swift, bucket, v, public_url) for v in variants]

    # The bucket holds exactly the four variants and the manifest beside them (its commit point).
    manifest_key = keys[0].rsplit(".", 1)[0] + ".json"
    assert job_keys(swift.list_keys(bucket), "photos") == sorted([*keys, manifest_key])
    manifest = json.loads(swift.anonymous_get(bucket, manifest_key).content)
    assert {(v["key"], v["size_bytes"], v["width"], v["height"]) for v in manifest["variants"]} == {
        (key, v["size_bytes"], v["width"], v["height"])
        for key, v in zip(keys, variants, strict=True)
    }
    assert manifest["preset"]


def test_storage_time_s3_against_the_local_store(
    gateway: Gateway, photo_answer: dict[str, Any]
) -> None:
    """Same run, same 12 MP photo: the `store` phase with S3 (Swift on loopback) vs a folder."""
    response = post(gateway, corpus_file(PHOTO_12MP), folder="photos")
    assert response.status_code == 200, response.text
    local = response.json()
    s3_store, local_store = photo_answer["timings"]["store"], local["timings"]["store"]
    print(
        f"\n12 MP job ({sum(v['size_bytes'] for v in local['variants'])} bytes of variants), "
        f"time in storage: S3 (Swift) {s3_store * 1000:.0f} ms, local folder "
        f"{local_store * 1000:.0f} ms\n  S3 job timings:    {photo_answer['timings']}"
        f"\n  local job timings: {local['timings']}"
    )
    assert 0 < s3_store < 30 and 0 < local_store < 30
    # Same content and preset → same digest keys and sizes, whichever store holds them.
    s3_by_type = {v["mime_type"]: v for v in photo_answer["variants"]}
    for variant in local["variants"]:
        twin = s3_by_type[variant["mime_type"]]
        assert twin["url"].rsplit("/", 1)[1] == variant["url"].rsplit("/", 1)[1]
        assert (twin["width"], twin["height"]) == (variant["width"], variant["height"])
        # The encoders are deterministic: the S3 objects are the very bytes the folder holds.
        assert httpx.get(twin["url"], timeout=30).content == httpx.get(variant["url"]).content


# -- fail fast ---------------------------------------------------------------------------------


def run_until_exit(
    args: list[str], env: dict[str, str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "uplodr", *args],
        env={**os.environ, "UPLODR_DATA_DIR": str(tmp_path / "data"), **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )


def assert_one_clear_line(
    result: subprocess.CompletedProcess[str], store: str, reason: str
) -> None:
    assert result.returncode != 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert store in lines[0] and reason in lines[0], lines[0]
    assert WRONG_SECRET not in result.stderr + result.stdout
    assert SECRET_KEY not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("wrong secret", "the access key or secret key is wrong"),
        ("missing bucket", "the bucket does not exist"),
        ("unreachable endpoint", "cannot connect to the endpoint"),
    ],
)
def test_a_store_that_cannot_be_written_stops_start_up_with_one_line(
    swift: SwiftServer, bucket: str, tmp_path: Path, case: str, reason: str
) -> None:
    """`serve` (the only process that opens a store: workers hold none) exits in one line."""
    store, env = f"s3://{bucket}", s3_gateway_env(swift)
    if case == "wrong secret":
        env["AWS_SECRET_ACCESS_KEY"] = WRONG_SECRET
    elif case == "missing bucket":
        store = f"s3://no-such-bucket-{uuid.uuid4().hex[:6]}"
    else:
        env["AWS_ENDPOINT_URL_S3"] = f"http://127.0.0.1:{free_port()}"
        env["UPLODR_STORAGE_DEADLINE"] = "1"
    args = ["serve", "--port", str(free_port()), "--state-dir", str(tmp_path / "state")]
    result = run_until_exit([*args, "--store", store], env, tmp_path)
    assert_one_clear_line(result, store, reason)
    assert result.stderr.startswith("uplodr serve: ")


# -- outage mid-job ------------------------------------------------------------------------------


def test_s3_outage_mid_job_is_a_clean_503_and_the_next_job_succeeds(
    swift: SwiftServer, bucket: str, s3_gateway: Gateway
) -> None:
    before = swift.list_keys(bucket)
    response = post_in_background(s3_gateway, corpus_file(PHOTO_12MP), folder="outage")
    busy_worker(s3_gateway)  # converting: the store is not touched again until it publishes
    swift.stop_proxy()
    try:
        failed = response()
    finally:
        swift.start_proxy()
    assert failed.status_code == 503, failed.text
    body = failed.json()
    assert set(body) == {"error", "code"}
    assert body["code"] == "storage_unavailable"
    assert f"s3://{bucket}" in body["error"]
    assert SECRET_KEY not in failed.text and "Traceback" not in failed.text
    no_machine_left(s3_gateway)
    # Nothing of the failed job: no variant, no manifest.
    assert swift.list_keys(bucket) == before

    # The store is back: the next job succeeds on the same gateway, without a restart.
    again = post(s3_gateway, corpus_file("Landscape_6.jpg"), folder="outage")
    assert again.status_code == 200, again.text
    public_url = swift.public_url(bucket)
    keys = [check_served(swift, bucket, v, public_url) for v in again.json()["variants"]]
    assert len(job_keys(swift.list_keys(bucket), "outage")) == len(keys) + 1  # + manifest
    no_machine_left(s3_gateway)


def test_readyz_names_the_store_while_s3_is_down_and_is_ready_again_after(
    swift: SwiftServer, bucket: str, s3_gateway: Gateway
) -> None:
    def readyz() -> httpx.Response:
        return httpx.get(f"{s3_gateway.url}/readyz", timeout=30)

    ready = readyz()
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    assert {c["name"]: c["ok"] for c in ready.json()["checks"]} == {"store": True, "provider": True}
    swift.stop_proxy()
    try:
        wait_for(lambda: readyz().status_code == 503, "/readyz to say the store is down")
        down = readyz()
    finally:
        swift.start_proxy()
    body = down.json()
    assert body["status"] == "unready" and body["code"] == "unready"
    assert body["error"].startswith(f"store: s3://{bucket}")
    assert "\n" not in body["error"] and "Traceback" not in down.text
    assert SECRET_KEY not in down.text
    assert [c["name"] for c in body["checks"] if not c["ok"]] == ["store"]
    # /healthz is liveness: the gateway itself was fine all along.
    assert httpx.get(f"{s3_gateway.url}/healthz").status_code == 200
    wait_for(lambda: readyz().status_code == 200, "/readyz to be ready again")
    assert not [k for k in swift.list_keys(bucket) if k.startswith(".uplodr-probe-")]


# -- dedupe ------------------------------------------------------------------------------------


def test_same_upload_twice_is_answered_from_storage_without_a_machine(
    swift: SwiftServer, bucket: str, s3_gateway: Gateway, photo_answer: dict[str, Any]
) -> None:
    created = machines_created(s3_gateway)
    assert created >= 1  # the first upload of the photo did create one
    keys = swift.list_keys(bucket)
    response = post(s3_gateway, corpus_file(PHOTO_12MP), folder="photos")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["deduplicated"] is True
    assert answer["variants"] == photo_answer["variants"]
    assert machines_created(s3_gateway) == created
    assert s3_gateway.workers() == [] and s3_gateway.machine_records() == []
    assert swift.list_keys(bucket) == keys


# -- mirrors -----------------------------------------------------------------------------------


def test_mirrors_hold_every_variant_or_nothing_of_a_failed_job(
    swift: SwiftServer, tmp_path: Path
) -> None:
    primary, mirror = new_bucket(swift, "primary"), new_bucket(swift, "mirror")
    public_url = swift.public_url(primary)
    with running_gateway(
        tmp_path / "gateway",
        "--store",
        f"s3://{primary}",
        "--store",
        f"s3://{mirror}",
        "--public-url",
        public_url,
        env=s3_gateway_env(swift),
    ) as gateway:
        response = post(gateway, corpus_file("Landscape_6.jpg"), folder="mirrored")
        assert response.status_code == 200, response.text
        variants = response.json()["variants"]
        made = sorted([*mime_types(of_json(response.json())), "image/png"])
        assert sorted(v["mime_type"] for v in variants) == made
        keys = [check_served(swift, primary, v, public_url) for v in variants]
        # Both buckets hold the same set, byte for byte, manifest included.
        stored = swift.list_keys(primary)
        assert stored == swift.list_keys(mirror)
        assert len(stored) == len(keys) + 1 and set(keys) < set(stored)
        for key in stored:
            assert (
                swift.anonymous_get(mirror, key).content
                == swift.anonymous_get(primary, key).content
            )

        # The mirror's bucket disappears while the next job converts: the primary accepts its
        # variants, the mirror refuses them, so the job fails and the primary's partial set goes.
        pending = post_in_background(gateway, corpus_file(PHOTO_12MP), folder="mirrored")
        busy_worker(gateway)
        delete_bucket(swift, mirror)
        failed = pending()
        assert failed.status_code == 503, failed.text
        assert failed.json()["code"] == "storage_unavailable"
        assert f"s3://{mirror}" in failed.json()["error"]
        assert swift.list_keys(primary) == stored  # the earlier job's set, untouched
        no_machine_left(gateway)
