"""Start a worker process from its options and environment; turn start-up failures into one line.

A gateway configures its workers through the environment (UPLODR_STORES, UPLODR_PRESET,
UPLODR_LIMITS, UPLODR_WORKER_TOKEN, …): a machine's command line is fixed, its env is not.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from dataclasses import fields
from typing import Literal

from uplodr.errors import UplodrError
from uplodr.imaging import ImageLimits
from uplodr.preset import DEFAULT_PRESET, Preset
from uplodr.worker.config import WorkerConfig

log = logging.getLogger("uplodr.worker")


def _reexec_with_small_malloc_arenas() -> None:
    """glibc reads MALLOC_ARENA_MAX at start-up only; without it a long-running pyvips worker
    grew 224 → 606 MB over 8 images (DESIGN.md). Restart once with it set."""
    if "MALLOC_ARENA_MAX" not in os.environ:
        os.environ["MALLOC_ARENA_MAX"] = "2"
        os.execv(sys.executable, [sys.executable, "-m", "uplodr", *sys.argv[1:]])


def _limits_from_env(text: str | None) -> ImageLimits:
    if not text:
        return ImageLimits()
    data = json.loads(text)
    known = {f.name for f in fields(ImageLimits)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown limits in UPLODR_LIMITS: {', '.join(sorted(unknown))}")
    return ImageLimits(**data)


def run_worker(
    *,
    grpc_addr: str,
    stores: tuple[str, ...],
    public_url: str | None,
    key_mode: Literal["digest", "name"],
    msg_size: int,
    max_file_bytes: int,
    max_lifetime: float,
    idle_timeout: float,
    max_jobs: int,
) -> int:
    _reexec_with_small_malloc_arenas()
    try:
        if not stores:
            stores = tuple(json.loads(os.environ.get("UPLODR_STORES", "[]")))
        if not stores:
            raise ValueError("give --store (or UPLODR_STORES)")
        preset_json = os.environ.get("UPLODR_PRESET")
        config = WorkerConfig(
            grpc_addr=grpc_addr,
            stores=stores,
            public_url=public_url,
            key_mode=key_mode,
            preset=Preset.from_json(preset_json) if preset_json else DEFAULT_PRESET,
            limits=_limits_from_env(os.environ.get("UPLODR_LIMITS")),
            msg_size=msg_size,
            max_file_bytes=max_file_bytes,
            max_lifetime=max_lifetime,
            idle_timeout=idle_timeout,
            max_concurrent_jobs=max_jobs,
            token=os.environ.get("UPLODR_WORKER_TOKEN") or None,
        )
    except (ValueError, TypeError) as error:
        print(f"uplodr worker: bad configuration: {error}", file=sys.stderr)
        return 2
    from uplodr.worker.server import serve

    try:
        reason = asyncio.run(serve(config))
    except UplodrError as error:
        print(f"uplodr worker: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"uplodr worker: {error}", file=sys.stderr)
        return 2
    log.info("worker stopped: %s", reason)
    return 0
