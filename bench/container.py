"""The container image: its size, boot-to-Ping of a worker container against a local worker
process, and a worker's memory inside a container for the 12 MP photo; then the same through the
providers: a machine of `--provider local` against one of `--provider docker` (create → Ping,
destroy), and whole jobs through `uplodr serve` on each.

    uv run python -m bench.container [--boots 5] [--jobs 3] [--photo book-beside-flowers.jpg]
                                     [--provider-boots 5] [--serve-jobs 3] [--only providers]

It starts the tests' private Docker engine (tests/support/docker_engine.py; as root, with
docker.io and debootstrap installed), gets the Debian base and uplodr's image exactly as the tests
do (from var/docker/cache when there; otherwise debootstrap and a build, which it times), then
in the same run, alternating:
- boot→Ping: a local `uplodr worker` process (Popen → first Ping answered) against a worker
  container with a machine's limits (tests/support/docker_worker.py: create + start → Ping);
- one job of the photo streamed over gRPC into each, and the worker's peak RSS (VmHWM of the
  container's PID 1) and the container's peak memory as its cgroup counts it (which includes the
  tmpfs the upload is spooled to).
- through the providers, as `uplodr serve` uses them: `LocalProvider.create` and
  `DockerProvider.create` (a container with the provider's limits, 1 GB) → `wait_started` →
  first Ping answered, then `destroy`; and jobs of the photo through a real `uplodr serve
  --provider local` and `--provider docker` (the timings of its JSON answer: create, boot,
  convert, destroy, total).
The allocator comparison (glibc arenas, jemalloc) is `python -m bench.worker_memory`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from tests.support.docker_engine import DockerEngine
from tests.support.docker_images import EngineImages, ensure_images
from tests.support.docker_machines import docker_env
from tests.support.docker_worker import worker_container
from tests.support.gateway import running_gateway
from tests.support.paths import CORPUS
from tests.support.procs import free_port
from uplodr.dispatch.worker_client import UploadSource, WorkerClient
from uplodr.machines.base import MachineSpec, Provider
from uplodr.machines.docker import DockerConfig, DockerProvider
from uplodr.machines.local import LocalProvider
from uplodr.worker_env import WorkerEnv

MB = 1e6
MiB = 1024 * 1024


def _client(address: str, token: str) -> WorkerClient:
    return WorkerClient(address, token, 64 * MiB, 256 * 1024)


async def _ping_then_job(
    address: str, token: str, photo: Path | None, started: float
) -> tuple[float, float]:
    """Seconds from `started` to the first Ping answered, then of one job (0 without a photo)."""
    client = _client(address, token)
    try:
        await client.wait_ready(120)
        booted = time.monotonic()
        if photo is not None:
            await client.stream([UploadSource(photo, photo.name, secrets.token_hex(4))], 600)
        return booted - started, time.monotonic() - booted if photo else 0.0
    finally:
        await client.close()


def local_worker(store: Path, photo: Path | None) -> tuple[float, float, float]:
    """(boot→Ping, job seconds, peak RSS MB) of a local worker process."""
    token = secrets.token_urlsafe(16)
    address = f"127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "uplodr", "worker", "--grpc-addr", address]
    command += ["--store", str(store), "--public-url", "http://bench.invalid/{key}"]
    # the allocator settings of the image (and of the local provider): without MALLOC_ARENA_MAX
    # the worker re-executes itself once, which would double its start-up
    env = {**os.environ, "UPLODR_WORKER_TOKEN": token}
    env |= {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "131072"}
    started = time.monotonic()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        boot, job = asyncio.run(_ping_then_job(address, token, photo, started))
        status = Path(f"/proc/{process.pid}/status").read_text()
        peak = next(int(line.split()[1]) for line in status.splitlines() if "VmHWM" in line)
        return boot, job, peak / 1024
    finally:
        process.terminate()
        process.wait(timeout=60)


def container_worker(
    engine: DockerEngine, image: str, store: Path, photo: Path | None
) -> tuple[float, float, float, float]:
    """(create+start → Ping, job seconds, PID 1 peak RSS MB, cgroup peak MB) of a container."""
    with engine.client() as docker:
        started = time.monotonic()
        with worker_container(docker, image) as worker:
            boot, job = asyncio.run(_ping_then_job(worker.address, worker.token, photo, started))
            status = worker.container.exec_run(["cat", "/proc/1/status"]).output
            assert isinstance(status, bytes)
            line = next(x for x in status.decode().splitlines() if x.startswith("VmHWM"))
            stats = worker.container.stats(stream=False)
            assert isinstance(stats, dict)
            cgroup_peak = stats["memory_stats"].get("max_usage", 0) / MiB
            return boot, job, int(line.split()[1]) / 1024, cgroup_peak


async def provider_boot(provider: Provider) -> tuple[float, float]:
    """(create → first Ping answered, destroy) seconds of one machine of `provider`."""
    token = secrets.token_urlsafe(16)
    env = WorkerEnv()
    spec = MachineSpec(env=env.for_machine(token, 600.0).to_env(), tags={"bench": "container"})
    started = time.monotonic()
    machine = await provider.create(spec)
    try:
        await provider.wait_started(machine, 120)
        client = _client(machine.address, token)
        try:
            await client.wait_ready(120)
        finally:
            await client.close()
        boot = time.monotonic() - started
    finally:
        destroying = time.monotonic()
        await provider.destroy(machine.id)
    return boot, time.monotonic() - destroying


async def provider_boots(
    engine: DockerEngine, image: str, store: Path, state: Path, count: int
) -> dict[str, list[tuple[float, float]]]:
    local = LocalProvider(state)
    docker = DockerProvider(DockerConfig(image=image, engine_env=engine.env()))
    found: dict[str, list[tuple[float, float]]] = {"local": [], "docker": []}
    try:
        for _ in range(count):  # alternating, so both see the same load
            found["local"].append(await provider_boot(local))
            found["docker"].append(await provider_boot(docker))
    finally:
        await local.aclose()
        await docker.aclose()
    return found


def serve_jobs(
    engine: DockerEngine, images: EngineImages, photo: Path, root: Path, count: int
) -> dict[str, list[dict[str, float]]]:
    """The timings of `count` jobs of `photo` through `uplodr serve` on each provider."""
    found: dict[str, list[dict[str, float]]] = {}
    for name, env in (
        ("local", {"UPLODR_PROVIDER": "local"}),
        ("docker", docker_env(engine, images.uplodr)),
    ):
        with running_gateway(root / name, env=env) as gateway:
            timings = []
            for _ in range(count):
                response = httpx.post(
                    f"{gateway.url}/v1/images",
                    params={"name": photo.name, "folder": secrets.token_hex(4)},
                    content=photo.read_bytes(),
                    timeout=600,
                )
                response.raise_for_status()
                timings.append(response.json()["timings"])
            found[name] = timings
    return found


def _median(values: list[float], fmt: Callable[[float], str]) -> str:
    return fmt(statistics.median(values)) if values else "-"


def main(
    boots: int,
    jobs: int,
    photo_name: str,
    provider_boots_count: int,
    serve_jobs_count: int,
    only: str | None,
) -> None:
    console = Console(width=140)
    photo = CORPUS / photo_name
    console.print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    with DockerEngine() as engine, tempfile.TemporaryDirectory(prefix="bench-ct-") as tmp:
        images = ensure_images(engine)
        how = ", ".join(
            f"{k}: {v} ({images.seconds.get(k, 0):.0f} s)" for k, v in images.how.items()
        )
        console.print(f"images: {how}")
        if "build" in images.seconds:
            console.print(f"image build (Dockerfile, uncached): {images.seconds['build']:.0f} s")
        with engine.client() as docker:
            image = docker.images.get(images.uplodr).attrs
            base = docker.images.get(images.base).attrs
        console.print(
            f"image size: {image['Size'] / MB:.0f} MB (base {base['Size'] / MB:.0f} MB "
            f"+ uplodr {(image['Size'] - base['Size']) / MB:.0f} MB)"
        )
        store = Path(tmp) / "store"
        store.mkdir(parents=True, exist_ok=True)
        if only in (None, "workers"):
            workers(console, engine, images.uplodr, store, photo, boots, jobs)
        if only in (None, "providers"):
            state = Path(tmp) / "state"
            booted = asyncio.run(
                provider_boots(engine, images.uplodr, store, state, provider_boots_count)
            )
            console.print(f"load average {os.getloadavg()[0]:.2f} before the serve jobs")
            served = serve_jobs(engine, images, photo, Path(tmp) / "serve", serve_jobs_count)
            providers_table(console, booted, served, photo_name)
    console.print(f"load average {os.getloadavg()[0]:.2f} at the end")


def workers(
    console: Console,
    engine: DockerEngine,
    image: str,
    store: Path,
    photo: Path,
    boots: int,
    jobs: int,
) -> None:
    local_boot: list[float] = []
    container_boot: list[float] = []
    for _ in range(boots):
        local_boot.append(local_worker(store, None)[0])
        container_boot.append(container_worker(engine, image, store, None)[0])
    local_jobs, contained_jobs = [], []
    for _ in range(jobs):
        local_jobs.append(local_worker(store, photo))
        contained_jobs.append(container_worker(engine, image, store, photo))
    table = Table(
        title=f"worker: local process vs container (512 MB, 2 CPUs); medians of {boots} boots "
        f"and of {jobs} jobs of {photo.name}"
    )
    for column in ("", "boot→Ping median", "boot→Ping min", "job s", "peak RSS MB"):
        table.add_column(column, justify="right")
    table.add_column("container cgroup peak MB", justify="right")
    table.add_row(
        "local process",
        _median(local_boot, lambda v: f"{v:.2f} s"),
        f"{min(local_boot):.2f} s",
        f"{statistics.median(j[1] for j in local_jobs):.2f}",
        f"{statistics.median(j[2] for j in local_jobs):.0f}",
        "-",
    )
    table.add_row(
        "container",
        _median(container_boot, lambda v: f"{v:.2f} s"),
        f"{min(container_boot):.2f} s",
        f"{statistics.median(j[1] for j in contained_jobs):.2f}",
        f"{statistics.median(j[2] for j in contained_jobs):.0f}",
        f"{statistics.median(j[3] for j in contained_jobs):.0f}",
    )
    console.print(table)
    console.print(
        "boot→Ping each: local "
        + " ".join(f"{v:.2f}" for v in local_boot)
        + "; container "
        + " ".join(f"{v:.2f}" for v in container_boot)
    )


def providers_table(
    console: Console,
    booted: dict[str, list[tuple[float, float]]],
    served: dict[str, list[dict[str, float]]],
    photo_name: str,
) -> None:
    count = len(next(iter(booted.values())))
    jobs = len(next(iter(served.values())))
    table = Table(
        title=f"providers: medians of {count} machines (create → Ping, destroy) and of {jobs} "
        f"jobs of {photo_name} through uplodr serve (its answer's timings, s)"
    )
    columns = ("create→Ping", "destroy", "job total", "create", "boot", "convert", "job destroy")
    table.add_column("provider")
    for column in columns:
        table.add_column(column, justify="right")
    for name, machines in booted.items():
        timings = served[name]

        def median(key: str, timings: list[dict[str, float]] = timings) -> str:
            return f"{statistics.median(t[key] for t in timings):.2f}"

        table.add_row(
            name,
            f"{statistics.median(b for b, _ in machines):.2f}",
            f"{statistics.median(d for _, d in machines):.2f}",
            median("total"),
            median("create"),
            median("boot"),
            median("convert"),
            median("destroy"),
        )
    console.print(table)
    for name, machines in booted.items():
        console.print(f"{name} create→Ping each: " + " ".join(f"{b:.2f}" for b, _ in machines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boots", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--photo", default="book-beside-flowers.jpg")
    parser.add_argument("--provider-boots", type=int, default=5)
    parser.add_argument("--serve-jobs", type=int, default=3)
    parser.add_argument("--only", choices=("workers", "providers"))
    args = parser.parse_args()
    main(args.boots, args.jobs, args.photo, args.provider_boots, args.serve_jobs, args.only)
