"""Finding worker processes, so tests can prove that none is left behind, and running the
`uplodr` command as a user does."""

from __future__ import annotations

import collections
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import psutil

from uplodr.machines.local import reserve_port

# In every worker's environment during a test or fault run, to find leftovers by it (grand-
# children and processes another process started included).
RUN_MARK = "UPLODR_FAULT_RUN"


# Ports handed out by `free_port`, each held by a bound socket that never listens, with when.
_HELD: collections.deque[tuple[float, socket.socket]] = collections.deque()
_HELD_FOR_GOOD: list[socket.socket] = []
# How long a port stays held: far longer than any server takes to bind it (Swift's rings, a
# worker's boot), short enough that a long run does not hold thousands of sockets.
HOLD_S = 600.0


def free_port(*, for_good: bool = False) -> int:
    """A free loopback port for a server a test starts, held for `HOLD_S` by a bound socket
    with SO_REUSEADDR that never listens: `machines.local.reserve_port`, as a worker's is held.
    A port merely found free and let go could be taken before the server binds it — by the
    source port of any outgoing connection, or another `bind(0)`, and a suite makes thousands
    of connections (a fault run died at its start once, in a random-order run). A held port
    is skipped by both, and the server (uvicorn, gRPC, Swift, Go, http.server: all set
    SO_REUSEADDR) binds and listens beside the holder. `for_good`: held as long as this process
    runs, for a server stopped and started again on its port later (Swift's S3 proxy in the
    outage tests of a whole session)."""
    now = time.monotonic()
    while _HELD and now - _HELD[0][0] > HOLD_S:
        _HELD.popleft()[1].close()
    holder = reserve_port()
    if for_good:
        _HELD_FOR_GOOD.append(holder)
    else:
        _HELD.append((now, holder))
    return int(holder.getsockname()[1])


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
