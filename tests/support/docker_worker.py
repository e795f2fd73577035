"""`uplodr worker` in a container of the test image, with a machine's real limits.

    with worker_container(client, images.uplodr, store=tmp_path / "store") as worker:
        client = WorkerClient(worker.address, worker.token, ...)   # gRPC from the host

Why these settings: they are what a worker machine gets (issue 9's Docker provider uses the same
shape): memory with memory-swap equal to it (no swap to hide an overflow), a CPU quota, a pids
limit, a read-only root filesystem with a tmpfs at /tmp for spooling, no new privileges, every
capability dropped, the image's gateway health check off (the gateway's Ping is a worker's
probe), and an environment of the worker's own settings only: no store, no credential (the
worker sends its outputs back on the call). The worker listens on every address of the
container; the host reaches it at the container's IP on the engine's bridge.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import docker
from docker.models.containers import Container

GRPC_PORT = 50051
IMAGE_UID = 10001  # the Dockerfile's `uplodr` user and group
LIMITS: dict[str, Any] = {
    "mem_limit": "512m",
    "memswap_limit": "512m",
    "nano_cpus": 2_000_000_000,
    "pids_limit": 256,
    "read_only": True,
    "tmpfs": {"/tmp": "rw,nosuid,nodev,size=512m,mode=1777"},
    "security_opt": ["no-new-privileges"],
    "cap_drop": ["ALL"],
    "healthcheck": {"test": ["NONE"]},
}


@dataclass
class ContainerWorker:
    container: Container
    address: str  # container IP:port, reachable from the host
    token: str
    env: dict[str, str]  # exactly what the container was given


def worker_env(token: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {"UPLODR_WORKER_TOKEN": token, **(extra or {})}


@contextlib.contextmanager
def worker_container(
    client: docker.DockerClient,
    image: str,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Iterator[ContainerWorker]:
    """A running worker container (removed on exit, whatever happened)."""
    token = secrets.token_urlsafe(16)
    given = worker_env(token, env)
    container = client.containers.run(
        image,
        ["worker", "--grpc-addr", f"0.0.0.0:{GRPC_PORT}"],
        environment=given,
        labels={"uplodr.test": "worker"},
        detach=True,
        **{**LIMITS, **overrides},
    )
    try:
        container.reload()
        ip = container.attrs["NetworkSettings"]["IPAddress"]
        yield ContainerWorker(container, f"{ip}:{GRPC_PORT}", token, given)
    finally:
        container.remove(force=True)


def process_env(container: Container, pid: int = 1) -> dict[str, str]:
    """The environment a process in the container actually has (its /proc/PID/environ)."""
    result = container.exec_run(["cat", f"/proc/{pid}/environ"])
    assert result.exit_code == 0 and isinstance(result.output, bytes), result.output
    pairs = (item.partition("=") for item in result.output.decode().split("\0") if item)
    return {key: value for key, _, value in pairs}
