"""The pool inside the gateway (memory provider, fake worker): `--pool-max 2` and 12 uploads at
once → at most 2 machines created, all answered, 0 machines after the idle window, and /metrics
shows what the pool costs (idle and boot seconds, size, busy, idle)."""

from __future__ import annotations

import asyncio
import random
import re
import time
from pathlib import Path

import httpx
import pytest

from tests.dispatch.pool.conftest import eventually
from tests.support.fake_worker import FakeWorker
from tests.support.images import noise_png
from uplodr.gateway.run import GatewayOptions, StartupError, open_gateway
from uplodr.machines.memory import MemoryProvider


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} is not exported"
    return float(found.group(1))


async def test_twelve_uploads_on_a_pool_of_two(
    provider: MemoryProvider, worker: FakeWorker, store: Path
) -> None:
    worker.behaviour.convert_seconds = 0.02
    options = GatewayOptions(stores=(str(store),), max_machines=2, pool_idle=0.3)
    async with open_gateway(options, provider) as gateway:
        transport = httpx.ASGITransport(app=gateway.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            images = [noise_png(32, 32, random.Random(time.monotonic_ns() + i)) for i in range(12)]
            responses = await asyncio.gather(
                *(
                    http.post("/v1/images", params={"name": f"n{i}.png"}, content=image)
                    for i, image in enumerate(images)
                )
            )
            assert [r.status_code for r in responses] == [200] * 12
            text = (await http.get("/metrics")).text
            assert 1 <= metric(text, "uplodr_machines_created_total") <= 2
            assert metric(text, "uplodr_pool_machines_busy") == 0
            assert metric(text, "uplodr_machine_boot_seconds_total") > 0
            await eventually(lambda: provider.alive == [], "0 machines after the idle window")
            text = (await http.get("/metrics")).text
            assert metric(text, "uplodr_pool_machines") == 0
            assert metric(text, "uplodr_machine_idle_seconds_total") >= 0.3
            shares = [r.json()["job"]["machine_seconds"] for r in responses]
            assert sum(shares) <= metric(text, "uplodr_machine_seconds_total")


async def test_a_pool_minimum_above_its_maximum_is_refused(
    provider: MemoryProvider, store: Path
) -> None:
    options = GatewayOptions(stores=(str(store),), max_machines=2, pool_min=3)
    with pytest.raises(StartupError, match="--pool-min 3 is above --pool-max 2"):
        async with open_gateway(options, provider):
            pass
    assert provider.closed
