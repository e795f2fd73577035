"""Everything a worker needs to know: where it listens, and the configuration its gateway sent.

A gateway starts a worker with environment variables only (a machine's command line is fixed);
`uplodr.worker_env.WorkerEnv` reads them. The CLI options exist for running a worker by hand and
override the environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from uplodr.limits import ImageLimits
from uplodr.preset import DEFAULT_PRESET, Preset
from uplodr.worker_env import DEFAULT_MAX_FILE_BYTES, DEFAULT_MSG_SIZE, WorkerEnv


@dataclass(frozen=True)
class WorkerConfig:
    grpc_addr: str
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

    @classmethod
    def of(cls, grpc_addr: str, env: WorkerEnv) -> WorkerConfig:
        """The worker listening on `grpc_addr` with the configuration `env`."""
        return cls(
            grpc_addr=grpc_addr,
            preset=env.preset,
            limits=env.limits,
            msg_size=env.msg_size,
            max_file_bytes=env.max_file_bytes,
            max_lifetime=env.max_lifetime,
            idle_timeout=env.idle_timeout,
            max_concurrent_jobs=env.max_jobs,
            token=env.token or None,
        )
