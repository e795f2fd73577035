"""A worker's configuration as one typed object, and its environment-variable form.

A machine's command line is fixed (`uplodr worker --grpc-addr …`), so a gateway configures its
workers through their environment only. `WorkerEnv` is that configuration: the gateway builds
one, adds the per-machine token and lifetime, and hands `to_env()` to the provider; the worker
reads it back with `from_env()`. One object on both sides, so a setting cannot be written under
one name and read under another.

The environment holds only the worker's settings and its per-machine token — no store, no store
credential (`AWS_*`, `UPLODR_STORAGE_*`) and no gateway token: a worker sends its outputs back
to the gateway, which publishes them (docs/security.md), so a machine has nothing to leak that
outlives it. A shared pure
module: the gateway uses it without importing the worker or imaging.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, TypeVar

from uplodr.limits import DEFAULT_LIMITS, ImageLimits
from uplodr.preset import DEFAULT_PRESET, Preset

# Chunks between gateway and worker are far below this; it bounds the single-message Upload
# call, which carries a whole file (gRPC's default receive limit is 4 MiB).
DEFAULT_MSG_SIZE = 64 * 1024 * 1024
DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024

T = TypeVar("T")


@dataclass(frozen=True)
class WorkerEnv:
    """Everything a gateway tells a worker. Each field is one `UPLODR_*` variable (see `VARS`)."""

    preset: Preset = DEFAULT_PRESET
    limits: ImageLimits = DEFAULT_LIMITS
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    msg_size: int = DEFAULT_MSG_SIZE
    # Jobs (Stream calls) at once; more are refused with RESOURCE_EXHAUSTED.
    max_jobs: int = 1
    # The worker ends itself when nobody called it for this long: its gateway is gone.
    idle_timeout: float = 30.0
    # ... and after this long, whatever happens (a lost machine stops billing).
    max_lifetime: float = 20 * 60
    # A fresh bearer token per machine; None: the worker accepts any caller.
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("max_file_bytes", "msg_size", "max_jobs", "idle_timeout", "max_lifetime"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{VARS[name]} must be a positive number, not {value!r}")

    def for_machine(self, token: str, max_lifetime: float) -> WorkerEnv:
        """This configuration for one machine: its own token and lifetime."""
        return replace(self, token=token, max_lifetime=max_lifetime)

    def to_env(self) -> dict[str, str]:
        env = {
            VARS["preset"]: self.preset.to_json(),
            VARS["limits"]: json.dumps(asdict(self.limits), sort_keys=True),
            VARS["max_file_bytes"]: str(self.max_file_bytes),
            VARS["msg_size"]: str(self.msg_size),
            VARS["max_jobs"]: str(self.max_jobs),
            VARS["idle_timeout"]: repr(self.idle_timeout),
            VARS["max_lifetime"]: repr(self.max_lifetime),
        }
        if self.token is not None:
            env[VARS["token"]] = self.token
        return env

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WorkerEnv:
        """Read a worker's configuration; unset variables keep their defaults. Raises
        ValueError with one line naming the variable when a value is malformed."""
        values: dict[str, Any] = {}
        for name, parse in _PARSERS.items():
            text = env.get(VARS[name])
            if text is None or text == "":
                continue
            try:
                values[name] = parse(text)
            except (ValueError, TypeError, KeyError) as error:
                raise ValueError(f"{VARS[name]}: {_one_line(error)}") from None
        return cls(**values)


# The variable of each field.
VARS: dict[str, str] = {
    "preset": "UPLODR_PRESET",
    "limits": "UPLODR_LIMITS",
    "max_file_bytes": "UPLODR_MAX_FILE_BYTES",
    "msg_size": "UPLODR_MSG_SIZE",
    "max_jobs": "UPLODR_MAX_JOBS",
    "idle_timeout": "UPLODR_IDLE_TIMEOUT",
    "max_lifetime": "UPLODR_MAX_LIFETIME",
    "token": "UPLODR_WORKER_TOKEN",
}


def _limits(text: str) -> ImageLimits:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object of limits")
    unknown = set(data) - {f.name for f in fields(ImageLimits)}
    if unknown:
        raise ValueError(f"unknown limits: {', '.join(sorted(unknown))}")
    return ImageLimits(**data)


def _number(kind: Callable[[str], T]) -> Callable[[str], T]:
    def parse(text: str) -> T:
        try:
            return kind(text)
        except ValueError:
            raise ValueError(f"not a number: {text!r}") from None

    return parse


_PARSERS: dict[str, Callable[[str], Any]] = {
    "preset": Preset.from_json,
    "limits": _limits,
    "max_file_bytes": _number(int),
    "msg_size": _number(int),
    "max_jobs": _number(int),
    "idle_timeout": _number(float),
    "max_lifetime": _number(float),
    "token": str,
}


def _one_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
