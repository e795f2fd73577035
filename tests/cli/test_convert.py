"""`uplodr convert` on whole folders against a real `uplodr serve`: what it finds and skips,
its summary and exit codes, JSON lines, the progress bar on a terminal only, a cheap second
run (answered from storage, no machine), and Ctrl-C."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import Gateway
from tests.support.made import of_json
from tests.support.paths import corpus_file
from tests.support.waiting import busy_worker, wait_for

SMALL = ["sample-16bit.png", "Channel_digital_image_CMYK_color.jpg", "iss634.gif"]
BAR_GLYPH = "━"  # rich's progress bar


def uplodr(gateway: Gateway, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "uplodr", "convert", "--server", gateway.url, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def machines_created(gateway: Gateway) -> float:
    for line in httpx.get(f"{gateway.url}/metrics").text.splitlines():
        if line.startswith("uplodr_machines_created_total "):
            return float(line.split()[-1])
    raise AssertionError("no uplodr_machines_created_total in /metrics")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Copies of three corpus images, one in a sub-folder, and a text file."""
    folder = tmp_path_factory.mktemp("photos")
    (folder / "nested").mkdir()
    for index, name in enumerate(SMALL):
        target = folder / "nested" / name if index == 2 else folder / name
        shutil.copy(corpus_file(name), target)
    (folder / "notes.txt").write_text("not an image, whatever its name says\n")
    (folder / "fake.jpg").write_text("<html>also not an image</html>\n")
    return folder


def test_a_folder_converts_its_images_and_skips_the_rest(gateway: Gateway, photos: Path) -> None:
    done = uplodr(gateway, str(photos), "--folder", "cli")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    statuses = sorted(line.split()[0] for line in lines)
    assert statuses == ["converted"] * 3 + ["skipped"] * 2
    assert any("nested/iss634.gif" in line for line in lines)
    converted = [line for line in lines if line.startswith("converted")]
    # the formats that won (format_margin: JPEG always, WebP and AVIF where they win) and the
    # thumbnail; the --json run below checks each count against its answer's `skipped`
    counts = [re.search(r"  (\d+) variants ", line) for line in converted]
    assert all(c is not None and 2 <= int(c[1]) <= 4 for c in counts), converted
    assert all("/files/cli/" in line for line in converted)
    summary = done.stderr.strip().splitlines()[-1]
    assert summary.startswith(
        "3 images: 3 converted, 0 deduplicated, 0 failed; 2 skipped (not an image 2) in "
    ), summary
    # Piped: plain lines, no progress bar and no terminal escapes.
    assert BAR_GLYPH not in done.stdout + done.stderr
    assert "\x1b[" not in done.stdout + done.stderr


def test_a_second_run_is_answered_from_storage_without_machines(
    gateway: Gateway, photos: Path
) -> None:
    first = uplodr(gateway, str(photos), "--folder", "again")
    assert first.returncode == 0, first.stderr
    created = machines_created(gateway)
    second = uplodr(gateway, str(photos), "--folder", "again", "--json")
    assert second.returncode == 0, second.stderr
    records = [json.loads(line) for line in second.stdout.splitlines()]
    assert sorted(r["status"] for r in records) == ["deduplicated"] * 3 + ["skipped"] * 2
    for record in records:
        if record["status"] == "deduplicated":
            conversion = record["conversion"]
            assert conversion["deduplicated"] is True and "job" not in conversion
            assert Path(record["path"]).name == conversion["file_name"]
            assert len(conversion["variants"]) == len(of_json(conversion)) + 1
        else:
            assert record["reason"] == "not an image"
    assert "3 images: 0 converted, 3 deduplicated, 0 failed" in second.stderr
    assert machines_created(gateway) == created


def test_failures_are_counted_by_code_and_exit_1(gateway: Gateway, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(corpus_file("Landscape_6.jpg").read_bytes()[:2000])
    shutil.copy(corpus_file("sample-16bit.png"), tmp_path / "fine.png")
    done = uplodr(gateway, str(tmp_path / "*.jpg"), str(tmp_path / "fine.png"), "--json")
    assert done.returncode == 1, done.stderr
    records = {Path(r["path"]).name: r for r in map(json.loads, done.stdout.splitlines())}
    assert records["broken.jpg"]["status"] == "failed"
    assert records["broken.jpg"]["code"] == "corrupt_image"
    assert records["broken.jpg"]["http_status"] == 422
    assert records["fine.png"]["status"] in ("converted", "deduplicated")
    assert "1 failed (corrupt_image 1)" in done.stderr


def test_a_missing_path_is_a_usage_error(gateway: Gateway, tmp_path: Path) -> None:
    for missing in (str(tmp_path / "nope"), str(tmp_path / "*.png")):
        done = uplodr(gateway, missing)
        assert done.returncode == 2
        assert done.stderr.strip().startswith("uplodr convert: no ")
        assert done.stdout == ""


def test_an_unreachable_server_fails_each_image(photos: Path) -> None:
    from tests.support.procs import free_port

    done = subprocess.run(
        [sys.executable, "-m", "uplodr", "convert", str(photos)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "UPLODR_SERVER": f"http://127.0.0.1:{free_port()}"},
    )
    assert done.returncode == 1
    assert "3 failed (unreachable 3)" in done.stderr


def run_in_terminal(*args: str) -> tuple[int, str]:
    """Run a command with stdout and stderr on a pseudo-terminal; its exit code and output."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once
        os.execvpe(args[0], list(args), {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"})
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([fd], [], [], 120)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError("the command printed nothing for 120 s")
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace")


def test_a_terminal_gets_a_progress_bar(gateway: Gateway, photos: Path) -> None:
    assert uplodr(gateway, str(photos), "--folder", "tty").returncode == 0
    code, output = run_in_terminal(
        sys.executable, "-m", "uplodr", "convert", "--server", gateway.url, str(photos),
        "--folder", "tty",
    )  # fmt: skip
    assert code == 0, output
    assert BAR_GLYPH in output
    assert "3/3 files" in output
    assert "3 images: 0 converted, 3 deduplicated" in output


def test_ctrl_c_cancels_the_uploads_in_flight(gateway: Gateway, tmp_path: Path) -> None:
    for copy in ("one", "two"):  # the slowest photo (24 MP), twice
        shutil.copy(corpus_file("craft-beer.jpg"), tmp_path / f"{copy}.jpg")
    before = machines_created(gateway)
    process = subprocess.Popen(
        [sys.executable, "-m", "uplodr", "convert", "--server", gateway.url, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    busy_worker(gateway)  # a machine is converting one of them
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    (summary,) = [line for line in stderr.splitlines() if line.startswith("interrupted:")]
    assert "0 converted" in summary and "2 cancelled" in summary, summary
    assert stdout == ""
    # The gateway saw the requests close: it stopped the jobs and destroyed their machines.
    wait_for(
        lambda: gateway.workers() == [] and gateway.machine_records() == [],
        "the interrupted jobs' machines to be destroyed",
    )
    assert machines_created(gateway) > before
