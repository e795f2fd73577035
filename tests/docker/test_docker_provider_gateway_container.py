"""The gateway itself as a container of the image with the engine's socket mounted (as
docs/container.md shows): its provider reaches the engine (`uplodr doctor` in it says so), and a
local-folder store — a folder of the gateway's container, which the engine cannot mount into the
workers — is refused per job in one line instead of converting into a folder nobody serves."""

from __future__ import annotations

import time

import httpx

from tests.support.docker_engine import DockerEngine
from tests.support.docker_images import EngineImages
from tests.support.docker_machines import worker_containers
from tests.support.paths import corpus_file

DEADLINE_S = 60.0
TOKEN = "gateway-in-a-container"


def test_a_gateway_in_a_container_drives_the_engine_and_refuses_a_local_store(
    docker_engine: DockerEngine, docker_images: EngineImages
) -> None:
    socket = docker_engine.socket
    with docker_engine.client() as client:
        gateway = client.containers.run(
            docker_images.uplodr,
            ["serve"],
            environment={
                "UPLODR_TOKENS": TOKEN,
                "UPLODR_PROVIDER": "docker",
                "UPLODR_DOCKER_IMAGE": docker_images.uplodr,
            },
            volumes={str(socket): {"bind": "/var/run/docker.sock", "mode": "rw"}},
            group_add=[str(socket.stat().st_gid)],  # the image's user may use the socket
            detach=True,
        )
        try:
            doctor = gateway.exec_run(["uplodr", "doctor"])
            gateway.reload()
            address = gateway.attrs["NetworkSettings"]["IPAddress"]
            url = f"http://{address}:8080"
            deadline = time.monotonic() + DEADLINE_S
            while True:  # polling its health under a deadline
                try:
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, gateway.logs().decode()
                time.sleep(0.1)
            response = httpx.post(
                f"{url}/v1/images",
                params={"name": "photo.jpg"},
                content=corpus_file("Landscape_6.jpg").read_bytes(),
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=120,
            )
            left = worker_containers(docker_engine)
        finally:
            gateway.remove(force=True)
    assert isinstance(doctor.output, bytes)
    lines = doctor.output.decode().splitlines()
    assert lines[0] == "ok      provider docker: can start a machine", lines
    assert response.status_code == 502, response.text
    body = response.json()
    assert body["code"] == "provider_error"
    assert body["error"].startswith(
        "the Docker engine at unix:///var/run/docker.sock does not see this host's folders"
    )
    assert body["error"].endswith("use an s3:// store")
    assert left == []
