"""`uplodr serve`, the image's default command, answers /healthz and passes the image's own
HEALTHCHECK; without UPLODR_TOKENS it refuses to listen beyond loopback, in one line."""

from __future__ import annotations

import time

import httpx

from tests.support.docker_engine import DockerEngine
from tests.support.docker_images import EngineImages

DEADLINE_S = 60.0


def test_serve_answers_healthz_and_its_healthcheck_passes(
    docker_engine: DockerEngine, docker_images: EngineImages
) -> None:
    with docker_engine.client() as docker:
        test = docker.images.get(docker_images.uplodr).attrs["Config"]["Healthcheck"]["Test"]
        container = docker.containers.run(
            docker_images.uplodr,
            environment={"UPLODR_TOKENS": "test-token"},
            # the image's own check command, probed every 0.5 s instead of every 15 s
            healthcheck={"test": test, "interval": 500_000_000, "timeout": 5_000_000_000},
            detach=True,
        )
        try:
            deadline = time.monotonic() + DEADLINE_S
            health = "starting"
            while health != "healthy" and time.monotonic() < deadline:
                container.reload()
                assert container.status == "running", container.logs().decode()
                health = container.attrs["State"]["Health"]["Status"]
                time.sleep(0.1)  # polling the engine's health state under a deadline
            ip = container.attrs["NetworkSettings"]["IPAddress"]
            answer = httpx.get(f"http://{ip}:8080/healthz", timeout=10)
        finally:
            container.remove(force=True)
    assert health == "healthy"
    assert answer.status_code == 200 and answer.json() == {"status": "ok"}


def test_serve_without_tokens_refuses_to_listen_beyond_loopback(
    docker_engine: DockerEngine, docker_images: EngineImages
) -> None:
    with docker_engine.client() as docker:
        container = docker.containers.run(docker_images.uplodr, detach=True)
        try:
            status = container.wait(timeout=60)
            logs = container.logs().decode().strip()
        finally:
            container.remove(force=True)
    assert status["StatusCode"] != 0
    assert logs.splitlines()[-1].startswith("uplodr serve: refusing to listen on 0.0.0.0")
