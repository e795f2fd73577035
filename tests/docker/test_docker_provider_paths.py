"""`serve --provider docker` removes the job's container on the paths that are not a worker's
fault: a worker that never answers its first Ping (boot timeout) and a client that hangs up
during the conversion."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support.docker_engine import DockerEngine
from tests.support.docker_images import EngineImages
from tests.support.docker_machines import (
    alive,
    busy_container_process,
    docker_env,
    upload_photo,
    worker_containers,
)
from tests.support.docker_standin import standin_image
from tests.support.gateway import hang_up_after_upload, running_gateway
from tests.support.paths import corpus_file
from tests.support.waiting import wait_for


def test_a_worker_that_never_answers_is_removed_at_the_boot_deadline(
    docker_engine: DockerEngine, tmp_path: Path
) -> None:
    with docker_engine.client() as client:
        silent = standin_image(client)  # a container that runs, and listens to nobody
    env = docker_env(docker_engine, silent)
    with running_gateway(tmp_path / "gw", "--boot-timeout", "3s", env=env) as gateway:
        response = upload_photo(gateway.url)
        left = worker_containers(docker_engine)
    assert response.status_code == 503, response.text
    assert response.json() == {
        "error": "worker did not become ready within 3s",
        "code": "worker_unavailable",
    }
    assert left == []


def test_a_client_that_hangs_up_mid_conversion_gets_its_container_removed(
    docker_engine: DockerEngine, docker_images: EngineImages, tmp_path: Path
) -> None:
    photo = corpus_file("craft-beer.jpg").read_bytes()
    env = docker_env(docker_engine, docker_images.uplodr)
    with running_gateway(tmp_path / "gw", env=env) as gateway:
        with hang_up_after_upload(gateway.url, photo):
            _, worker = busy_container_process(docker_engine)
        # the client is gone: the job is cancelled, its container removed
        wait_for(lambda: worker_containers(docker_engine) == [], "the container to be removed")
        assert not alive(worker)
        assert httpx.get(f"{gateway.url}/healthz").status_code == 200
