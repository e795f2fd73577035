"""Everything a worker needs to know, gathered from its command line and environment.

A gateway starts a worker with environment variables only (a machine's command line is fixed),
so every setting has an UPLODR_* variable; the CLI options exist for running a worker by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from uplodr.imaging import ImageLimits
from uplodr.preset import DEFAULT_PRESET, Preset

# Chunks between gateway and worker are far below this; it bounds the single-message Upload
# call, which carries a whole file (DESIGN: gRPC's default receive limit is 4 MiB).
DEFAULT_MSG_SIZE = 64 * 1024 * 1024
DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class WorkerConfig:
    grpc_addr: str
    stores: tuple[str, ...]
    public_url: str | None
    key_mode: Literal["digest", "name"] = "digest"
    preset: Preset = DEFAULT_PRESET
    limits: ImageLimits = field(default_factory=ImageLimits)
    msg_size: int = DEFAULT_MSG_SIZE
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    # The worker ends itself after this long, whatever happens (a lost machine stops billing).
    max_lifetime: float = 20 * 60
    # ... and when nobody has called it for this long: its gateway is gone (FLAME's terminator).
    idle_timeout: float = 30.0
    # Work in flight gets this long to finish after SIGTERM or the end of max_lifetime.
    shutdown_grace: float = 30.0
    max_concurrent_jobs: int = 1
    token: str | None = None
