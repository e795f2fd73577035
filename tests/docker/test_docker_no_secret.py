"""Issue 16, points 1 and 3 on the Docker provider: `uplodr serve --provider docker` with an S3
(Swift) store, gateway tokens set and the pool on. During a job and while the container idles
in the pool, its config (`docker inspect`) holds no store credential and no gateway token;
every variant is published and readable; and the worker has no way to write anywhere: no
credential, and a network (`uplodr-workers`, internal) from which neither a container on the
engine's default bridge nor the internet answers — while the gateway still reaches the worker.
The control: another container on the default bridge does reach that stranger.

What the worker still reaches is this host's own addresses (a service listening on 0.0.0.0):
dockerd gives an internal network's containers the host as their default gateway, and only a
firewall rule on the host closes that (docs/security.md says which); the test records it, so
a change either way is seen."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.support.docker_engine import DockerEngine
from tests.support.docker_images import EngineImages
from tests.support.docker_machines import docker_env, worker_containers
from tests.support.gateway import running_gateway
from tests.support.no_secret import GATEWAY_TOKEN, check_published, secrets_in
from tests.support.paths import corpus_file
from tests.support.swift import SwiftServer
from tests.support.waiting import wait_for
from uplodr.machines.docker import WORKER_NETWORK

STRANGER_PORT = 8000
# Run inside a container: try a TCP connection to each "host:port" argument, print what happened.
CONNECT = """
import json, socket, sys
seen = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        seen[target] = "connected"
    except OSError as error:
        seen[target] = type(error).__name__ + ": " + str(error)
print(json.dumps(seen))
"""


def tries(container: Any, *targets: str) -> dict[str, str]:
    """What `container` gets when it connects to each target."""
    result = container.exec_run(["python", "-c", CONNECT, *targets])
    assert result.exit_code == 0, result.output
    seen: dict[str, str] = json.loads(result.output.decode().strip().splitlines()[-1])
    return seen


@contextlib.contextmanager
def host_service(address: str) -> Iterator[str]:
    """A TCP service on this host at `address` (the engine's bridge): `host:port`."""
    server = socket.create_server((address, 0))
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                server.accept()[0].close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"{address}:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        server.close()


def test_a_docker_worker_holds_no_secret_and_reaches_nothing_but_its_gateway(
    docker_engine: DockerEngine, docker_images: EngineImages, swift: SwiftServer, tmp_path: Path
) -> None:
    bucket = f"docker-nosecret-{os.urandom(4).hex()}"
    swift.create_bucket(bucket, public_read=True)
    env = {
        **docker_env(docker_engine, docker_images.uplodr),
        **swift.s3_env(),
        "UPLODR_TOKENS": GATEWAY_TOKEN,
        "UPLODR_POOL_IDLE": "120",
    }
    args = ("--store", f"s3://{bucket}", "--public-url", swift.public_url(bucket))
    photo = corpus_file("book-beside-flowers.jpg")
    with (
        docker_engine.client() as client,
        host_service(docker_engine.host_ip) as service,
    ):
        # a container uplodr did not make, on the engine's default bridge
        stranger = client.containers.run(
            docker_images.uplodr,
            ["-m", "http.server", str(STRANGER_PORT)],
            entrypoint=["python"],
            detach=True,
            labels={"uplodr.test": "stranger"},
        )
        try:
            stranger.reload()
            stranger_at = f"{stranger.attrs['NetworkSettings']['IPAddress']}:{STRANGER_PORT}"
            wait_for(
                lambda: tries(stranger, stranger_at)[stranger_at] == "connected",
                "the stranger's service",
            )
            with running_gateway(tmp_path / "gw", *args, env=env) as gateway:
                result: dict[str, httpx.Response] = {}

                def post() -> None:
                    result["r"] = httpx.post(
                        f"{gateway.url}/v1/images",
                        params={"name": photo.name, "folder": "docker"},
                        headers={"Authorization": f"Bearer {GATEWAY_TOKEN}"},
                        content=photo.read_bytes(),
                        timeout=300,
                    )

                upload = threading.Thread(target=post)
                upload.start()
                wait_for(
                    lambda: any(c["State"] == "running" for c in worker_containers(docker_engine)),
                    "the job's container to run",
                )
                (running,) = worker_containers(docker_engine)
                during = client.api.inspect_container(running["Id"])
                upload.join(timeout=300)
                response = result["r"]
                assert response.status_code == 200, response.text
                (idle_container,) = worker_containers(docker_engine)  # kept by the pool
                assert idle_container["Id"] == running["Id"]
                idle = client.api.inspect_container(running["Id"])
                worker = client.containers.get(running["Id"])
                from_worker = tries(worker, stranger_at, "8.8.8.8:53", service)
                # the control: another container on the default bridge, as the worker tried
                output = client.containers.run(
                    docker_images.uplodr,
                    ["-c", CONNECT, stranger_at],
                    entrypoint=["python"],
                    remove=True,
                    labels={"uplodr.test": "neighbour"},
                )
                from_neighbour = json.loads(output.decode().strip().splitlines()[-1])
                network = client.api.inspect_network(WORKER_NETWORK)
        finally:
            stranger.remove(force=True)

    for inspected in (during, idle):
        variables = dict(item.split("=", 1) for item in inspected["Config"]["Env"])
        assert variables["UPLODR_WORKER_TOKEN"]  # the per-machine token stays
        assert secrets_in(variables) == [], variables
        assert GATEWAY_TOKEN not in json.dumps(inspected)
        assert not inspected["HostConfig"]["Binds"]  # no store folder either
        assert list(inspected["NetworkSettings"]["Networks"]) == [WORKER_NETWORK]
    check_published(swift, bucket, response.json())

    # the network: internal, containers isolated from each other
    assert network["Internal"] is True
    assert network["Options"]["com.docker.network.bridge.enable_icc"] == "false"
    # the worker reaches neither the stranger nor the internet ...
    assert from_worker[stranger_at] != "connected" and from_worker["8.8.8.8:53"] != "connected"
    # ... which a container on the default bridge does reach
    assert from_neighbour[stranger_at] == "connected"
    # the host's own addresses: reachable without a host firewall rule (docs/security.md)
    assert from_worker[service] == "connected"
