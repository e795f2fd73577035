"""Start a server process for the tests that does not outlive the test run.

Each server gets its own session (a signal to the test's process group does not reach it, and
it can be stopped as a group) and, on Linux, SIGTERM from the kernel when the test process dies,
even by SIGKILL (PR_SET_PDEATHSIG). Linux sends that signal when the spawning *thread* ends, so
only processes spawned by the main thread get it.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from typing import IO


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn_server(
    command: Sequence[str], log: IO[bytes], env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`command` with stdout and stderr to `log`, no stdin, tied to the test process."""
    return subprocess.Popen(
        list(command),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent
        if threading.current_thread() is threading.main_thread()
        else None,
        env=None if env is None else dict(env),
    )
