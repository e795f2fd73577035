"""No secret reaches a log: a gateway on the Fly API simulator (which answers creates 429, so
they are retried) with an S3 store on the real Swift server (taken away mid-run, so store calls
are retried and fail), with upload tokens, a bound token and a metrics token. Every log record
of the run is captured as a structured log handler would ship it — message, arguments, every
extra field (stamina's retry record puts the call's arguments there), exception text — and so
is every worker's output; none holds the Fly token, the store's secret key, a gateway token,
the metrics token, a worker's token or a presigned URL's signature. Nor does any answer."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.fly import FAST_BACKOFF, fly_config
from tests.support.fly_api import FlyApiServer, WorkerLaunch, logged_worker_process
from tests.support.paths import corpus_file
from tests.support.procs import free_port
from tests.support.swift import SwiftServer
from uplodr.gateway.run import GatewayOptions, open_gateway
from uplodr.machines.fly import FlyProvider

FLY_TOKEN = f"fly-{secrets.token_hex(20)}"
GATEWAY_TOKEN = secrets.token_urlsafe(32)
BOUND_TOKEN = secrets.token_urlsafe(32)
METRICS_TOKEN = secrets.token_urlsafe(32)
PHOTOS = ("Landscape_6.jpg", "iss634.gif")


class EveryRecord(logging.Handler):
    """Each record as one line: the formatted message with its exception, then every field of
    the record (what a JSON handler would ship)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{self.format(record)} {record.__dict__!r}")


@pytest.fixture
def every_record() -> Iterator[EveryRecord]:
    handler = EveryRecord()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@asynccontextmanager
async def asgi(app: object) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        yield http


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_no_secret_in_any_log_line_of_a_run_with_retries(
    tmp_path: Path,
    swift: SwiftServer,
    monkeypatch: pytest.MonkeyPatch,
    every_record: EveryRecord,
) -> None:
    bucket = f"leaks-{secrets.token_hex(4)}"
    swift.create_bucket(bucket)
    for name, value in swift.canary_env(UPLODR_STORAGE_DEADLINE="2").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("UPLODR_TOKENS", GATEWAY_TOKEN)
    tokens_file = tmp_path / "tokens.toml"
    digest = hashlib.sha256(BOUND_TOKEN.encode()).hexdigest()
    tokens_file.write_text(
        f'[[tokens]]\nname = "blog"\nsha256 = "{digest}"\nprefixes = ["blog/"]\n'
    )
    worker_tokens: list[str] = []
    logs = tmp_path / "workers"
    start_worker = logged_worker_process(logs)

    def worker(launch: WorkerLaunch) -> subprocess.Popen[bytes]:
        worker_tokens.append(launch.env["UPLODR_WORKER_TOKEN"])
        return start_worker(launch)

    # creates at most one per 2 s (the provider paces to 1/s): the second create meets a 429
    fly = FlyApiServer(
        grpc_port=free_port(),
        token=FLY_TOKEN,
        rate=0.5,
        burst=1,
        retry_after=0.3,
        process_factory=worker,
    )
    options = GatewayOptions(
        stores=(f"s3://{bucket}",),
        public_url=swift.public_url(bucket),
        provider="fly",
        pool_idle=0,
        reap_interval=60.0,
        tokens_file=tokens_file,
        metrics_token=METRICS_TOKEN,
    )
    answers: list[str] = []
    with fly:
        provider = FlyProvider(fly_config(fly, regions=(), **FAST_BACKOFF))
        async with open_gateway(options, provider) as gateway, asgi(gateway.app) as http:

            async def upload(name: str, token: str, folder: str) -> httpx.Response:
                response = await http.post(
                    "/v1/images",
                    params={"name": name, "folder": folder},
                    content=corpus_file(name).read_bytes(),
                    headers=bearer(token),
                    timeout=120,
                )
                answers.append(response.text)
                return response

            both = await asyncio.gather(
                upload(PHOTOS[0], GATEWAY_TOKEN, "a"), upload(PHOTOS[1], BOUND_TOKEN, "blog")
            )
            assert [r.status_code for r in both] == [200, 200], [r.text for r in both]
            image = both[0].json()
            delete_token = {"Uplodr-Delete-Token": image["delete_token"]}
            assert fly.statuses[("create", 429)] >= 1, fly.statuses
            assert (await upload(PHOTOS[0], BOUND_TOKEN, "shop")).status_code == 403
            assert (await upload(PHOTOS[0], "wrong", "shop")).status_code == 401
            metrics = await http.get("/metrics", headers=bearer(METRICS_TOKEN))
            assert metrics.status_code == 200
            answers.append(metrics.text)
            swift.stop_proxy()
            try:
                down = await upload(PHOTOS[0], GATEWAY_TOKEN, "b")
                assert down.status_code == 503 and down.json()["code"] == "storage_unavailable"
                unready = await http.get("/readyz")
                assert unready.status_code == 503
                answers.append(unready.text)
                path = f"/v1/images/{image['id']}"
                refused = await http.delete(path, headers=delete_token, timeout=60)
                assert refused.status_code == 503, refused.text
                answers.append(refused.text)
            finally:
                swift.start_proxy()
            deleted = await http.delete(path, headers=delete_token, timeout=60)
            assert deleted.status_code == 204, deleted.text
    assert len(worker_tokens) >= 2 and all(worker_tokens)
    worker_lines = [
        line for log in sorted(logs.glob("*.log")) for line in log.read_text().splitlines()
    ]
    lines = every_record.lines + worker_lines
    retries = [line for line in every_record.lines if "stamina:" in line]
    # the run did retry, and said so: Fly calls after their 429, S3 calls during the outage
    assert any("after Transient" in line for line in retries), retries
    assert any("after GenericError" in line for line in retries), retries
    configured = {
        "the Fly token": FLY_TOKEN,
        "the store's secret key": swift.canary_secret,
        "the gateway token": GATEWAY_TOKEN,
        "the bound token": BOUND_TOKEN,
        "the metrics token": METRICS_TOKEN,
        **{f"worker token {i}": token for i, token in enumerate(worker_tokens)},
    }
    for what, secret in configured.items():
        leaks = [line[:300] for line in lines if secret in line]
        assert leaks == [], f"{what} in {len(leaks)} log lines, e.g. {leaks[:2]}"
        assert not [a for a in answers if secret in a], f"{what} in an answer"
    # The delete token is in its upload's answer (once, by design), never in a log line; the
    # secret it derives from is in neither.
    assert not [line for line in lines if image["delete_token"] in line]
    server_secret = (Path(os.environ["UPLODR_DATA_DIR"]) / "secret").read_bytes()
    for shown in (
        server_secret.hex(),
        base64.b64encode(server_secret).decode(),
        repr(server_secret),
    ):
        assert not [line for line in lines if shown in line]
        assert not [a for a in answers if shown in a]
    assert not [line for line in lines if "X-Amz-Signature" in line]
    print(
        f"{len(every_record.lines)} gateway records, {len(worker_lines)} worker lines, "
        f"{len(retries)} retry records: no secret"
    )
