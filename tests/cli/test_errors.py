"""Errors of the command line, through the real `uplodr` command: one line on stderr naming the
command, exit status 2, no traceback and no usage block; `--help` unchanged."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from uplodr.cli.main import main

UPLODR = str(Path(sys.executable).with_name("uplodr"))  # the installed console script


def uplodr(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [UPLODR, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "80"},
    )


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert "Traceback" not in line and "Usage:" not in line
    return line


@pytest.mark.parametrize(
    ("args", "start", "says"),
    [
        (["serve", "--bogus"], "uplodr serve: ", "No such option '--bogus'"),
        (["serve", "--port", "abc"], "uplodr serve: ", "'--port': 'abc' is not a valid integer"),
        (["serve", "--max-upload", "12Q"], "uplodr serve: ", "'--max-upload': not a size: '12Q'"),
        (["serve", "--preset", "missing.json"], "uplodr serve: ", "'missing.json' does not exist"),
        (["worker"], "uplodr worker: ", "Missing option '--grpc-addr'"),
        (["reap", "--older-than", "soon"], "uplodr reap: ", "not a duration: 'soon'"),
        (["machines", "ls", "--bogus"], "uplodr machines ls: ", "No such option '--bogus'"),
        (["sweep", "--folder", "a/../b"], "uplodr sweep: ", "Invalid value for '--folder'"),
        (["bogus"], "uplodr: ", "No such command 'bogus'"),
        (
            ["convert", "--server", "127.0.0.1:8080", "a.jpg"],
            "uplodr convert: ",
            "'127.0.0.1:8080' is not an http:// or https:// URL",
        ),
        (["convert", "--alt", "x" * 1001, "a.jpg"], "uplodr convert: ", "is 1001 characters"),
        # Refused before any upload (once every file was sent, then failed invalid_request).
        (
            ["convert", "--folder", "../x", "a.jpg"],
            "uplodr convert: ",
            "Invalid value for '--folder': folder must not contain empty, '.' or '..' parts",
        ),
    ],
)
def test_a_bad_command_line_is_one_line(args: list[str], start: str, says: str) -> None:
    line = one_line_error(uplodr(*args))
    assert line.startswith(start), line
    assert says in line, line
    assert line.endswith(f"(see '{start.removesuffix(': ')} --help')"), line


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('{"avif_quality": "high"}', 'avif_quality: expected a whole number 1..100, got "high"'),
        ('{"avif_effort": 1', "not valid JSON (line 1, column 18"),
        ('{"avif_qualty": 50}', "avif_qualty: unknown setting (did you mean avif_quality?)"),
        ('{"formats": ["webp", "tiff"]}', 'got ["webp", "tiff"] ("tiff" is not one)'),
    ],
)
def test_a_bad_preset_stops_serve_with_one_line(tmp_path: Path, text: str, says: str) -> None:
    preset = tmp_path / "bad.json"
    preset.write_text(text)
    state, store = tmp_path / "state", tmp_path / "store"
    args = ["--state-dir", str(state), "--store", str(store), "--port", "0"]
    line = one_line_error(uplodr("serve", "--preset", str(preset), *args, cwd=tmp_path))
    assert line.startswith("uplodr serve: "), line
    assert says in line, line
    assert "--help" not in line  # nothing about the usage is wrong


@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"], ["machines", "ls", "-h"]])
def test_help_is_what_click_prints(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as stop:
        main.main(args, prog_name="uplodr")  # click's own standalone mode, in this process
    clicks = capsys.readouterr().out
    assert stop.value.code == 0 and clicks.startswith("Usage: uplodr ")
    done = uplodr(*args)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout == clicks


def test_no_command_prints_the_help() -> None:
    bare = uplodr()  # no command: the group's help, as click prints it
    assert bare.returncode == 2 and bare.stderr.startswith("Usage: uplodr [OPTIONS] COMMAND")
    assert "Commands:" in bare.stderr
    version = uplodr("--version")
    assert version.returncode == 0 and version.stdout.startswith("uplodr, version ")


@pytest.mark.parametrize("command", [["machines", "ls"], ["reap"]])
def test_a_provider_that_cannot_be_reached_is_one_line(command: list[str], tmp_path: Path) -> None:
    """An outage, not a usage error: exit status 1, one line naming the engine."""
    socket = tmp_path / "no-engine.sock"
    done = subprocess.run(
        [UPLODR, *command, "--provider", "docker"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "DOCKER_HOST": f"unix://{socket}"},
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        f"uplodr {' '.join(command)}: Docker engine at unix://{socket} is unreachable: "
        "No such file or directory"
    ]


def test_a_port_in_use_stops_serve_with_one_line_before_it_says_serving(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["--state-dir", str(tmp_path / "state"), "--store", str(tmp_path / "store")]
        line = one_line_error(uplodr("serve", "--port", str(port), *args, cwd=tmp_path))
    # Found before anything was opened: nothing logged, nothing printed but this line.
    assert line == f"uplodr serve: --port {port}: 127.0.0.1:{port} is already in use", line
