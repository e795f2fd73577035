"""Start a worker process from its environment and options; turn start-up failures into one line.

A gateway configures its workers through the environment (`uplodr.worker_env.WorkerEnv`:
UPLODR_STORES, UPLODR_PRESET, UPLODR_LIMITS, UPLODR_WORKER_TOKEN, …): a machine's command line
is fixed, its env is not. Options given on the command line override the environment.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from uplodr import retry_log
from uplodr.errors import UplodrError
from uplodr.worker.config import WorkerConfig
from uplodr.worker_env import WorkerEnv

log = logging.getLogger("uplodr.worker")


def _reexec_with_small_malloc_arenas() -> None:
    """glibc reads MALLOC_ARENA_MAX at start-up only; without it a long-running pyvips worker
    grew 224 → 606 MB over 8 images (docs/benchmarks.md, worker memory over many jobs).
    Restart once with it set."""
    if "MALLOC_ARENA_MAX" not in os.environ:
        os.environ["MALLOC_ARENA_MAX"] = "2"
        os.execv(sys.executable, [sys.executable, "-m", "uplodr", *sys.argv[1:]])


def worker_config(
    grpc_addr: str, env: Mapping[str, str], overrides: Mapping[str, Any]
) -> WorkerConfig:
    """The configuration in `env`, with the given (not None) `overrides` of WorkerEnv fields.
    Raises ValueError (or TypeError) with one line."""
    given = {name: value for name, value in overrides.items() if value not in (None, ())}
    return WorkerConfig.of(grpc_addr, replace(WorkerEnv.from_env(env), **given))


def run_worker(grpc_addr: str, overrides: Mapping[str, Any]) -> int:
    _reexec_with_small_malloc_arenas()
    retry_log.install()  # a retry's log record never carries the call's arguments
    try:
        config = worker_config(grpc_addr, os.environ, overrides)
    except (ValueError, TypeError) as error:
        print(f"uplodr worker: bad configuration: {error}", file=sys.stderr)
        return 2
    from uplodr.worker.server import serve

    try:
        reason = asyncio.run(serve(config))
    except (UplodrError, OSError) as error:
        print(f"uplodr worker: {error}", file=sys.stderr)
        return 2
    log.info("worker stopped: %s", reason)
    return 0
