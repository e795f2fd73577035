"""The contract suite runs once per harness in `HARNESSES` (local, Fly test server, memory,
Docker on the tests' private engine)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.machines.contract.harnesses import HARNESSES, Harness


@pytest.fixture(params=sorted(HARNESSES))
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    async with HARNESSES[request.param](request) as made:
        yield made
