"""Finding worker processes, so tests can prove that none is left behind."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import psutil


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
