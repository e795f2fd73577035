"""Start a server process for the tests that does not outlive the test run.

Each server gets its own session (a signal to the test's process group does not reach it, and
it can be stopped as a group) and, on Linux, SIGTERM from the kernel when the test process dies,
even by SIGKILL (PR_SET_PDEATHSIG, set by util-linux's `setpriv --pdeathsig` just before it
execs the server). Linux sends that signal when the spawning *thread* ends, so only processes
spawned by the main thread get it.

Never a `preexec_fn`: Python code between fork and exec runs gRPC's at-fork handlers in the
child, and a test process that has gRPC threads running (any test before it that talked to a
worker) then dies in the child with SIGABRT before the server ever starts (seen: dockerd
"exited (-6) while starting" when the suite ran on two processes).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Mapping, Sequence
from typing import IO


def _die_with_parent(command: Sequence[str]) -> list[str]:
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return list(command)
    return [setpriv, "--pdeathsig", "TERM", "--", *command]


def spawn_server(
    command: Sequence[str], log: IO[bytes], env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`command` with stdout and stderr to `log`, no stdin, tied to the test process."""
    return subprocess.Popen(
        _die_with_parent(command),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=None if env is None else dict(env),
    )
