"""The README's first examples, run as a newcomer runs them: the shell example (`scripts/serve
--presets presets.example.toml &`, a wait for readiness, then curl) and the Python client example
against the gateway it started. Only what is the user's own is substituted: the port (another
run may hold 8080), where its data and state go, and their photos (the corpus's, not copied into the
repository). A README example that cannot run — curl before the server listens, an undefined
name, a preset no shipped file has — fails here."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.made import of_json
from tests.support.paths import REPO, corpus_file
from tests.support.procs import free_port

README = REPO / "README.md"
FIRST_RUN = 600  # scripts/serve installs uv and the locked packages first on a fresh machine


def example(section: str, language: str) -> str:
    """The first ```language block under the README's `## section` heading."""
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    found = re.search(rf"```{language}\n(.*?)```", text[start:], re.DOTALL)
    assert found, f"README: no {language} example under '## {section}'"
    return found.group(1)


def in_group(pgid: int) -> list[psutil.Process]:
    alive = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                alive.append(proc)
        except (ProcessLookupError, psutil.Error):
            pass
    return alive


@dataclass
class Started:
    port: int
    answer: str
    log: Path


@pytest.fixture
def shell_example(tmp_path: Path) -> Iterator[Started]:
    """The "Use it" example, run by bash from the checkout; its gateway stopped after the test
    (SIGTERM to the example's process group, as Ctrl-C would; SIGKILL only past a deadline)."""
    port = free_port()
    photo = corpus_file("Landscape_6.jpg")
    script = example("Use it", "sh").replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    script = script.replace("@photo.jpg", f"@{photo}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("UPLODR_")}
    env |= {
        "UPLODR_PORT": str(port),
        "UPLODR_DATA_DIR": str(tmp_path / "data"),
        "UPLODR_STATE_DIR": str(tmp_path / "state"),  # its machines' records
    }
    out, log = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, log.open("wb") as stderr:
        shell = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=REPO,
            env=env,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        code = shell.wait(timeout=FIRST_RUN)
        assert code == 0, f"the example exited {code}:\n{log.read_text()[-3000:]}"
        yield Started(port, out.read_text(), log)
    finally:
        stop_group(shell.pid)
    # Its machines went with it (a record is written per machine and removed when it is gone).
    assert (tmp_path / "state").is_dir()
    assert list((tmp_path / "state").rglob("*.json")) == []


def stop_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 60
    while in_group(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)  # polling the processes' exit under a deadline
    left = in_group(pgid)
    if left:
        os.killpg(pgid, signal.SIGKILL)
    assert not left, f"the example's gateway outlived SIGTERM: {left}"


def test_the_readmes_examples_run_as_written(shell_example: Started, tmp_path: Path) -> None:
    answer = json.loads(shell_example.answer)
    assert answer["folder"] == "blog/2026" and answer["file_name"] == "photo.jpg"
    assert [v["format"] for v in answer["variants"]] == [*of_json(answer), "png"]
    assert httpx.get(answer["variants"][0]["url"]).status_code == 200

    photos = tmp_path / "photos"  # the user's own photos, beside their script
    photos.mkdir()
    (photos / "photo.jpg").symlink_to(corpus_file("Landscape_6.jpg"))
    (photos / "IMG_2682.heic").symlink_to(corpus_file("IMG_2682.heic"))
    code = example("Python client", "python").replace(
        "127.0.0.1:8080", f"127.0.0.1:{shell_example.port}"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=photos,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # each variant's type is printed; JPEG, the fallback, is always made
    assert "image/jpeg" in done.stdout and "<picture>" in done.stdout
    assert "480w" in done.stdout  # the `responsive` preset of presets.example.toml
