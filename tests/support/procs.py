"""Finding worker processes, so tests can prove that none is left behind, and running the
`uplodr` command as a user does."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import psutil

# In every worker's environment during a test or fault run, to find leftovers by it (grand-
# children and processes another process started included).
RUN_MARK = "UPLODR_FAULT_RUN"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker_processes(cwd: Path) -> list[psutil.Process]:
    """Live `uplodr worker` processes started from `cwd` (each test's gateway gets its own
    working directory, which its workers inherit)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd", "status"]):
        with contextlib.suppress(psutil.Error):
            cmdline = proc.info["cmdline"] or []
            if (
                "uplodr" in cmdline
                and "worker" in cmdline
                and proc.info["cwd"] == str(cwd)
                and proc.info["status"] != psutil.STATUS_ZOMBIE
            ):
                found.append(proc)
    return found


def marked_processes(mark: str, variable: str = RUN_MARK) -> list[psutil.Process]:
    """Live processes whose environment carries `variable=mark`."""
    found = []
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and proc.environ().get(variable) == mark:
                found.append(proc)
    return found


def run_uplodr(*args: str, env: Mapping[str, str], timeout: float = 120) -> str:
    """`uplodr ARGS…` as a separate process; its output, or RuntimeError with its stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "uplodr", *args],
        env=dict(env),
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"uplodr {' '.join(args)} failed: {done.stderr.decode()}")
    return done.stdout.decode()
