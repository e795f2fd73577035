"""Kubernetes: create → first Ping of a worker pod against a local worker process and a Docker
container, and a burst on the pool over the Kubernetes provider.

    uv run python -m bench.kubernetes [--boots 5] [--small 32] [--containers]

- **create → Ping**, alternating so all see the same load: `LocalProvider` (a process),
  `KubernetesProvider` against the Kubernetes API test server (tests/support/k8s_api.py) whose
  pods are local `uplodr worker` processes (what the provider itself costs: create, the watch
  until the pod has an IP and runs, the first Ping, then delete with its watch until gone),
  and with `--containers` the same server in container mode (each pod a container of the built
  image on the tests' private engine) against `DockerProvider` on the same engine.
- **a burst** of `--small` uploads of the 2 MP photo at once through an in-process pool over the
  Kubernetes provider (pods as local processes; the store is a real Swift, as a pod cannot
  write the gateway's folders), with the pool (idle 30 s) and a machine per job (idle 0): wall
  seconds, pods created, machine-seconds ÷ conversion seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.container import provider_boot
from tests.support.docker_engine import DockerEngine
from tests.support.docker_images import ensure_images
from tests.support.fly_api import logged_worker_process
from tests.support.k8s_api import KubeApiServer
from tests.support.k8s_docker import KubeDockerPods
from tests.support.paths import CORPUS
from tests.support.procs import free_port
from uplodr.dispatch.dispatcher import Dispatcher, DispatchSettings
from uplodr.dispatch.pool import Pool, PoolSettings
from uplodr.dispatch.worker_client import UploadSource
from uplodr.machines.base import Provider
from uplodr.machines.docker import DockerConfig, DockerProvider
from uplodr.machines.kubernetes import KubernetesConfig, KubernetesProvider
from uplodr.machines.kubernetes_api import KubeApi
from uplodr.machines.local import LocalProvider
from uplodr.worker_env import WorkerEnv

SMALL = "xmp_test-adobergb.jpg"  # 2 MP
IMAGE = "registry.example.com/uplodr:bench"


def kubernetes(kube: KubeApiServer, grpc_port: int = 50051) -> KubernetesProvider:
    settings = KubernetesConfig(image=IMAGE, grpc_port=grpc_port)
    return KubernetesProvider(settings, KubeApi(kube.config(), kube.namespace))


async def boots(
    count: int, containers: bool, workdir: Path
) -> dict[str, list[tuple[float, float]]]:
    found: dict[str, list[tuple[float, float]]] = {}
    with contextlib.ExitStack() as stack:
        kube = stack.enter_context(
            KubeApiServer(process_factory=logged_worker_process(workdir / "pods"))
        )
        providers: dict[str, Provider] = {
            "local process": LocalProvider(workdir / "state"),
            "k8s pod (process)": kubernetes(kube, grpc_port=free_port()),
        }
        if containers:
            engine = stack.enter_context(_engine())
            images = ensure_images(engine)
            client = stack.enter_context(engine.client())
            pods = stack.enter_context(KubeDockerPods(client, {IMAGE: images.uplodr}))
            kube_docker = stack.enter_context(KubeApiServer(containers=pods))
            providers["k8s pod (container)"] = kubernetes(kube_docker)
            providers["docker container"] = DockerProvider(
                DockerConfig(image=images.uplodr, engine_env=engine.env())
            )
        try:
            for _ in range(count):
                for name, provider in providers.items():
                    found.setdefault(name, []).append(await provider_boot(provider))
        finally:
            for provider in providers.values():
                await provider.aclose()
    return found


@contextlib.contextmanager
def _engine() -> Iterator[DockerEngine]:
    engine = DockerEngine()
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


async def burst(count: int, idle: float, workdir: Path) -> str:
    """The pool over the Kubernetes provider; the workers' outputs are received and dropped
    (publishing is the gateway's, measured elsewhere)."""
    photo = CORPUS / SMALL
    slots_count = os.cpu_count() or 1
    with KubeApiServer(process_factory=logged_worker_process(workdir / "pods")) as kube:
        provider = kubernetes(kube, grpc_port=free_port())
        env = WorkerEnv(idle_timeout=30.0)
        pool = Pool(
            Dispatcher(provider, env, "bench-k8s", DispatchSettings()),
            PoolSettings(max=slots_count, idle=idle),
        )
        slots = asyncio.Semaphore(slots_count)  # the gateway's job slots

        async def one(i: int) -> float:
            async with slots:
                result = await pool.run([UploadSource(photo, photo.name, f"k{idle:g}-{i}")])
                return sum(r.timings.convert for r in result.responses)

        try:
            started = time.monotonic()
            outcomes = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
            wall = time.monotonic() - started
        finally:
            await pool.close()
            await pool.dispatcher.drain()
            await provider.aclose()
        converted = [o for o in outcomes if isinstance(o, float)]
        totals = pool.dispatcher.totals
        ratio = totals.machine_seconds / sum(converted) if converted else float("nan")
        mode = "pool (idle 30 s)" if idle else "a pod per job"
        return (
            f"{count} x 2 MP, {mode}: {wall:.2f} s wall, {kube.created} pods created, "
            f"machine-s / convert-s {ratio:.2f}, {count - len(converted)} failed"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kubernetes", description=__doc__)
    parser.add_argument("--boots", type=int, default=5, help="create → Ping runs per provider")
    parser.add_argument("--small", type=int, default=32, help="uploads of the 2 MP photo")
    parser.add_argument("--containers", action="store_true", help="also pods as containers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print(f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="uplodr-bench-k8s-") as folder:
        workdir = Path(folder)
        if args.boots:
            found = asyncio.run(boots(args.boots, args.containers, workdir / "boots"))
            for name, runs in found.items():
                create = statistics.median(b for b, _ in runs)
                destroy = statistics.median(d for _, d in runs)
                print(f"{name:<20} create → Ping {create:.2f} s, destroy {destroy:.2f} s (median)")
        if args.small:
            for idle in (30.0, 0.0):
                print(asyncio.run(burst(args.small, idle, workdir / f"burst-{idle:g}")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
