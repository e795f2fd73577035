"""The images after their upload, through a real `uplodr serve` with two local stores (a primary
and a mirror) and real worker processes: an upload's id and delete token, GET of the stored
answer, the newest-first paged listing (HTTP, the Python client, `uplodr images`), and DELETE —
every object of the set gone from both stores, the id then 404, another name's set of the same
bytes untouched, a delete token that deletes only its own image, and an open gateway that never
deletes without a credential. The S3 side (a mirror, an outage and its retry) is in
test_s3_images.py; tokens bound to prefixes in tests/hostile/test_tokens.py."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.gateway import Gateway, running_gateway
from tests.support.paths import corpus_file
from uplodr.client import AsyncClient, Client, NotFound, Unauthenticated
from uplodr.storage.catalog import ImageRef

PHOTO = "sample-16bit.png"
# What a stored answer leaves out or says differently from the upload's (no machine ran).
PER_REQUEST = ("timings", "job", "deduplicated", "delete_token")


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mirror")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("images")
    store = root / "store"
    with running_gateway(root, "--store", str(store), "--store", str(mirror), store=store) as gw:
        yield gw
        assert gw.workers() == [] and gw.machine_records() == []


def upload(gateway: Gateway, name: str, folder: str, alt: str = "") -> dict[str, Any]:
    response = httpx.post(
        f"{gateway.url}/v1/images",
        params={"name": name, "folder": folder, "alt": alt},
        content=corpus_file(PHOTO).read_bytes(),
        timeout=120,
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def keys_of(root: Path, base: str) -> list[str]:
    """Every object of the set whose key base is `base`, in the store folder `root`."""
    found = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    return sorted(k for k in found if k.startswith(base + "-") or k.startswith(base + "."))


def without(answer: dict[str, Any], *fields: str) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k not in fields}


def test_get_answers_what_the_upload_answered_and_delete_removes_the_set_everywhere(
    gateway: Gateway, mirror: Path
) -> None:
    first = upload(gateway, "falls.png", "trip", alt="Falls at dusk")
    twin = upload(gateway, "copy.png", "trip")  # the same bytes under another name
    assert first["deduplicated"] is False and first["id"].startswith("img_")
    assert first["delete_token"] and twin["delete_token"] != first["delete_token"]
    assert twin["id"] != first["id"]
    ref = ImageRef.from_id(first["id"])
    assert (ref.folder, ref.stem) == ("trip", "falls")

    # A repeat of the same upload: the same id, and no delete token for whoever repeats it.
    again = upload(gateway, "falls.png", "trip", alt="Falls at dusk")
    assert again["deduplicated"] is True and again["id"] == first["id"]
    assert again["delete_token"] is None

    got = httpx.get(f"{gateway.url}/v1/images/{first['id']}", timeout=30)
    assert got.status_code == 200, got.text
    stored = got.json()
    assert without(stored, *PER_REQUEST) == without(first, *PER_REQUEST)
    assert 'alt="Falls at dusk"' in stored["html"]
    assert stored["delete_token"] is None and "job" not in stored

    for root in (gateway.store, mirror):
        assert keys_of(root, ref.base), f"nothing of the set in {root}"
    twin_keys = keys_of(gateway.store, ImageRef.from_id(twin["id"]).base)

    # Without a credential nothing is deleted, also on a gateway without tokens; another
    # image's delete token is no credential for this one.
    url = f"{gateway.url}/v1/images/{first['id']}"
    bare = httpx.delete(url, timeout=30)
    assert bare.status_code == 401 and bare.json()["code"] == "unauthenticated"
    other = httpx.delete(url, headers={"Uplodr-Delete-Token": twin["delete_token"]}, timeout=30)
    assert other.status_code == 401, other.text
    assert httpx.get(url, timeout=30).status_code == 200

    deleted = httpx.delete(url, headers={"Uplodr-Delete-Token": first["delete_token"]}, timeout=60)
    assert deleted.status_code == 204, deleted.text
    for root in (gateway.store, mirror):
        assert keys_of(root, ref.base) == [], f"left in {root}"
    gone = httpx.get(url, timeout=30)
    assert gone.status_code == 404 and gone.json()["code"] == "not_found"
    repeat = httpx.delete(url, headers={"Uplodr-Delete-Token": first["delete_token"]}, timeout=60)
    assert repeat.status_code == 404, repeat.text

    # The other name's set of the same bytes is whole, in both stores, and still answered.
    assert keys_of(gateway.store, ImageRef.from_id(twin["id"]).base) == twin_keys
    assert keys_of(mirror, ImageRef.from_id(twin["id"]).base) == twin_keys
    assert httpx.get(f"{gateway.url}/v1/images/{twin['id']}", timeout=30).status_code == 200
    for variant in twin["variants"]:
        assert httpx.get(variant["url"], timeout=30).status_code == 200


def test_a_folder_lists_newest_first_a_page_at_a_time(gateway: Gateway) -> None:
    made = [upload(gateway, f"p{index}.png", "album/2026") for index in range(3)]
    upload(gateway, "elsewhere.png", "albums")  # a sibling folder is not under album/
    # Written a second apart, as the order is the manifests' write time: sets of the same bytes
    # under another name are copies, which can land within one tick of the file system's clock.
    for index, answer in enumerate(made):
        manifest = gateway.store / ImageRef.from_id(answer["id"]).manifest_key
        os.utime(manifest, (1_000_000_000 + index, 1_000_000_000 + index))
    newest_first = [answer["id"] for answer in reversed(made)]

    seen: list[str] = []
    cursor: str | None = None
    for _ in range(4):
        params = {"folder": "album", "limit": "2", **({"cursor": cursor} if cursor else {})}
        page = httpx.get(f"{gateway.url}/v1/images", params=params, timeout=30).json()
        seen += [image["id"] for image in page["images"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == newest_first

    with Client(gateway.url) as client:
        assert [image.id for image in client.list("album", page_size=1)] == newest_first
        assert client.get(made[0]["id"]).file_name == "p0.png"
        with pytest.raises(NotFound):
            client.get(ImageRef("album", "never", "0123456789abcdef").id)
        with pytest.raises(Unauthenticated):
            client.delete(made[0]["id"])
        client.delete(made[0]["id"], made[0]["delete_token"])
        with pytest.raises(NotFound):
            client.delete(made[0]["id"], made[0]["delete_token"])

    async def listed() -> list[str | None]:
        async with AsyncClient(gateway.url) as client:
            return [image.id async for image in client.list("album/2026", page_size=1)]

    assert asyncio.run(listed()) == newest_first[:2]

    bad = httpx.get(f"{gateway.url}/v1/images", params={"limit": "0"}, timeout=30)
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_request"
    stray = httpx.get(f"{gateway.url}/v1/images", params={"foldr": "album"}, timeout=30)
    assert stray.status_code == 400 and "'foldr'" in stray.json()["error"]


@pytest.mark.parametrize(
    "image_id",
    ["photo", "img_", "img_Li4vZXRj", "img_!!", "img_" + "A" * 700, ImageRef("a", "b", None).id],
)
def test_a_malformed_id_is_a_400_in_one_line(gateway: Gateway, image_id: str) -> None:
    response = httpx.get(f"{gateway.url}/v1/images/{image_id}", timeout=30)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "invalid_request" and "\n" not in body["error"]


def run_cli(gateway: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "uplodr", "images", *args, "--server", gateway.url],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )


def test_the_command_line_lists_shows_and_removes(gateway: Gateway) -> None:
    made = upload(gateway, "cli.png", "cli")
    listed = run_cli(gateway, "ls", "--folder", "cli")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split()[0] == made["id"] and "cli/cli.png" in listed.stdout
    shown = run_cli(gateway, "show", made["id"])
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["variants"] == made["variants"]

    refused = run_cli(gateway, "rm", made["id"], "--delete-token", "not-its-token")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "unauthenticated" in refused.stderr
    removed = run_cli(gateway, "rm", made["id"], "--delete-token", made["delete_token"])
    assert removed.returncode == 0, removed.stderr
    again = run_cli(gateway, "rm", made["id"], "--delete-token", made["delete_token"])
    assert again.returncode == 1 and "not_found" in again.stderr
    usage = run_cli(gateway, "rm", made["id"])
    assert usage.returncode == 2 and usage.stderr.count("\n") == 1


def test_the_secret_is_made_once_private_and_never_logged(gateway: Gateway) -> None:
    secret = gateway.root / "data" / "secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert len(secret.read_bytes()) == 32
    log = gateway.log_text()
    assert f"delete tokens in {secret}" in log
    assert secret.read_bytes().hex() not in log


def test_a_delete_token_outlives_a_restart_and_a_given_secret_file_must_exist(
    tmp_path: Path,
) -> None:
    """The secret is kept in the data folder: a token given before a restart still deletes.
    `--secret-file` is never made up: a missing or too short one stops `serve` in one line."""
    root = tmp_path / "gw"
    with running_gateway(root) as first:
        made = upload(first, "kept.png", "restart")
    with running_gateway(root) as second:
        assert "made a new secret" not in second.log_text().split("uplodr serving on")[-1]
        response = httpx.delete(
            f"{second.url}/v1/images/{made['id']}",
            headers={"Uplodr-Delete-Token": made["delete_token"]},
            timeout=60,
        )
        assert response.status_code == 204, response.text

    short = tmp_path / "short-secret"
    short.write_bytes(b"0123456789")
    for secret_file, said in ((tmp_path / "absent", "No such file"), (short, "holds 10 bytes")):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "uplodr",
                "serve",
                "--port",
                "0",
                "--secret-file",
                str(secret_file),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "UPLODR_DATA_DIR": str(tmp_path / "data")},
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"uplodr serve: secret file {secret_file}")
        assert said in done.stderr and done.stderr.count("\n") == 1


def test_a_data_folder_that_cannot_be_written_still_serves_with_a_secret_of_its_own(
    tmp_path: Path,
) -> None:
    """A read-only root filesystem (deploy/kubernetes) with an S3 store: no secret file can be
    made, so the gateway says so once and its tokens work until it restarts."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the data folder would be")
    env = {"UPLODR_DATA_DIR": str(blocker / "data")}
    with running_gateway(tmp_path / "gw", env=env, store=tmp_path / "store") as gateway:
        made = upload(gateway, "ephemeral.png", "ro")
        response = httpx.delete(
            f"{gateway.url}/v1/images/{made['id']}",
            headers={"Uplodr-Delete-Token": made["delete_token"]},
            timeout=60,
        )
        assert response.status_code == 204, response.text
        log = gateway.log_text()
    assert f"secret file {blocker / 'data' / 'secret'}: cannot create it" in log
    assert "stop working when it restarts (give --secret-file to keep them)" in log
