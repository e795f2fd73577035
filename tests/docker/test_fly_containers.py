"""The Fly path running exactly what Fly would run: the Fly API test server in container mode
(tests/support/fly_docker.py), each machine a container of the image built from the Dockerfile,
made from the create request (image, init.entrypoint/cmd, env, guest) at a private IPv6 address.

Shown here: the production Fly provider's machine is the real worker answering Ping at its
`private_ip`, with the guest's memory and CPUs as real limits and only its own env; `uplodr serve
--provider fly` converts a corpus photo end to end into S3 (Swift, reached over the machines'
network as Tigris is on Fly — a Fly machine does not share the gateway's disk); a full-resolution
24 MP photo under a 512 MB guest is OOM-killed by the kernel → 422 with the clear message; no
machine and no container is left on any path. Run with `pytest -s` for the create→Ping time.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pyvips

from tests.support.docker_engine import DockerEngine
from tests.support.docker_images import EngineImages
from tests.support.docker_worker import process_env
from tests.support.fly import FAST_BACKOFF, IMAGE, fly_config, fly_env
from tests.support.fly_api import FlyApiServer
from tests.support.fly_docker import FlyDockerMachines
from tests.support.gateway import GatewayProcess
from tests.support.made import mime_types, of_json
from tests.support.paths import corpus_file
from tests.support.swift import SwiftServer
from tests.support.tcp_relay import tcp_relay
from tests.support.waiting import wait_for
from uplodr.dispatch.worker_client import WorkerClient
from uplodr.errors import ProviderError
from uplodr.machines.base import MachineSpec
from uplodr.machines.fly import FlyProvider

GRPC_PORT = 50051
MiB = 1024 * 1024


@dataclass
class FlyOnDocker:
    fly: FlyApiServer
    machines: FlyDockerMachines


@pytest.fixture
def fly_on_docker(
    docker_engine: DockerEngine, docker_images: EngineImages
) -> Iterator[FlyOnDocker]:
    """The Fly API test server whose machines are containers of the built image; afterwards no
    machine, container or network of it is left."""
    with docker_engine.client() as client:
        with FlyDockerMachines(client, {IMAGE: docker_images.uplodr}) as machines:
            with FlyApiServer(grpc_port=GRPC_PORT, machines=machines, rate=0) as fly:
                yield FlyOnDocker(fly, machines)
                assert fly.spec_errors == []
            assert machines.containers() == []
        assert client.networks.list(names=[machines.network_name]) == []


async def test_a_fly_machine_is_the_real_worker_container_at_its_private_ipv6_address(
    fly_on_docker: FlyOnDocker,
) -> None:
    fly, machines = fly_on_docker.fly, fly_on_docker.machines
    env = {"UPLODR_WORKER_TOKEN": "machine-token"}
    provider = FlyProvider(fly_config(fly, regions=(), **FAST_BACKOFF))
    try:
        started = time.monotonic()
        machine = await provider.create(MachineSpec(env=env, tags={"job": "ping"}, memory_mb=512))
        await provider.wait_started(machine, timeout=60)
        client = WorkerClient(machine.address, "machine-token", 64 * MiB, 256 * 1024)
        try:
            await client.wait_ready(60)
            create_to_ping = time.monotonic() - started
        finally:
            await client.close()
        served = fly.machine(machine.id)
        assert served is not None
        (container_id,) = machines.containers()
        container = machines.client.containers.get(container_id)
        seen_env = await asyncio.to_thread(process_env, container)
        await provider.destroy(machine.id)
    finally:
        await provider.aclose()
    print(f"\ncreate → Ping of a Fly machine as a container: {create_to_ping:.2f} s")

    assert machine.address == f"[{served.private_ip}]:{GRPC_PORT}"
    assert served.private_ip.startswith("fdaa:0:")  # the 6PN-like network, IPv6 only for us
    config, host = container.attrs["Config"], container.attrs["HostConfig"]
    assert config["Entrypoint"] == ["uplodr"]
    assert config["Cmd"] == ["worker", "--grpc-addr", f"[::]:{GRPC_PORT}"]
    assert config["Image"] == machines.images[IMAGE]  # the registry name, mapped to the build
    assert host["Memory"] == host["MemorySwap"] == 512 * MiB
    assert host["NanoCpus"] == 2_000_000_000  # the default guest: 2 CPUs
    assert host["Binds"] in (None, [])  # nothing of the host's disk
    # the worker's environment: the machine's env and Fly's variables, nothing of this host's
    assert set(env) <= set(seen_env)
    assert {"FLY_MACHINE_ID", "FLY_APP_NAME", "FLY_PRIVATE_IP"} <= set(seen_env)
    host_only = set(os.environ) - set(seen_env)
    assert host_only and not host_only & set(seen_env)
    assert "FLY_API_TOKEN" not in seen_env and "UPLODR_TOKENS" not in seen_env
    assert machines.containers() == [] and fly.machines_alive == 0


async def test_an_image_fly_cannot_pull_is_refused_at_create(fly_on_docker: FlyOnDocker) -> None:
    fly = fly_on_docker.fly
    provider = FlyProvider(fly_config(fly, regions=(), image="registry.fly.io/nope:1"))
    try:
        with pytest.raises(ProviderError, match="failed to get manifest"):
            await provider.create(MachineSpec(env={}, tags={}))
    finally:
        await provider.aclose()
    assert fly.created == 0 and fly_on_docker.machines.containers() == []


# -- `uplodr serve --provider fly`, end to end -------------------------------------------------


@contextmanager
def fly_gateway(
    tmp_path: Path, swift: SwiftServer, on_docker: FlyOnDocker, *args: str
) -> Iterator[GatewayProcess]:
    """`uplodr serve --provider fly` as a real process; variants go to a fresh public bucket of
    Swift, which gateway and machines reach at this host's address on the machines' network."""
    bucket = f"fly-{uuid.uuid4().hex[:10]}"
    swift.create_bucket(bucket, public_read=True)
    with tcp_relay(on_docker.machines.gateway_ip, swift.ports["proxy"]) as port:
        s3 = swift.s3_env(AWS_ENDPOINT_URL_S3=f"http://[{on_docker.machines.gateway_ip}]:{port}")
        env = {**os.environ, **s3, **fly_env(on_docker.fly, regions="")}
        workdir = tmp_path / "gateway"
        workdir.mkdir()
        gateway = GatewayProcess(
            ["--provider", "fly", "--store", f"s3://{bucket}", "--public-url",
             swift.public_url(bucket), *args],
            env,
            workdir,
        )  # fmt: skip
        gateway.start()
        try:
            yield gateway
        finally:
            gateway.stop()


def post(gateway: GatewayProcess, photo: Path) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/images",
        params={"name": photo.name, "folder": "fly"},
        content=photo.read_bytes(),
        timeout=300,
    )


def nothing_left(on_docker: FlyOnDocker) -> None:
    wait_for(
        lambda: on_docker.fly.machines_alive == 0 and on_docker.machines.containers() == [],
        "no Fly machine and no container left",
    )


def test_serve_with_fly_converts_a_photo_on_a_machine_container_into_s3(
    tmp_path: Path, swift: SwiftServer, fly_on_docker: FlyOnDocker
) -> None:
    photo = corpus_file("book-beside-flowers.jpg")  # 12 MP
    with fly_gateway(tmp_path, swift, fly_on_docker) as gateway:
        response = post(gateway, photo)
        log = gateway.log_text()
    assert response.status_code == 200, (response.text, log)
    variants = response.json()["variants"]
    made = sorted([*mime_types(of_json(response.json())), "image/png"])  # the formats that won
    assert sorted(v["mime_type"] for v in variants) == made
    for variant in variants:
        served = httpx.get(variant["url"], timeout=30)  # anonymous read of the public bucket
        assert served.status_code == 200 and len(served.content) == variant["size_bytes"]
        image = pyvips.Image.new_from_buffer(served.content, "")
        assert (image.width, image.height) == (variant["width"], variant["height"])
        image.avg()  # decodes every pixel
    fly = fly_on_docker.fly
    assert fly.created == 1 and fly.destroyed["user"] == 1
    nothing_left(fly_on_docker)


def test_a_job_that_needs_more_memory_than_the_guest_is_a_clear_422(
    tmp_path: Path, swift: SwiftServer, fly_on_docker: FlyOnDocker
) -> None:
    """DESIGN.md measured a full-resolution 24 MP AVIF at 590-670 MB: a 512 MB guest's
    container is OOM-killed by the kernel, and Fly's exit event says so."""
    photo = corpus_file("craft-beer.jpg")  # 6000 x 4000
    preset = tmp_path / "full-resolution.json"
    preset.write_text(json.dumps({"max_long_side": 8000}))
    args = ("--machine-memory", "512M", "--preset", str(preset))
    with fly_gateway(tmp_path, swift, fly_on_docker, *args) as gateway:
        response = post(gateway, photo)
    assert response.status_code == 422, response.text
    message = response.json()["error"]
    # "out of memory (512 MB limit)" comes from the exit event's oom_killed, i.e. the engine's
    # State.OOMKilled of the machine's container
    assert "needs more memory than the worker has: out of memory (512 MB limit)" in message
    assert fly_on_docker.fly.created == 1
    nothing_left(fly_on_docker)
