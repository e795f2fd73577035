"""Issue 16, point 1: a worker holds no standing secret. Real `uplodr serve` processes store to
a real Swift (S3 with SigV4) through the local provider and through the Fly API test server,
with gateway tokens set and the pool on, and show:

- during a job and while its machine idles in the pool, the worker's environment (local:
  /proc/PID/environ; Fly: the machine's stored config and its process's environment) holds no
  store credential, no `AWS_*`/`UPLODR_STORAGE_*` variable, no store and no gateway token;
- every variant is published (manifest last) and readable anonymously with its exact size;
- code run with the worker's environment — what a crafted file that took the worker over
  holds — cannot write a key outside its job: an S3 PUT with whatever credential that
  environment carries is refused by the store (and so is one with none), and the key never
  appears; the same PUT with the gateway's credential succeeds (the refusal is the
  credential's, not a broken request).

The Docker provider's container config is shown in tests/docker/test_docker_no_secret.py.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.support.fly import fly_env
from tests.support.fly_api import FlyApiServer, logged_worker_process
from tests.support.gateway import GatewayProcess
from tests.support.no_secret import FOREIGN_KEY, GATEWAY_TOKEN, check_published, secrets_in
from tests.support.paths import corpus_file
from tests.support.procs import free_port
from tests.support.swift import SwiftServer
from tests.support.waiting import wait_for
from uplodr.errors import StorageUnavailable
from uplodr.storage.s3 import S3Store

PHOTO = "book-beside-flowers.jpg"  # 12 MP: the job lasts long enough to look at it
DEADLINE = 120.0


def environ_of(pid: int) -> dict[str, str]:
    return dict(psutil.Process(pid).environ())


def write_outside_the_job(swift: SwiftServer, bucket: str, env: Mapping[str, str]) -> str | None:
    """What code inside the worker can do with what it holds: an S3 PUT of another key, signed
    with the environment's credential if it has one (else with none: a made-up key). None when
    the store took it; else the store's refusal."""
    store = S3Store(
        bucket,
        "",
        endpoint=swift.endpoint,  # the attacker may know where the store is; not what it holds
        access_key_id=env.get("AWS_ACCESS_KEY_ID") or "worker-has-no-key",
        secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or "worker-has-no-secret",
        region="us-east-1",
        deadline_s=5,
    )

    async def attempt() -> str | None:
        try:
            await store.put(FOREIGN_KEY, b"overwritten", "image/webp", "no-store")
        except StorageUnavailable as refused:
            return str(refused)
        finally:
            await store.aclose()
        return None

    return asyncio.run(attempt())


def upload(url: str) -> Callable[[], httpx.Response]:
    """POST the 12 MP photo in a thread; the returned function waits for the answer."""
    result: dict[str, httpx.Response] = {}
    photo = corpus_file(PHOTO)

    def post() -> None:
        result["r"] = httpx.post(
            f"{url}/v1/images",
            params={"name": photo.name, "folder": "nosecret"},
            headers={"Authorization": f"Bearer {GATEWAY_TOKEN}"},
            content=photo.read_bytes(),
            timeout=DEADLINE,
        )

    thread = threading.Thread(target=post)
    thread.start()

    def answer() -> httpx.Response:
        thread.join(DEADLINE)
        assert "r" in result, "the upload got no answer"
        return result["r"]

    return answer


def check_refused(swift: SwiftServer, bucket: str, worker_env: Mapping[str, str]) -> None:
    refusal = write_outside_the_job(swift, bucket, worker_env)
    assert refusal is not None, "the worker's environment could write to the store"
    assert FOREIGN_KEY not in swift.list_keys(bucket)
    # the same request with the gateway's credential is taken: the refusal was the credential's
    assert write_outside_the_job(swift, bucket, swift.s3_env()) is None
    swift.empty_bucket(bucket)


@pytest.fixture
def bucket(swift: SwiftServer) -> str:
    name = f"nosecret-{os.urandom(4).hex()}"
    swift.create_bucket(name, public_read=True)
    return name


def gateway(
    tmp_path: Path, swift: SwiftServer, bucket: str, env: Mapping[str, str], *args: str
) -> GatewayProcess:
    workdir = tmp_path / "gateway"
    workdir.mkdir()
    return GatewayProcess(
        ["--store", f"s3://{bucket}", "--public-url", swift.public_url(bucket), *args],
        {
            **os.environ,
            **swift.s3_env(),
            "UPLODR_TOKENS": GATEWAY_TOKEN,
            "UPLODR_POOL_IDLE": "120",
            **env,
        },
        workdir,
    )


@pytest.fixture
def local_gateway(tmp_path: Path, swift: SwiftServer, bucket: str) -> Iterator[GatewayProcess]:
    running = gateway(
        tmp_path,
        swift,
        bucket,
        {"UPLODR_STATE_DIR": str(tmp_path / "state")},
        "--provider",
        "local",
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()


def local_workers(gateway: GatewayProcess) -> list[int]:
    assert gateway.process is not None
    parent = psutil.Process(gateway.process.pid)
    return [
        p.pid
        for p in parent.children(recursive=True)
        if "worker" in p.cmdline() and p.status() != psutil.STATUS_ZOMBIE
    ]


def test_local_worker_holds_no_secret_and_cannot_write_another_key(
    local_gateway: GatewayProcess, swift: SwiftServer, bucket: str
) -> None:
    answer = upload(local_gateway.url)
    wait_for(lambda: bool(local_workers(local_gateway)), "a worker process", deadline=DEADLINE)
    (pid,) = local_workers(local_gateway)
    during = environ_of(pid)
    response = answer()
    assert response.status_code == 200, response.text
    assert local_workers(local_gateway) == [pid]  # idle in the pool, same process
    idle = environ_of(pid)
    assert during.get("UPLODR_WORKER_TOKEN"), "the per-machine token stays"
    assert secrets_in(during) == [] and secrets_in(idle) == []
    check_published(swift, bucket, response.json())
    check_refused(swift, bucket, idle)


@pytest.fixture
def fly(tmp_path: Path) -> Iterator[FlyApiServer]:
    server = FlyApiServer(
        grpc_port=free_port(), process_factory=logged_worker_process(tmp_path / "fly-workers")
    )
    with server:
        yield server
        assert server.spec_errors == []


def test_fly_machine_config_holds_no_secret_and_its_worker_cannot_write_another_key(
    tmp_path: Path, swift: SwiftServer, bucket: str, fly: FlyApiServer
) -> None:
    running = gateway(tmp_path, swift, bucket, fly_env(fly, regions=""), "--provider", "fly")
    running.start()
    try:
        answer = upload(running.url)

        def machine() -> Any:
            alive = [m for m in fly.snapshot() if m.process is not None and m.state == "started"]
            return alive[0] if alive else None

        wait_for(lambda: machine() is not None, "a started machine", deadline=DEADLINE)
        during = dict(machine().config["env"])
        response = answer()
        assert response.status_code == 200, response.text
        idle_machine = machine()
        assert idle_machine is not None, "the machine idles in the pool"
        idle = dict(idle_machine.config["env"])
        # what the Machines API keeps (config.env) and what the process got beyond the test
        # runner's own environment (the simulator starts it from this process, as Fly from
        # the image: that part is not uplodr's)
        assert isinstance(idle_machine.process, psutil.Popen | subprocess.Popen)
        process_env = {
            k: v for k, v in environ_of(idle_machine.process.pid).items() if os.environ.get(k) != v
        }
        assert during.get("UPLODR_WORKER_TOKEN")
        for env in (during, idle, process_env):
            assert secrets_in(env, fly.token) == []
        shown = httpx.get(
            f"{fly.url}/v1/apps/{fly.app}/machines/{idle_machine.id}",
            headers={"Authorization": f"Bearer {fly.token}"},
            timeout=10,
        ).json()
        assert secrets_in(shown["config"]["env"], fly.token) == []
        check_published(swift, bucket, response.json())
        check_refused(swift, bucket, process_env)
    finally:
        running.stop()
