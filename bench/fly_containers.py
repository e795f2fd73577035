"""The Fly path on the simulator in container mode: what a Fly machine's life costs when each
machine is a container of the built image.

    uv run python -m bench.fly_containers [--runs 3]

It starts the tests' private Docker engine and gets uplodr's image as the tests do, then runs the
production Fly provider against the Fly API test server in container mode (tests/support/
fly_api.py + fly_docker.py: every request spec-validated, each machine a container made from the
create request at a private IPv6 address, no API rate limit, no simulated latency beyond 50 ms
created→starting) and measures, per photo (2 MP, 12 MP) and run:
- create→Ping: `POST …/machines` until the worker in the container answers its first Ping
  (create answer, container create + start, the worker's boot);
- the whole job: create → Ping → the photo streamed over gRPC and converted (variants written
  to the container's own /tmp: no storage network) → `DELETE …?force=true` returned.
Real Fly adds its own placement, image pull and VM boot to create→Ping: not measurable here.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tests.support.docker_engine import DockerEngine
from tests.support.docker_images import ensure_images
from tests.support.fly import FAST_BACKOFF, IMAGE, fly_config
from tests.support.fly_api import FlyApiServer
from tests.support.fly_docker import FlyDockerMachines
from tests.support.paths import CORPUS
from uplodr.dispatch.worker_client import UploadSource, WorkerClient
from uplodr.machines.base import MachineSpec
from uplodr.machines.fly import FlyProvider

PHOTOS = {"2 MP": "xmp_test-adobergb.jpg", "12 MP": "book-beside-flowers.jpg"}
MiB = 1024 * 1024


async def one_job(provider: FlyProvider, photo: Path) -> tuple[float, float]:
    """(create→Ping, whole job) in seconds."""
    token = secrets.token_urlsafe(16)
    env = {
        "UPLODR_WORKER_TOKEN": token,
    }
    started = time.monotonic()
    machine = await provider.create(MachineSpec(env=env, tags={"bench": "fly-containers"}))
    try:
        await provider.wait_started(machine, timeout=120)
        client = WorkerClient(machine.address, token, 64 * MiB, 256 * 1024)
        try:
            await client.wait_ready(120)
            pinged = time.monotonic() - started
            await client.stream([UploadSource(photo, photo.name, secrets.token_hex(4))], 600)
        finally:
            await client.close()
    finally:
        await provider.destroy(machine.id)
    return pinged, time.monotonic() - started


async def measure(fly: FlyApiServer, runs: int) -> dict[str, list[tuple[float, float]]]:
    provider = FlyProvider(fly_config(fly, regions=(), **FAST_BACKOFF))
    results: dict[str, list[tuple[float, float]]] = {label: [] for label in PHOTOS}
    try:
        for _ in range(runs):
            for label, name in PHOTOS.items():
                results[label].append(await one_job(provider, CORPUS / name))
    finally:
        await provider.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    console = Console()
    console.print(f"load average at start: {os.getloadavg()}")
    with DockerEngine() as engine:
        images = ensure_images(engine)
        with (
            engine.client() as client,
            FlyDockerMachines(client, {IMAGE: images.uplodr}) as machines,
            FlyApiServer(grpc_port=50051, machines=machines, rate=0) as fly,
        ):
            results = asyncio.run(measure(fly, args.runs))
            size = client.images.get(images.uplodr).attrs["Size"]
    table = Table(f"photo ({args.runs} runs each)", "create→Ping median (min)", "whole job median")
    for label, rows in results.items():
        pings = [p for p, _ in rows]
        jobs = [j for _, j in rows]
        table.add_row(
            label,
            f"{statistics.median(pings):.2f} s ({min(pings):.2f} s)",
            f"{statistics.median(jobs):.2f} s",
        )
    console.print(table)
    console.print(f"image {images.uplodr}: {size / 1e6:.0f} MB")
    console.print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
