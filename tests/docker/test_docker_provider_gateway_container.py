"""The gateway itself as a container of the image with the engine's socket mounted, on a
user-defined network it shares with its workers (as docs/container.md shows): its provider
reaches the engine (`uplodr doctor` in it says so), and an upload converts into the gateway's own
local-folder store — the workers get no store and no bind mount, they send their outputs back."""

from __future__ import annotations

import time

import httpx

from tests.support.docker_engine import DockerEngine
from tests.support.docker_images import EngineImages
from tests.support.docker_machines import worker_containers
from tests.support.paths import corpus_file

DEADLINE_S = 60.0
TOKEN = "gateway-in-a-container"
NETWORK = "uplodr-gateway-test"


def test_a_gateway_in_a_container_drives_the_engine_into_its_own_local_store(
    docker_engine: DockerEngine, docker_images: EngineImages
) -> None:
    socket = docker_engine.socket
    with docker_engine.client() as client:
        network = client.networks.create(NETWORK, driver="bridge", internal=True)
        gateway = client.containers.run(
            docker_images.uplodr,
            ["serve"],
            environment={
                "UPLODR_TOKENS": TOKEN,
                "UPLODR_PROVIDER": "docker",
                "UPLODR_DOCKER_IMAGE": docker_images.uplodr,
                "UPLODR_DOCKER_NETWORK": NETWORK,
            },
            volumes={str(socket): {"bind": "/var/run/docker.sock", "mode": "rw"}},
            group_add=[str(socket.stat().st_gid)],  # the image's user may use the socket
            network=NETWORK,
            detach=True,
        )
        try:
            doctor = gateway.exec_run(["uplodr", "doctor"])
            gateway.reload()
            address = gateway.attrs["NetworkSettings"]["Networks"][NETWORK]["IPAddress"]
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
            # each variant is in the gateway's own folder, served by the gateway
            served = {
                v["url"]: httpx.get(v["url"].replace("http://127.0.0.1:8080", url), timeout=30)
                for v in (response.json().get("variants") or [])
            }
            gateway.stop(timeout=60)  # SIGTERM: it destroys its pooled workers as it goes
            left = worker_containers(docker_engine)
        finally:
            gateway.remove(force=True)
            for container in client.containers.list(all=True, filters={"network": NETWORK}):
                container.remove(force=True)  # only after a failure above
            network.remove()
    assert isinstance(doctor.output, bytes)
    lines = doctor.output.decode().splitlines()
    assert lines[0] == "ok      provider docker: can start a machine", lines
    assert response.status_code == 200, response.text
    assert served and all(r.status_code == 200 and r.content for r in served.values()), served
    assert left == []
