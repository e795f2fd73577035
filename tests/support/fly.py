"""The Fly provider pointed at the Fly API test server (tests/support/fly_api.py): as a user
configures it (environment variables) and as code builds it (FlyConfig)."""

from __future__ import annotations

from typing import Any

from uplodr.machines.fly import FlyConfig, FlyGuest

from .fly_api import FlyApiServer

IMAGE = "registry.fly.io/uplodr:test"


def fly_env(fly: FlyApiServer, regions: str = "ams,fra") -> dict[str, str]:
    """How a user configures `--provider fly` (only the API URL points at the test server)."""
    return {
        "FLY_API_TOKEN": fly.token,
        "UPLODR_FLY_APP": fly.app,
        "UPLODR_FLY_IMAGE": IMAGE,
        "UPLODR_FLY_API_URL": fly.url,
        "UPLODR_FLY_GRPC_PORT": str(fly.grpc_port),
        "UPLODR_FLY_REGIONS": regions,
        "UPLODR_FLY_RETRY_DEADLINE": "20",
    }


def fly_config(
    fly: FlyApiServer,
    regions: tuple[str, ...] = ("ams", "fra"),
    retry_deadline: float = 20.0,
    **overrides: Any,
) -> FlyConfig:
    """The provider's configuration for the test server (`overrides`: other FlyConfig fields)."""
    return FlyConfig(
        **{
            "token": fly.token,
            "app": fly.app,
            "image": IMAGE,
            "regions": regions,
            "guest": FlyGuest(),
            "api_url": fly.url,
            "grpc_port": fly.grpc_port,
            "retry_deadline": retry_deadline,
            **overrides,
        }
    )


# Backoff for tests: retries within tenths of a second, not seconds.
FAST_BACKOFF = {"backoff_initial": 0.05, "backoff_max": 0.5, "backoff_jitter": 0.1}
