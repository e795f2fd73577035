"""`uplodr serve --provider kubernetes` as a user runs it (KUBECONFIG, --k8s-*), against the
Kubernetes API test server (tests/support/k8s_api.py) whose pods are real `uplodr worker`
processes, storing to Swift (S3): a remote provider's workers cannot write a local folder."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.lifecycle.conftest import IDLE_TIMEOUT, cli, wait_until
from tests.support.fly_api import logged_worker_process, standin_process
from tests.support.gateway import GatewayProcess
from tests.support.k8s_api import KubeApiServer
from tests.support.made import of_json
from tests.support.paths import corpus_file
from tests.support.procs import free_port
from tests.support.swift import SwiftServer
from uplodr.machines.base import MARKER_TAG, MARKER_VALUE

IMAGE = "registry.example/uplodr:test"


@pytest.fixture
def kube(tmp_path: Path, mark: str) -> Iterator[KubeApiServer]:
    server = KubeApiServer(images={IMAGE}, process_factory=logged_worker_process(tmp_path / "pods"))
    with server:
        yield server
        assert server.spec_errors == []
    assert server.processes_alive == 0


@contextlib.contextmanager
def kube_gateway(
    tmp_path: Path,
    swift: SwiftServer,
    bucket: str,
    kube: KubeApiServer,
    image: str = IMAGE,
    **extra_env: str,
) -> Iterator[GatewayProcess]:
    env = {
        **os.environ,
        **swift.s3_env(),
        **extra_env,
        "KUBECONFIG": str(kube.write_kubeconfig(tmp_path / "kubeconfig")),
        "UPLODR_K8S_IMAGE": image,
        "UPLODR_K8S_GRPC_PORT": str(free_port()),
    }
    workdir = tmp_path / "gateway"
    workdir.mkdir()
    gateway = GatewayProcess(
        [
            "--provider",
            "kubernetes",
            "--store",
            f"s3://{bucket}",
            "--public-url",
            swift.public_url(bucket),
            "--worker-idle-timeout",
            f"{IDLE_TIMEOUT:g}s",
        ],
        env,
        workdir,
    )
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop()


def post(gateway: GatewayProcess, photo: Path) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/images",
        params={"name": photo.name},
        content=photo.read_bytes(),
        timeout=120,
    )


def test_serve_converts_a_photo_on_a_pod_into_s3(
    tmp_path: Path, swift: SwiftServer, bucket: str, kube: KubeApiServer
) -> None:
    photo = corpus_file("book-beside-flowers.jpg")  # 12 MP
    with kube_gateway(tmp_path, swift, bucket, kube) as gateway:
        response = post(gateway, photo)
        log = gateway.log_text()
        assert response.status_code == 200, (response.text, log)
        wait_until(lambda: kube.pods() == [], "the job's pod to be deleted")
    variants = response.json()["variants"]
    assert len(variants) == len(of_json(response.json())) + 1  # the formats that won, a thumbnail
    for variant in variants:
        served = httpx.get(variant["url"], timeout=30)  # anonymous read of the public bucket
        assert served.status_code == 200 and len(served.content) == variant["size_bytes"]
    assert kube.created == 1 and kube.deleted["user"] == 1
    assert kube.calls["watch"] >= 1  # readiness was watched


def test_an_image_the_cluster_cannot_pull_is_a_502_naming_it(
    tmp_path: Path, swift: SwiftServer, bucket: str, kube: KubeApiServer
) -> None:
    missing = "registry.example/uplodr:no-such-tag"
    with kube_gateway(tmp_path, swift, bucket, kube, image=missing) as gateway:
        response = post(gateway, corpus_file("book-beside-flowers.jpg"))
        wait_until(lambda: kube.pods() == [], "the pod to be deleted")
    assert response.status_code == 502, response.text
    body = response.json()
    assert body["code"] == "provider_error"
    assert "cannot pull its image" in body["error"] and missing in body["error"]
    assert "\n" not in body["error"]


def test_the_api_server_stopped_mid_job_is_a_503_and_no_pod_is_left(
    tmp_path: Path, swift: SwiftServer, bucket: str, kube: KubeApiServer
) -> None:
    kube.start_latency = 600.0  # the pod is made, then stays Pending: the job waits on its watch
    with kube_gateway(tmp_path, swift, bucket, kube) as gateway:
        result: dict[str, httpx.Response] = {}
        photo = corpus_file("book-beside-flowers.jpg")
        upload = threading.Thread(target=lambda: result.update(response=post(gateway, photo)))
        upload.start()
        wait_until(lambda: len(kube.pods()) == 1, "the job's pod", 30)
        kube.stop_api()
        # the job failed and the lease retries deleting its pod: the API comes back (on the
        # same port) and the retried delete gets through
        wait_until(lambda: "WARNING stamina" in gateway.log_text(), "a retried delete", 30)
        kube.start_api()
        upload.join(timeout=60)
        wait_until(lambda: kube.pods() == [], "the pod to be deleted once the API is back", 60)
    response = result["response"]
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["code"] == "worker_unavailable"
    assert f"Kubernetes API at {kube.url} is unreachable" in body["error"]
    assert "\n" not in body["error"]


def test_reap_and_ls_by_label_from_a_separate_process(tmp_path: Path, mark: str) -> None:
    """`uplodr machines ls` and `uplodr reap --provider kubernetes` see only uplodr's pods (the
    marker label) and reap only those past their deadline, as a cron job in the cluster would."""
    with KubeApiServer(process_factory=standin_process) as kube:
        env = {**os.environ, "KUBECONFIG": str(kube.write_kubeconfig(tmp_path / "kubeconfig"))}
        now = int(time.time())
        marker = {MARKER_TAG: MARKER_VALUE, "gateway": "dead-gw", "job": "j"}

        def pod(name: str, labels: dict[str, str]) -> str:
            container = {"name": "worker", "image": IMAGE}
            kube.add_pod(
                kube.namespace,
                {"metadata": {"name": name, "labels": labels}, "spec": {"containers": [container]}},
            )
            return name

        expired = pod("uplodr-expired", {**marker, "deadline": str(now - 10)})
        fresh = pod("uplodr-fresh", {**marker, "deadline": str(now + 600)})
        pod("database", {"role": "database", "deadline": str(now - 10)})
        pod("imposter", {MARKER_TAG: "something-else", "deadline": str(now - 10)})

        listed = json.loads(cli("machines", "ls", "--provider", "kubernetes", "--json", env=env))
        assert sorted(m["id"] for m in listed) == sorted([expired, fresh])
        assert "1 stale, 1 destroyed, 0 failed" in cli("reap", "--provider", "kubernetes", env=env)
        left = {p["metadata"]["name"] for p in kube.pods()}
        assert left == {fresh, "database", "imposter"}
        assert kube.spec_errors == []


def test_doctor_names_what_the_cluster_refuses_in_one_line(tmp_path: Path) -> None:
    """`uplodr doctor --provider kubernetes`: a dry run of a worker pod and the Role's verbs,
    one line each. A local store is fine: workers send their outputs back to the gateway."""
    with KubeApiServer(process_factory=standin_process) as kube:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("UPLODR_")},
            "KUBECONFIG": str(kube.write_kubeconfig(tmp_path / "kubeconfig")),
            "UPLODR_K8S_IMAGE": IMAGE,
        }

        def doctor(code: int) -> list[str]:
            done = subprocess.run(
                [sys.executable, "-m", "uplodr", "doctor", "--provider", "kubernetes",
                 "--store", str(tmp_path)],
                env=env, capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert done.returncode == code and "Traceback" not in done.stderr, done.stderr
            return done.stdout.splitlines()

        assert doctor(0) == [
            "ok      provider kubernetes: can start a machine",
            f"ok      store {tmp_path}: writable",
        ]
        kube.verbs.discard("delete")
        assert doctor(1)[0] == (
            "failed  provider kubernetes: the Kubernetes account may not delete pods in "
            "namespace uplodr (see deploy/kubernetes/rbac.yaml)"
        )
        assert kube.created == 0  # dry runs only


def test_no_room_in_the_cluster_is_a_503_busy_with_retry_after(
    tmp_path: Path, swift: SwiftServer, bucket: str, kube: KubeApiServer
) -> None:
    kube.unschedulable = True  # every new pod stays Pending: Unschedulable
    with kube_gateway(tmp_path, swift, bucket, kube) as gateway:
        response = post(gateway, corpus_file("xmp_test-adobergb.jpg"))
        wait_until(lambda: kube.pods() == [], "the pod to be deleted")
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "busy"
    assert int(response.headers["retry-after"]) > 0
    assert "no room for a worker pod: 0/1 nodes are available" in response.json()["error"]


def test_a_pod_deleted_mid_job_is_the_jobs_clear_503_and_nothing_is_left(
    tmp_path: Path, swift: SwiftServer, bucket: str, kube: KubeApiServer
) -> None:
    with kube_gateway(tmp_path, swift, bucket, kube) as gateway:
        result: dict[str, httpx.Response] = {}
        photo = corpus_file("craft-beer.jpg")  # 24 MP: seconds of work
        upload = threading.Thread(target=lambda: result.update(response=post(gateway, photo)))
        upload.start()

        def converting() -> bool:  # the pod runs and its worker has used real CPU time
            pods = kube.pods()
            if len(pods) != 1 or pods[0]["status"]["phase"] != "Running":
                return False
            return busy(kube, pods[0]["metadata"]["name"])

        wait_until(converting, "the pod's worker to be converting", 60)
        (pod,) = kube.pods()
        kube.delete_pod(kube.namespace, pod["metadata"]["name"])  # kubectl delete --force
        upload.join(timeout=60)
        wait_until(lambda: kube.pods() == [], "nothing left")
    response = result["response"]
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["code"] == "worker_unavailable" and "\n" not in body["error"]
    assert body["error"] == "worker stopped: the pod no longer exists"


def test_deleting_the_gateways_own_pod_garbage_collects_its_workers(
    tmp_path: Path, swift: SwiftServer, bucket: str, kube: KubeApiServer
) -> None:
    """The gateway in a cluster (POD_NAME/POD_UID from the downward API) owns its worker pods:
    when its pod is deleted, the garbage collector deletes them, mid-job or not."""
    container = {"name": "gateway", "image": IMAGE}
    own = kube.add_pod(
        kube.namespace,
        {"metadata": {"name": "uplodr-gateway-0"}, "spec": {"containers": [container]}},
    )
    identity = {"POD_NAME": "uplodr-gateway-0", "POD_UID": own["metadata"]["uid"]}
    with kube_gateway(tmp_path, swift, bucket, kube, **identity) as gateway:
        result: dict[str, httpx.Response] = {}
        photo = corpus_file("craft-beer.jpg")  # 24 MP: seconds of work
        upload = threading.Thread(target=lambda: result.update(response=post(gateway, photo)))
        upload.start()

        def worker_pods() -> list[dict[str, Any]]:
            return [p for p in kube.pods() if p["metadata"]["name"] != "uplodr-gateway-0"]

        wait_until(lambda: len(worker_pods()) == 1, "the job's pod", 30)
        (pod,) = worker_pods()
        assert pod["metadata"]["ownerReferences"] == [
            {"apiVersion": "v1", "kind": "Pod", "name": "uplodr-gateway-0",
             "uid": own["metadata"]["uid"]}
        ]  # fmt: skip
        kube.delete_pod(kube.namespace, "uplodr-gateway-0")
        wait_until(lambda: kube.pods() == [], "the workers to be garbage-collected")
        upload.join(timeout=60)
    assert kube.deleted["gc"] == 1
    assert result["response"].status_code == 503, result["response"].text


def busy(kube: KubeApiServer, name: str) -> bool:
    process = kube.process(name)
    if process is None:
        return False
    with contextlib.suppress(psutil.Error):
        return sum(psutil.Process(process.pid).cpu_times()[:2]) > 1.5
    return False
