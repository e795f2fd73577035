"""Access control through a real gateway: it will not listen beyond loopback without tokens; with
UPLODR_TOKENS every upload needs one of them (rotation: either works) while health and stored files
stay open; the worker a gateway starts takes calls only with that machine's own token; and no
secret ever shows up in an answer or in the gateway's log.

(The worker's token check itself — no token, a wrong token, health open — is covered against a
worker started by hand in tests/e2e/test_worker_grpc.py.)"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.gateway import Gateway, running_gateway
from tests.support.paths import corpus_file
from tests.support.procs import free_port
from tests.support.waiting import wait_for
from uplodr.proto import uplodr_pb2, uplodr_pb2_grpc

ALPHA = f"alpha-{secrets.token_urlsafe(24)}"
BETA = f"beta-{secrets.token_urlsafe(24)}"
DEADLINE = 60.0


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    # Beyond loopback (every interface), which is allowed because tokens are set.
    with running_gateway(
        tmp_path_factory.mktemp("access"),
        "--host",
        "0.0.0.0",
        env={"UPLODR_TOKENS": f" {ALPHA} ,{BETA}"},
    ) as running:
        yield running
        assert running.workers() == []
        assert running.machine_records() == []


def upload(gateway: Gateway, name: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/images",
        params={"name": name, "folder": "access"},
        content=corpus_file(name).read_bytes(),
        headers=headers,
        timeout=120,
    )


def assert_no_secret(text: str, *secrets_: str) -> None:
    for secret in secrets_:
        assert secret not in text


def test_beyond_loopback_without_tokens_it_refuses_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "UPLODR_TOKENS"}
    env["UPLODR_DATA_DIR"] = str(tmp_path / "data")
    for host in ("0.0.0.0", "::"):
        done = subprocess.run(
            [
                *(sys.executable, "-m", "uplodr", "serve", "--host", host),
                *("--port", str(free_port()), "--state-dir", str(tmp_path / "state")),
                *("--store", str(tmp_path / "store")),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, done.stderr
        assert f"refusing to listen on {host} without UPLODR_TOKENS" in done.stderr
        assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer wrong-token"},
        {"authorization": f"Bearer {ALPHA}x"},
        {"authorization": f"Bearer {ALPHA[:-1]}"},
        {"authorization": ALPHA},  # no scheme
        {"authorization": f"Basic {ALPHA}"},
        {"authorization": f"Bearer {ALPHA},{BETA}"},
        {"x-api-key": ALPHA},
    ],
    ids=["none", "wrong", "longer", "shorter", "no-scheme", "basic", "both", "other-header"],
)
def test_without_a_valid_token_401(gateway: Gateway, headers: dict[str, str]) -> None:
    response = upload(gateway, "Landscape_6.jpg", headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "missing or wrong bearer token", "code": "unauthenticated"}
    assert_no_secret(response.text, ALPHA, BETA)


def test_health_and_stored_files_stay_open(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.url}/healthz", timeout=10).json() == {"status": "ok"}
    response = upload(gateway, "sample-16bit.png", {"authorization": f"Bearer {BETA}"})
    assert response.status_code == 200, response.text
    for variant in response.json()["variants"]:
        fetched = httpx.get(variant["url"], timeout=30)  # no token
        assert fetched.status_code == 200
        assert len(fetched.content) == variant["size_bytes"]


def _worker_of_running_job(gateway: Gateway) -> tuple[str, str]:
    """(address, UPLODR_WORKER_TOKEN) of the worker the gateway started, read from its machine
    record and its environment while the job runs."""
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        for record_path in gateway.machine_records():
            try:
                record = json.loads(record_path.read_text())
                environ = psutil.Process(record["pid"]).environ()
            except (OSError, ValueError, psutil.Error):
                continue
            if "UPLODR_WORKER_TOKEN" in environ:
                return record["address"], environ["UPLODR_WORKER_TOKEN"]
        time.sleep(0.02)  # polling for the machine under a deadline
    raise AssertionError("no worker appeared")


def test_a_worker_started_by_the_gateway_takes_only_its_own_token(gateway: Gateway) -> None:
    result: dict[str, httpx.Response] = {}
    thread = threading.Thread(
        target=lambda: result.update(
            response=upload(gateway, "craft-beer.jpg", {"authorization": f"Bearer {ALPHA}"})
        )
    )
    thread.start()
    try:
        address, machine_token = _worker_of_running_job(gateway)
        # The per-machine token is fresh and long, and is not one of the gateway's tokens.
        assert machine_token not in (ALPHA, BETA) and len(machine_token) >= 32
        with grpc.insecure_channel(address) as channel:
            stub = uplodr_pb2_grpc.ImageStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            # Health is open without a token: wait on it until the worker listens.
            status = health.Check(
                health_pb2.HealthCheckRequest(service=""), wait_for_ready=True, timeout=DEADLINE
            )
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            for metadata in (
                (),
                (("authorization", f"Bearer {ALPHA}"),),  # the gateway's own token
                (("authorization", machine_token),),  # no scheme
            ):
                with pytest.raises(grpc.RpcError) as caught:
                    stub.Ping(uplodr_pb2.Echo(nonce="x"), metadata=metadata, timeout=10)
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert_no_secret(caught.value.details() or "", machine_token, ALPHA)
            # Uploading to it directly is refused the same way.
            with pytest.raises(grpc.RpcError) as caught:
                stub.Upload(uplodr_pb2.UploadReq(file_name="x.jpg", data=b"\xff"), timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # With the machine's own token it answers.
            mine = (("authorization", f"Bearer {machine_token}"),)
            assert stub.Ping(uplodr_pb2.Echo(nonce="n"), metadata=mine, timeout=10).nonce == "n"
    finally:
        thread.join(timeout=120)
    response = result["response"]
    assert response.status_code == 200, response.text
    assert_no_secret(response.text, machine_token, ALPHA, BETA)
    assert_no_secret(gateway.log_text(), machine_token, ALPHA, BETA)


def test_secrets_never_reach_the_log(gateway: Gateway) -> None:
    # A refused upload with a near-miss of each token, and an accepted one, of its own (the other
    # tests may have run in another test process, or not yet): the log holds neither token, in
    # whatever else those tests made it write too.
    for token in (ALPHA, BETA):
        refused = upload(gateway, "Landscape_6.jpg", {"authorization": f"Bearer {token}x"})
        assert refused.status_code == 401
    accepted = upload(gateway, "Landscape_6.jpg", {"authorization": f"Bearer {ALPHA}"})
    assert accepted.status_code == 200, accepted.text

    def logged() -> bool:
        return "upload refused" in gateway.log_text()

    wait_for(logged, "the 401s to be logged")
    assert_no_secret(gateway.log_text(), ALPHA, BETA)
