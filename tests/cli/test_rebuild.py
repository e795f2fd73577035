"""`uplodr rebuild` as a user runs it (a real process, local machines, a local store): every set
with a kept original converted again with the new preset, resumable after SIGTERM or SIGKILL
with none converted twice and no machine left, sets without an original listed, `--replace`;
and POST /v1/rebuilds on a running gateway."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.gateway import running_gateway
from tests.support.images import noise_png
from tests.support.procs import worker_processes
from tests.support.stored_sets import OLD_PRESET, in_preset, make_sets, manifests
from tests.support.waiting import wait_for
from uplodr.gateway.rebuild import display_name
from uplodr.gateway.tokens import secret_hash
from uplodr.preset import Preset
from uplodr.storage.catalog import ImageRef

NEW = Preset(formats=("webp",), thumbnail_width=0, max_long_side=256)
PRESETS = (
    '[small]\nformats = ["webp"]\nthumbnail_width = 0\nmax_long_side = 256\n'
    '[tiny]\nformats = ["webp"]\nthumbnail_width = 0\nmax_long_side = 128\n'
)
# How long a stopped run may take to let its sets in hand finish and destroy its machines.
STOP_DEADLINE = 60.0


@dataclass
class Place:
    store: Path
    state: Path
    cwd: Path
    presets: Path

    def args(self, *extra: str, preset: str = "small") -> list[str]:
        return [
            sys.executable,
            "-m",
            "uplodr",
            "rebuild",
            "--folder",
            "blog",
            "--preset",
            preset,
            "--presets",
            str(self.presets),
            "--store",
            str(self.store),
            "--state-dir",
            str(self.state),
            "--json",
            *extra,
        ]

    def machines(self) -> list[dict[str, Any]]:
        listed = subprocess.run(
            [
                sys.executable,
                "-m",
                "uplodr",
                "machines",
                "ls",
                "--json",
                "--state-dir",
                str(self.state),
            ],
            capture_output=True,
            check=True,
            timeout=60,
        )
        found: list[dict[str, Any]] = json.loads(listed.stdout)
        return found


@pytest.fixture
def place(tmp_path: Path) -> Place:
    presets = tmp_path / "presets.toml"
    presets.write_text(PRESETS)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    return Place(tmp_path / "store", tmp_path / "state", cwd, presets)


def env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "UPLODR_DATA_DIR": str(tmp / "data")}


def run(place: Place, *extra: str, preset: str = "small") -> tuple[int, dict[str, Any], str]:
    done = subprocess.run(
        place.args(*extra, preset=preset),
        cwd=place.cwd,
        env=env(place.cwd),
        capture_output=True,
        timeout=300,
    )
    stdout = done.stdout.decode()
    return done.returncode, json.loads(stdout) if stdout.strip() else {}, done.stderr.decode()


@contextmanager
def started(
    place: Place, stdout: Any, stderr: Any, pool: int = 2
) -> Iterator[subprocess.Popen[bytes]]:
    """`uplodr rebuild --pool-max N` running; killed if still running when the block ends."""
    process = subprocess.Popen(
        place.args("--pool-max", str(pool)),
        cwd=place.cwd,
        env=env(place.cwd),
        stdout=stdout,
        stderr=stderr,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def no_machine_left(place: Place) -> None:
    assert place.machines() == []
    assert worker_processes(place.cwd) == []


def test_stopped_halfway_and_run_again_rebuilds_each_set_once(place: Place) -> None:
    make_sets(place.store, "blog", 30, size=(640, 480))
    make_sets(place.store, "blog/old", 2, keep_original=False, prefix="lossy")
    stderr = place.cwd / "first.log"
    with stderr.open("wb") as log, started(place, subprocess.PIPE, log) as first:
        wait_for(lambda: len(in_preset(place.store, "blog", NEW)) >= 5, "a few sets rebuilt")
        first.send_signal(signal.SIGTERM)
        try:
            out, _ = first.communicate(timeout=STOP_DEADLINE)
        except subprocess.TimeoutExpired:  # it did not stop in time: what a user does next
            first.kill()
            out, _ = first.communicate()
    done_before = len(in_preset(place.store, "blog", NEW))
    assert 5 <= done_before < 30
    assert first.returncode == 130, stderr.read_text()
    summary = json.loads(out)
    assert summary["state"] == "stopped"
    assert summary["rebuilt"] == done_before  # the sets in hand finished, none half-made
    assert "uplodr rebuild: stopped after" in stderr.read_text()
    no_machine_left(place)

    code, again, err = run(place, "--pool-max", "2")
    assert code == 0, err
    assert again["state"] == "done"
    assert again["rebuilt"] == 30 - done_before  # none converted twice
    assert again["already_done"] == done_before
    assert again["current"] == done_before  # the new sets themselves
    assert sorted(again["skipped"]) == ["blog/old/lossy000", "blog/old/lossy001"]
    assert again["failed"] == []
    assert again["machine_seconds"] > 0
    rebuilt = in_preset(place.store, "blog", NEW)
    assert len(rebuilt) == 30
    for manifest in rebuilt:  # the original is kept: the new set can be rebuilt again
        roles = [v["role"] for v in manifest["variants"]]  # type: ignore[attr-defined]
        assert roles.count("original") == 1 and "full" in roles
    assert len(manifests(place.store, "blog")) == 30 + 30 + 2  # old sets kept without --replace
    no_machine_left(place)


def test_a_killed_run_leaves_machines_the_next_run_removes(place: Place) -> None:
    make_sets(place.store, "blog", 6, size=(640, 480))
    # One machine at a time, killed once it is recorded: a local worker spawned in the instant
    # before its record is written has none to be found by, and ends itself (idle timeout).
    with started(place, subprocess.DEVNULL, subprocess.DEVNULL, pool=1):
        wait_for(lambda: place.machines() != [], "a machine of the first run")
    # killed (SIGKILL) as the block ended
    assert place.machines() != []  # SIGKILL: nothing could destroy them

    code, summary, err = run(place, "--pool-max", "2")
    assert code == 0, err
    assert summary["rebuilt"] + summary["already_done"] == 6
    assert len(in_preset(place.store, "blog", NEW)) == 6
    no_machine_left(place)


def test_a_second_signal_aborts_the_sets_in_hand_cleanly(place: Place) -> None:
    make_sets(place.store, "blog", 12, size=(1024, 768))
    with started(place, subprocess.PIPE, subprocess.PIPE) as first:
        wait_for(lambda: len(in_preset(place.store, "blog", NEW)) >= 1, "a set rebuilt")
        first.send_signal(signal.SIGINT)
        first.send_signal(signal.SIGINT)
        out, err = first.communicate(timeout=STOP_DEADLINE)
    assert first.returncode == 130, err.decode()
    assert json.loads(out)["state"] == "stopped"
    # an aborted set was rolled back: every object left belongs to a set with its manifest
    sets = manifests(place.store, "blog")
    assert 12 < len(sets) < 24
    files = sorted(p.name for p in (place.store / "blog").iterdir())
    assert len(files) == 3 * len(sets), files
    no_machine_left(place)


def test_sets_of_one_original_under_one_name_are_converted_once(place: Place) -> None:
    """After a rebuild that kept the old sets, each original has two sets under its name: a
    rebuild into a third preset converts it once, whichever of the two comes first."""
    make_sets(place.store, "blog", 4)
    assert run(place)[0] == 0
    code, summary, err = run(place, "--pool-max", "2", preset="tiny")
    assert code == 0, err
    assert (summary["rebuilt"], summary["already_done"]) == (4, 4)
    no_machine_left(place)


def test_replace_deletes_each_old_set_after_its_new_one(place: Place) -> None:
    stems = make_sets(place.store, "blog", 4)
    code, summary, err = run(place, "--replace")
    assert code == 0, err
    assert (summary["rebuilt"], summary["replaced"]) == (4, 4)
    left = manifests(place.store, "blog")
    assert len(left) == 4 and left == in_preset(place.store, "blog", NEW)
    old = json.loads(OLD_PRESET.to_json())
    assert all(m["preset"] != old for m in left)
    # nothing of an old set is left: each stem has one set's files (webp, original, manifest)
    names = sorted(p.name for p in (place.store / "blog").iterdir())
    assert len(names) == 3 * len(stems)
    no_machine_left(place)


def test_an_unknown_preset_or_a_bad_folder_is_one_line(place: Place) -> None:
    done = subprocess.run(
        [*place.args()[:7], "nope", *place.args()[8:]],
        cwd=place.cwd,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.decode().count("\n") == 1 and "no preset 'nope'" in done.stderr.decode()


def _tokens_file(path: Path) -> dict[str, str]:
    secrets = {"blog": "blog-secret-0123456789", "shop": "shop-secret-0123456789"}
    path.write_text(
        "".join(
            f'[[tokens]]\nname = "{name}"\nsha256 = "{secret_hash(secret).hex()}"\n'
            f'prefixes = ["{name}/"]\n'
            for name, secret in secrets.items()
        )
    )
    return {name: f"Bearer {secret}" for name, secret in secrets.items()}


def test_the_http_route_rebuilds_a_folder_its_token_covers(place: Place, tmp_path: Path) -> None:
    make_sets(place.store, "blog", 3)
    make_sets(place.store, "blog", 1, keep_original=False, prefix="lossy")
    tokens = _tokens_file(tmp_path / "tokens.toml")
    with running_gateway(
        tmp_path / "gw",
        "--presets",
        str(place.presets),
        "--tokens-file",
        str(tmp_path / "tokens.toml"),
        "--pool-idle",
        "30s",
        store=place.store,
    ) as gateway:
        url = f"{gateway.url}/v1/rebuilds"
        body = {"folder": "blog", "preset": "small"}
        assert httpx.post(url, json=body).status_code == 401
        refused = httpx.post(url, json=body, headers={"authorization": tokens["shop"]})
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
        unknown = httpx.post(
            url, json={**body, "preset": "nope"}, headers={"authorization": tokens["blog"]}
        )
        assert (unknown.status_code, unknown.json()["code"]) == (400, "invalid_request")
        extra = httpx.post(
            url, json={**body, "replac": True}, headers={"authorization": tokens["blog"]}
        )
        assert extra.status_code == 400 and "replac" in extra.json()["error"]

        started = httpx.post(url, json=body, headers={"authorization": tokens["blog"]})
        assert started.status_code == 202, started.text
        rebuild_id = started.json()["id"]
        status_url = f"{url}/{rebuild_id}"
        seen: dict[str, Any] = {}

        def finished() -> bool:
            answer = httpx.get(status_url, headers={"authorization": tokens["blog"]})
            assert answer.status_code == 200, answer.text
            seen.update(answer.json())
            return bool(seen["state"] == "done")

        wait_for(finished, "the rebuild to finish")
        assert (seen["total"], seen["rebuilt"], seen["failed"]) == (4, 3, [])
        assert seen["skipped"] == ["blog/lossy000"]
        other = httpx.get(status_url, headers={"authorization": tokens["shop"]})
        assert other.status_code == 403
        missing = httpx.get(f"{url}/rb_nope", headers={"authorization": tokens["blog"]})
        assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    assert len(in_preset(place.store, "blog", NEW)) == 3


def test_a_second_http_rebuild_finds_every_set_done(place: Place, tmp_path: Path) -> None:
    """On a gateway without tokens (loopback only) too; nothing is converted twice."""
    make_sets(place.store, "blog", 2)
    with running_gateway(
        tmp_path / "gw", "--presets", str(place.presets), store=place.store
    ) as gateway:
        url = f"{gateway.url}/v1/rebuilds"
        answers = []
        for _ in range(2):
            started = httpx.post(url, json={"folder": "blog", "preset": "small"})
            assert started.status_code == 202
            status_url = f"{url}/{started.json()['id']}"
            wait_for(lambda: httpx.get(status_url).json()["state"] == "done", "the rebuild")  # noqa: B023
            answers.append(httpx.get(status_url).json())
    assert (answers[0]["rebuilt"], answers[1]["rebuilt"]) == (2, 0)
    assert (answers[1]["already_done"], answers[1]["current"]) == (2, 2)


def test_an_upload_during_a_rebuild_waits_for_one_set_not_for_the_rebuild(
    place: Place, tmp_path: Path
) -> None:
    """The rebuild's lanes and the uploads share the gateway's job slots first come, first
    served, and a lane reads its next original before it asks for a slot again: an upload
    waits for the set in hand, never for the rest of the folder."""
    total = 10
    make_sets(place.store, "blog", total, size=(1200, 900))
    with running_gateway(
        tmp_path / "gw", "--presets", str(place.presets), "--pool-max", "1", store=place.store
    ) as gateway:
        url = f"{gateway.url}/v1/rebuilds"
        started = httpx.post(url, json={"folder": "blog", "preset": "small"})
        assert started.status_code == 202, started.text
        status_url = f"{url}/{started.json()['id']}"

        def done() -> int:
            answer = httpx.get(status_url).json()
            return int(answer["rebuilt"]) + int(answer["already_done"])

        wait_for(lambda: done() >= 1, "the rebuild's first set")
        before = done()
        assert before <= total - 4, before  # far from its end: the upload has to share the slot
        upload = httpx.post(
            f"{gateway.url}/v1/images",
            params={"name": "meanwhile.png", "folder": "news"},
            content=noise_png(64, 48, random.Random(7)),
            timeout=120,
        )
        after = done()
        assert upload.status_code == 200, upload.text
        # the set in hand when the upload asked, and at most one that began before it did
        assert after <= before + 2, (before, after)
        wait_for(lambda: httpx.get(status_url).json()["state"] == "done", "the rebuild")
    assert len(in_preset(place.store, "blog", NEW)) == total


def test_the_new_set_keeps_the_old_stem_and_the_manifests_file_name() -> None:
    ref = ImageRef("blog", "Cat-Photo", "0123456789abcdef")
    key = "blog/Cat-Photo-0123456789abcdef-original.jpg"
    # manifest v3 names the upload's file: shown as it came, the keys keep the set's stem
    named = display_name({"file_name": "Cat Photo.JPG", "variants": []}, ref, key)
    assert (named.file_name, named.stem) == ("Cat Photo.JPG", "Cat-Photo")
    # an older manifest: the stem and the original's extension
    plain = display_name({"variants": []}, ref, key)
    assert (plain.file_name, plain.stem) == ("Cat-Photo.jpg", "Cat-Photo")
    # a file name that is not one (a damaged manifest) is not trusted
    odd = display_name({"file_name": "../x.jpg", "variants": []}, ref, key)
    assert (odd.file_name, odd.stem) == ("Cat-Photo.jpg", "Cat-Photo")
