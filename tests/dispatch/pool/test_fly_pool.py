"""A burst on a pool over the Fly provider and the spec-validating API simulator (real worker
processes): creations are paced by the provider's create rate, so the simulator's per-app limit
(1 create/s, burst 3) never answers a create with 429."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from tests.dispatch.conftest import make_dispatcher
from tests.support.fly import fly_config
from tests.support.fly_api import FlyApiServer, logged_worker_process
from tests.support.images import noise_png
from tests.support.procs import free_port
from uplodr.dispatch.pool import Pool, PoolSettings
from uplodr.dispatch.worker_client import UploadSource
from uplodr.machines.fly import CREATE_RATE, FlyProvider


async def test_a_burst_of_30_creates_paced_without_429(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    rng = random.Random(3)
    uploads = []
    for i in range(30):
        path = tmp_path / f"{i}.png"
        path.write_bytes(noise_png(24, 24, rng))
        uploads.append(UploadSource(path, f"{i}.png", "burst"))
    server = FlyApiServer(
        grpc_port=free_port(),
        rate=CREATE_RATE.per_second,
        burst=CREATE_RATE.burst,
        process_factory=logged_worker_process(tmp_path / "workers"),
    )
    with server:
        provider = FlyProvider(fly_config(server, regions=()))
        dispatcher = make_dispatcher(provider, store)  # type: ignore[arg-type]
        pool = Pool(dispatcher, PoolSettings(max=6, idle=30))
        slots = asyncio.Semaphore(6)  # the gateway's job slots

        async def one(source: UploadSource) -> str:
            async with slots:
                return (await pool.run([source])).machine_id

        try:
            machines = await asyncio.gather(*(one(u) for u in uploads))
        finally:
            await pool.close()
            await dispatcher.drain()
            await provider.aclose()
        assert len(machines) == 30 and 1 <= server.created <= 6
        assert server.statuses[("create", 429)] == 0, server.statuses
        assert server.spec_errors == [] and server.machines_alive == 0
