"""What the tests of issue 16 look for: a secret where a worker could read it, and a job's
variants published and readable (tests/e2e/test_no_standing_secret.py, tests/docker)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from tests.support.made import of_json
from tests.support.swift import ACCESS_KEY, SECRET_KEY, SwiftServer

GATEWAY_TOKEN = "gateway-token-7d1e0c"
# A key no job writes: what a taken-over worker would try to overwrite.
FOREIGN_KEY = "someone-else/photo.webp"


def secrets_in(env: Mapping[str, str], fly_token: str = "") -> list[str]:
    """The names of variables that hold a secret a worker must not have (or `[]`)."""
    values = {ACCESS_KEY, SECRET_KEY, GATEWAY_TOKEN, fly_token} - {""}
    return sorted(
        name
        for name, value in env.items()
        if name.startswith(("AWS_", "UPLODR_STORAGE_", "UPLODR_STORE", "UPLODR_TOKENS"))
        or name == "FLY_API_TOKEN"
        or any(secret in value for secret in values)
    )


def check_published(swift: SwiftServer, bucket: str, answer: dict[str, Any]) -> None:
    """Every variant readable anonymously with its size; the manifest beside them."""
    assert len(answer["variants"]) == len(of_json(answer)) + 1  # the formats that won, a thumbnail
    for variant in answer["variants"]:
        got = httpx.get(variant["url"], timeout=30)
        assert got.status_code == 200 and len(got.content) == variant["size_bytes"]
        assert got.headers["content-type"] == variant["mime_type"]
    keys = swift.list_keys(bucket)
    # every variant of the answer, and its manifest beside them: nothing more
    assert sum(k.endswith(".json") for k in keys) == 1
    assert len(keys) == len(answer["variants"]) + 1
    assert FOREIGN_KEY not in keys
