"""A machine never outlives its job: after a worker dies mid-job, after the client hangs up
during the upload or during the conversion, the machine is destroyed and the client (if still
there) gets a clear error."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil

from tests.support.gateway import Gateway, hang_up_after_upload, running_gateway
from tests.support.paths import corpus_file
from tests.support.waiting import busy_worker, wait_for

DEADLINE = 60.0


def test_worker_killed_mid_job_gives_a_clear_error(gateway: Gateway) -> None:
    photo = corpus_file("craft-beer.jpg")
    result: dict[str, httpx.Response] = {}

    def upload() -> None:
        result["response"] = httpx.post(
            f"{gateway.url}/v1/images",
            params={"name": "beer.jpg"},
            content=photo.read_bytes(),
            timeout=120,
        )

    thread = threading.Thread(target=upload)
    thread.start()
    busy_worker(gateway).kill()
    thread.join(timeout=DEADLINE)
    response = result["response"]
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["code"] == "worker_unavailable"
    assert "killed by signal 9" in body["error"]
    assert "Traceback" not in response.text


def test_client_hang_up_mid_upload_creates_no_machine(gateway: Gateway) -> None:
    host, port = urlsplit(gateway.url).hostname, urlsplit(gateway.url).port
    assert host and port
    with socket.create_connection((host, port)) as sock:
        sock.sendall(
            b"POST /v1/images?name=half.jpg HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Length: 5000000\r\n\r\n"
            + b"\xff\xd8\xff"
            + b"\0" * 100_000
        )
    # The gateway notices, is unharmed, and created nothing for the broken upload.
    wait_for(
        lambda: 'uplodr_uploads_total{outcome="client_gone"}' in metrics_text(gateway.url),
        "the gateway to count the hang-up",
    )
    assert httpx.get(f"{gateway.url}/healthz").status_code == 200
    assert gateway.workers() == []


def test_client_hang_up_during_conversion_destroys_the_machine(gateway: Gateway) -> None:
    with hang_up_after_upload(gateway.url, corpus_file("craft-beer.jpg").read_bytes()):
        worker = busy_worker(gateway)
    # The client is gone: the job is cancelled and its machine destroyed.
    wait_for(
        lambda: not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE,
        "the abandoned job's worker to be destroyed",
    )
    wait_for(lambda: gateway.workers() == [] and gateway.machine_records() == [], "no machine left")


def test_uploads_beyond_the_machine_cap_wait_or_get_503(tmp_path: Path) -> None:
    """At most --max-machines conversions run at once; --max-queue more wait; the rest are
    answered 503 at once instead of piling up machines."""
    photo = corpus_file("craft-beer.jpg").read_bytes()
    small = corpus_file("sample-16bit.png").read_bytes()
    with running_gateway(tmp_path / "capped", "--max-machines", "1", "--max-queue", "1") as gw:
        results: dict[str, httpx.Response] = {}

        def upload(key: str, name: str, data: bytes) -> None:
            results[key] = httpx.post(
                f"{gw.url}/v1/images", params={"name": name}, content=data, timeout=120
            )

        first = threading.Thread(target=upload, args=("first", "beer.jpg", photo))
        first.start()
        busy_worker(gw)  # the one machine is converting
        queued = threading.Thread(target=upload, args=("queued", "sample.png", small))
        queued.start()
        wait_for(
            lambda: "uplodr_jobs_waiting 1.0" in httpx.get(f"{gw.url}/metrics").text,
            "the second upload to wait for the machine slot",
        )
        refused = httpx.post(
            f"{gw.url}/v1/images", params={"name": "third.png"}, content=small, timeout=60
        )
        assert refused.status_code == 503, refused.text
        assert "busy" in refused.json()["error"]
        first.join(DEADLINE)
        queued.join(DEADLINE)
        assert results["first"].status_code == 200, results["first"].text
        assert results["queued"].status_code == 200, results["queued"].text
        wait_for(lambda: gw.workers() == [], "no machine left")


def metrics_text(url: str) -> str:
    return httpx.get(f"{url}/metrics").text
