"""`uplodr doctor` without a Docker engine: the local provider and its stores, and settings that
do not fit — one line per check, exit status 1 when one failed, never a traceback. (Docker's
checks are in tests/docker/test_docker_provider_engine.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def doctor(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FLY_", "UPLODR_"))}
    return subprocess.run(
        [sys.executable, "-m", "uplodr", "doctor", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_local_provider_and_a_writable_store(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    done = doctor("--store", str(store), env={"UPLODR_STATE_DIR": str(tmp_path / "state")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "ok      provider local: can start a machine",
        f"ok      store {store}: writable",
    ]
    assert list(store.iterdir()) == []  # its check object is gone


def test_each_failure_is_its_own_line(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "machines").write_text("a file where the records should be")
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    done = doctor(
        "--store",
        str(not_a_folder),
        "--store",
        str(tmp_path / "later"),
        env={"UPLODR_STATE_DIR": str(state)},
    )
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert len(lines) == 3, lines
    assert lines[0] == f"failed  provider local: state dir {state}/machines is not writable: " + (
        "File exists"
    )
    assert lines[1].startswith(f"failed  store {not_a_folder}: ")
    assert lines[2] == f"ok      store {tmp_path / 'later'}: does not exist yet; serve creates it"
    assert "Traceback" not in done.stderr


def test_a_provider_whose_settings_do_not_fit(tmp_path: Path) -> None:
    done = doctor("--provider", "fly", "--store", "s3://bucket", env={})
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert len(lines) == 2, lines
    assert lines[0] == (
        "failed  provider fly: the Fly provider needs FLY_API_TOKEN, --fly-app (UPLODR_FLY_APP), "
        "--fly-image (UPLODR_FLY_IMAGE)"
    )
    # no provider to ask whether it reaches the store; the store itself is checked (and, with
    # no credentials anywhere, cannot be written)
    assert lines[1].startswith("failed  store s3://bucket: ")
