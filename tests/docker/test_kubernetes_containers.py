"""The Kubernetes path running what a kubelet would run: the Kubernetes API test server in
container mode (tests/support/k8s_docker.py), each pod's container a container of the image built
from the Dockerfile, made from the pod spec (image, args, env, limits, securityContext, emptyDir)
on a pod network. Shown here: the production provider's pod is the real worker answering Ping at
its pod IP, with requests = limits as real limits, the restricted securityContext as real
container settings and only its own env; a full-resolution 24 MP photo in a 512 Mi pod is
OOM-killed by the kernel → 422 with the clear message; no pod and no container is left. Run with
`pytest -s` for the create→Ping time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.docker_engine import DockerEngine
from tests.support.docker_images import EngineImages
from tests.support.docker_worker import process_env
from tests.support.gateway import GatewayProcess
from tests.support.k8s_api import KubeApiServer
from tests.support.k8s_docker import KubeDockerPods
from tests.support.paths import corpus_file
from tests.support.swift import SwiftServer
from tests.support.tcp_relay import tcp_relay
from tests.support.waiting import wait_for
from uplodr.dispatch.worker_client import WorkerClient
from uplodr.machines.base import MachineSpec
from uplodr.machines.kubernetes import GRPC_PORT, KubernetesConfig, KubernetesProvider
from uplodr.machines.kubernetes_api import KubeApi

IMAGE = "registry.example.com/uplodr:test"
MiB = 1024 * 1024


@dataclass
class KubeOnDocker:
    kube: KubeApiServer
    pods: KubeDockerPods

    @property
    def gateway_ip(self) -> str:
        """This host's address on the pod network (the bridge's gateway)."""
        network = self.pods.client.networks.get(self.pods.network_name)
        return str(network.attrs["IPAM"]["Config"][0]["Gateway"])


@pytest.fixture
def kube_on_docker(
    docker_engine: DockerEngine, docker_images: EngineImages
) -> Iterator[KubeOnDocker]:
    with docker_engine.client() as client:
        with KubeDockerPods(client, {IMAGE: docker_images.uplodr}) as pods:
            with KubeApiServer(containers=pods) as kube:
                yield KubeOnDocker(kube, pods)
                assert kube.spec_errors == []
            assert pods.containers() == []
        assert client.networks.list(names=[pods.network_name]) == []


async def test_a_pod_is_the_real_worker_container_with_its_limits_and_no_privileges(
    kube_on_docker: KubeOnDocker,
) -> None:
    kube, pods = kube_on_docker.kube, kube_on_docker.pods
    env = {"UPLODR_STORES": json.dumps(["/tmp"]), "UPLODR_WORKER_TOKEN": "machine-token"}
    config = KubernetesConfig(image=IMAGE, memory_mb=512, cpus=1)
    provider = KubernetesProvider(config, KubeApi(kube.config(), kube.namespace))
    try:
        started = time.monotonic()
        machine = await provider.create(MachineSpec(env=env, tags={"job": "ping"}))
        await provider.wait_started(machine, timeout=60)
        client = WorkerClient(machine.address, "machine-token", 64 * MiB, 256 * 1024)
        try:
            await client.wait_ready(60)
            create_to_ping = time.monotonic() - started
        finally:
            await client.close()
        (container_id,) = pods.containers()
        container = pods.client.containers.get(container_id)
        seen_env = await asyncio.to_thread(process_env, container)
        await provider.destroy(machine.id)
    finally:
        await provider.aclose()
    print(f"\ncreate → Ping of a Kubernetes pod as a container: {create_to_ping:.2f} s")
    (pod_ip,) = (container.attrs["NetworkSettings"]["Networks"][pods.network_name]["IPAddress"],)
    assert machine.address == f"{pod_ip}:{GRPC_PORT}"
    config_seen, host = container.attrs["Config"], container.attrs["HostConfig"]
    assert config_seen["Entrypoint"] == ["uplodr"]  # the image's: the pod sets only args
    assert config_seen["Cmd"] == ["worker", "--grpc-addr", f"0.0.0.0:{GRPC_PORT}"]
    assert config_seen["User"] == "10001:10001"
    assert host["Memory"] == host["MemorySwap"] == 512 * MiB
    assert host["NanoCpus"] == 1_000_000_000
    assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert list(host["Tmpfs"]) == ["/tmp"] and f"size={512 * MiB}" in host["Tmpfs"]["/tmp"]
    assert host["Binds"] in (None, [])  # nothing of the host's disk
    assert set(env) <= set(seen_env) and "UPLODR_TOKENS" not in seen_env
    assert "KUBERNETES_SERVICE_HOST" not in seen_env  # no service links, no API access
    assert pods.containers() == [] and kube.processes_alive == 0


@contextlib.contextmanager
def kube_gateway(
    tmp_path: Path, swift: SwiftServer, on_docker: KubeOnDocker, *args: str
) -> Iterator[GatewayProcess]:
    """`uplodr serve --provider kubernetes` as a real process; variants go to Swift, which the
    gateway and the pods reach at this host's address on the pod network."""
    bucket = f"k8s-{uuid.uuid4().hex[:10]}"
    swift.create_bucket(bucket, public_read=True)
    kube = on_docker.kube
    with tcp_relay(on_docker.gateway_ip, swift.ports["proxy"]) as port:
        s3 = swift.s3_env(AWS_ENDPOINT_URL_S3=f"http://{on_docker.gateway_ip}:{port}")
        env = {
            **os.environ,
            **s3,
            "KUBECONFIG": str(kube.write_kubeconfig(tmp_path / "kubeconfig")),
            "UPLODR_K8S_IMAGE": IMAGE,
        }
        workdir = tmp_path / "gateway"
        workdir.mkdir()
        gateway = GatewayProcess(
            ["--provider", "kubernetes", "--store", f"s3://{bucket}", "--public-url",
             swift.public_url(bucket), *args],
            env,
            workdir,
        )  # fmt: skip
        gateway.start()
        try:
            yield gateway
        finally:
            gateway.stop()


def test_a_24mp_photo_in_a_512mi_pod_is_a_clear_422(
    tmp_path: Path, swift: SwiftServer, kube_on_docker: KubeOnDocker
) -> None:
    """DESIGN.md measured a full-resolution 24 MP AVIF at 590-670 MB: a 512 Mi pod's container
    is OOM-killed by the kernel, and its status says OOMKilled."""
    photo = corpus_file("craft-beer.jpg")  # 6000 x 4000
    preset = tmp_path / "full-resolution.json"
    preset.write_text(json.dumps({"max_long_side": 8000}))
    args = ("--machine-memory", "512M", "--preset", str(preset))
    with kube_gateway(tmp_path, swift, kube_on_docker, *args) as gateway:
        response = httpx.post(
            f"{gateway.url}/v1/images",
            params={"name": photo.name},
            content=photo.read_bytes(),
            timeout=300,
        )
    assert response.status_code == 422, response.text
    message = response.json()["error"]
    assert "needs more memory than the worker has: out of memory (512 MB limit)" in message
    assert kube_on_docker.kube.created == 1
    wait_for(
        lambda: kube_on_docker.kube.pods() == [] and kube_on_docker.pods.containers() == [],
        "no pod and no container left",
    )
