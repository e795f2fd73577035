"""A worker's configuration as one typed object, and its environment-variable form.

A machine's command line is fixed (`uplodr worker --grpc-addr …`), so a gateway configures its
workers through their environment only. `WorkerEnv` is that configuration: the gateway builds
one, adds the per-machine token and lifetime, and hands `to_env()` to the provider; the worker
reads it back with `from_env()`. One object on both sides, so a setting cannot be written under
one name and read under another.

The environment holds only the worker's settings, its per-machine token and the variables its
stores read themselves (the S3 store's `AWS_*` and `UPLODR_STORAGE_*`) — never anything else
of the gateway's environment. A shared pure module: the gateway uses it without importing the
worker or imaging.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from uplodr.limits import DEFAULT_LIMITS, ImageLimits
from uplodr.preset import DEFAULT_PRESET, Preset

# Chunks between gateway and worker are far below this; it bounds the single-message Upload
# call, which carries a whole file (gRPC's default receive limit is 4 MiB).
DEFAULT_MSG_SIZE = 64 * 1024 * 1024
DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024
# The variables a worker's stores read from the environment themselves (endpoint, keys,
# region, deadline); `uplodr.storage.store_env` picks exactly these for a store.
STORE_ENV_PREFIXES = ("AWS_", "UPLODR_STORAGE_")

T = TypeVar("T")


@dataclass(frozen=True)
class WorkerEnv:
    """Everything a gateway tells a worker. Each field is one `UPLODR_*` variable (see `VARS`)."""

    stores: tuple[str, ...] = ()
    public_url: str | None = None
    key_mode: Literal["digest", "name"] = "digest"
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
    # Variables the stores read themselves (AWS_*, UPLODR_STORAGE_*), passed through as they are.
    store_env: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.key_mode not in ("digest", "name"):
            raise ValueError(f"key mode must be digest or name, not {self.key_mode!r}")
        for name in ("max_file_bytes", "msg_size", "max_jobs", "idle_timeout", "max_lifetime"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{VARS[name]} must be a positive number, not {value!r}")
        if stray := [k for k in self.store_env if not k.startswith(STORE_ENV_PREFIXES)]:
            raise ValueError(f"not a store setting: {', '.join(sorted(stray))}")

    def for_machine(self, token: str, max_lifetime: float) -> WorkerEnv:
        """This configuration for one machine: its own token and lifetime."""
        return replace(self, token=token, max_lifetime=max_lifetime)

    def local_folders(self) -> tuple[Path, ...]:
        """The stores that are folders on this host (a machine must see them at the same path)."""
        return tuple(
            Path(spec.removeprefix("file://"))
            for spec in self.stores
            if "://" not in spec or spec.startswith("file://")
        )

    def to_env(self) -> dict[str, str]:
        env = {
            VARS["stores"]: json.dumps(list(self.stores)),
            VARS["key_mode"]: self.key_mode,
            VARS["preset"]: self.preset.to_json(),
            VARS["limits"]: json.dumps(asdict(self.limits), sort_keys=True),
            VARS["max_file_bytes"]: str(self.max_file_bytes),
            VARS["msg_size"]: str(self.msg_size),
            VARS["max_jobs"]: str(self.max_jobs),
            VARS["idle_timeout"]: repr(self.idle_timeout),
            VARS["max_lifetime"]: repr(self.max_lifetime),
        }
        if self.public_url is not None:
            env[VARS["public_url"]] = self.public_url
        if self.token is not None:
            env[VARS["token"]] = self.token
        return {**self.store_env, **env}

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
        store_env = {k: v for k, v in env.items() if k.startswith(STORE_ENV_PREFIXES)}
        return cls(**values, store_env=store_env)


# The variable of each field.
VARS: dict[str, str] = {
    "stores": "UPLODR_STORES",
    "public_url": "UPLODR_PUBLIC_URL",
    "key_mode": "UPLODR_KEYS",
    "preset": "UPLODR_PRESET",
    "limits": "UPLODR_LIMITS",
    "max_file_bytes": "UPLODR_MAX_FILE_BYTES",
    "msg_size": "UPLODR_MSG_SIZE",
    "max_jobs": "UPLODR_MAX_JOBS",
    "idle_timeout": "UPLODR_IDLE_TIMEOUT",
    "max_lifetime": "UPLODR_MAX_LIFETIME",
    "token": "UPLODR_WORKER_TOKEN",
}


def _stores(text: str) -> tuple[str, ...]:
    stores = json.loads(text)
    if not isinstance(stores, list) or not all(isinstance(s, str) for s in stores):
        raise ValueError("expected a JSON list of store specs")
    return tuple(stores)


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
    "stores": _stores,
    "public_url": str,
    "key_mode": str,
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
