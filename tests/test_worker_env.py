"""A worker's configuration survives its trip through the environment: what the gateway writes
(`WorkerEnv.to_env`) is exactly what the worker reads (`WorkerEnv.from_env`)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from uplodr.limits import ImageLimits
from uplodr.preset import DEFAULT_PRESET
from uplodr.worker.run import worker_config
from uplodr.worker_env import VARS, WorkerEnv

FULL = WorkerEnv(
    preset=DEFAULT_PRESET.with_changes(avif_effort=1, formats=("webp",)),
    limits=ImageLimits(max_pixels=1234, max_seconds=2.5),
    max_file_bytes=1000,
    msg_size=2000,
    max_jobs=3,
    idle_timeout=0.25,
    max_lifetime=421.5,
    token="per-machine-token",
)


@pytest.mark.parametrize("worker_env", [FULL, WorkerEnv(), WorkerEnv(max_jobs=2)])
def test_round_trip(worker_env: WorkerEnv) -> None:
    env = worker_env.to_env()
    assert all(isinstance(v, str) for v in env.values())
    assert WorkerEnv.from_env(env) == worker_env
    # the token stays out of logs and reprs
    assert "per-machine-token" not in repr(worker_env)


def test_env_holds_only_the_workers_settings() -> None:
    """No store, no store credential, no gateway token: only the worker's own settings."""
    env = FULL.to_env()
    assert set(env) == set(VARS.values())
    assert not [k for k in env if k.startswith(("AWS_", "UPLODR_STORAGE_", "UPLODR_STORE"))]
    # from a process environment, nothing else is taken along
    gateway = {"HOME": "/root", "UPLODR_TOKENS": "gateway-secret", "AWS_SECRET_ACCESS_KEY": "s"}
    read = WorkerEnv.from_env({**env, **gateway})
    assert read == FULL and not set(read.to_env()) & set(gateway)


def test_for_machine_sets_token_and_lifetime_only() -> None:
    machine = FULL.for_machine("fresh", 99.0)
    assert (machine.token, machine.max_lifetime) == ("fresh", 99.0)
    assert replace(machine, token=FULL.token, max_lifetime=FULL.max_lifetime) == FULL


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("UPLODR_IDLE_TIMEOUT", "soon", "UPLODR_IDLE_TIMEOUT: not a number: 'soon'"),
        ("UPLODR_MAX_JOBS", "0", "UPLODR_MAX_JOBS must be a positive number, not 0"),
        ("UPLODR_LIMITS", '{"max_cats": 1}', "UPLODR_LIMITS: unknown limits: max_cats"),
        ("UPLODR_LIMITS", '{"max_side": 0}', "UPLODR_LIMITS: ImageLimits.max_side must be"),
    ],
)
def test_bad_values_name_their_variable(variable: str, value: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        WorkerEnv.from_env({variable: value})
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_command_line_overrides_the_environment() -> None:
    env = FULL.to_env()
    config = worker_config("127.0.0.1:1", env, {"max_lifetime": 5.0, "idle_timeout": None})
    assert config.max_lifetime == 5.0 and config.idle_timeout == FULL.idle_timeout
    assert config.token == "per-machine-token" and config.max_concurrent_jobs == 3


def test_worker_refuses_a_bad_variable_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "uplodr", "worker", "--grpc-addr", "127.0.0.1:1"],
        env={"UPLODR_LIMITS": "[]", "MALLOC_ARENA_MAX": "2", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "uplodr worker: bad configuration: UPLODR_LIMITS: expected a JSON object of limits"
    ]
