"""What the Docker provider's tests look at in an engine: uplodr's worker containers, and how a
user points `uplodr serve`/`reap`/`machines ls` at the engine and image."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import httpx
import psutil

from tests.support.docker_engine import DockerEngine
from tests.support.docker_host import program
from tests.support.paths import corpus_file
from tests.support.waiting import wait_for


def docker_env(engine: DockerEngine, image: str | None = None) -> dict[str, str]:
    """How a user configures `--provider docker`: DOCKER_HOST and UPLODR_DOCKER_IMAGE."""
    env = {**engine.env(), "UPLODR_PROVIDER": "docker"}
    if image is not None:
        env["UPLODR_DOCKER_IMAGE"] = image
    return env


def worker_containers(engine: DockerEngine) -> list[dict[str, Any]]:
    """Every container of the engine that carries uplodr's marker label, in any state."""
    with engine.client() as client:
        found: list[dict[str, Any]] = client.api.containers(
            all=True, filters={"label": "uplodr=worker"}
        )
    return found


def uplodr(
    *args: str, env: Mapping[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`uplodr ARGS…` as a separate process, as a user runs it (exit status not checked)."""
    return subprocess.run(
        [sys.executable, "-m", "uplodr", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def upload_photo(gateway_url: str) -> httpx.Response:
    """POST a real corpus photo to a gateway, as a client would, and wait for its answer."""
    return httpx.post(
        f"{gateway_url}/v1/images",
        params={"name": "photo.jpg"},
        content=corpus_file("Landscape_6.jpg").read_bytes(),
        timeout=120,
    )


def stop_daemon(engine: DockerEngine) -> None:
    """Stop the engine's dockerd (its containers stop with it), keeping its state for
    `start_daemon`: an engine that goes away and comes back."""
    assert engine.process is not None
    engine.process.terminate()
    engine.process.wait(timeout=60)


def start_daemon(engine: DockerEngine) -> None:
    """Start the engine's dockerd again on the same socket, data root and bridge."""
    dockerd = program("dockerd")
    assert dockerd is not None
    engine._spawn(dockerd)
    engine._wait_ready()


def busy_container_process(engine: DockerEngine) -> tuple[str, psutil.Process]:
    """A running worker container and its worker process, once that has used real CPU time
    (it is converting)."""
    found: list[tuple[str, psutil.Process]] = []

    def converting() -> bool:
        for container in worker_containers(engine):
            if container["State"] != "running":
                continue
            with engine.client() as client:
                top = client.api.top(container["Id"], ps_args="-o pid")
            for (pid,) in top.get("Processes") or []:
                try:
                    proc = psutil.Process(int(pid))
                    if sum(proc.cpu_times()[:2]) > 1.5:
                        found.append((str(container["Id"]), proc))
                        return True
                except psutil.NoSuchProcess:
                    continue
        return False

    wait_for(converting, "a worker container to start converting")
    return found[0]


def alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
