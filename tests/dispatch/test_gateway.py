"""The gateway's assembly (uplodr.gateway.run) on the in-memory provider and the fake worker:
what it takes from the provider's capabilities, how dispatcher failures reach the client, that
it closes what it opened on every path, and that its reaper loop keeps going."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.fake_worker import FakeWorker
from tests.support.images import noise_png
from tests.support.procs import free_port
from uplodr.gateway.run import Gateway, GatewayOptions, StartupError, open_gateway
from uplodr.machines.base import MARKER_TAG, MARKER_VALUE, Capabilities, StopReason
from uplodr.machines.memory import MemoryFaults, MemoryProvider


def options(store: Path, **changes: Any) -> GatewayOptions:
    return GatewayOptions(**{"stores": (str(store),), "reap_interval": 60.0, **changes})


@asynccontextmanager
async def client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=gateway.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        yield http


async def post(http: httpx.AsyncClient) -> httpx.Response:
    image = noise_png(32, 32, random.Random(time.monotonic_ns()))
    return await http.post("/v1/images", params={"name": "noise.png"}, content=image)


async def test_upload_runs_on_a_machine_and_the_answer_reports_it(
    provider: MemoryProvider, worker: FakeWorker, store: Path
) -> None:
    async with (
        open_gateway(options(store, price_per_hour=3.6), provider) as gateway,
        client(gateway) as http,
    ):
        response = await post(http)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["variants"][0]["mime_type"] == "image/webp"
        job = answer["job"]
        assert job["machine"].startswith("mem-") and job["machine_seconds"] > 0
        assert job["cost"] == pytest.approx(job["machine_seconds"] * 0.001, abs=1e-6)
        # the pool keeps the machine for the next upload (--pool-idle), one worker job at once
        assert provider.alive == [job["machine"]]
        # the worker was told the gateway's settings, through the one WorkerEnv
        (told,) = worker.envs
        assert told.stores == (str(store.resolve()),) and told.public_url and told.max_jobs == 1
    assert provider.closed and provider.alive == []  # shutting down destroyed it


@pytest.mark.parametrize(
    ("reason", "status", "code", "words"),
    [
        (StopReason.killed(9), 503, "worker_unavailable", "worker stopped: killed by signal 9"),
        (StopReason.out_of_memory(512), 422, "limit_exceeded", "needs more memory"),
    ],
)
async def test_a_worker_that_dies_gives_the_client_one_clear_line(
    provider: MemoryProvider,
    worker: FakeWorker,
    store: Path,
    reason: StopReason,
    status: int,
    code: str,
    words: str,
) -> None:
    worker.behaviour.die_mid_stream = reason
    async with open_gateway(options(store), provider) as gateway, client(gateway) as http:
        response = await post(http)
    assert response.status_code == status
    body = response.json()
    assert body["code"] == code and words in body["error"] and "\n" not in body["error"]
    assert provider.alive == []


async def test_defaults_come_from_the_providers_capabilities(
    worker: FakeWorker, store: Path
) -> None:
    capabilities = Capabilities(
        shares_host_files=True, default_max_machines=3, price_per_second=0.25
    )
    provider = MemoryProvider(worker.start, capabilities=capabilities)
    async with open_gateway(options(store), provider) as gateway, client(gateway) as http:
        assert gateway.dispatcher.settings.price_per_second == 0.25
        response = await post(http)
        job = response.json()["job"]
        # (the answer rounds machine-seconds to 4 decimals, not the cost)
        # (a pooled job's share can be a millisecond: compare within the rounding)
        assert job["cost"] == pytest.approx(job["machine_seconds"] * 0.25, abs=0.25 * 5e-5)
        assert gateway.service.max_machines == 3
        text = (await http.get("/metrics")).text
        assert "uplodr_machines_created_total 1.0" in text
    # a second gateway in the same process (its metrics do not clash); the option wins
    provider = MemoryProvider(worker.start, capabilities=capabilities)
    async with open_gateway(options(store, max_machines=1), provider) as gateway:
        assert gateway.service.max_machines == 1


async def test_a_spool_budget_under_the_upload_limit_stops_start_up(
    provider: MemoryProvider, store: Path
) -> None:
    changes = {"spool_budget": 1024 * 1024, "max_upload_bytes": 2 * 1024 * 1024}
    with pytest.raises(StartupError, match=r"--spool-budget \(1048576 bytes\) is smaller than"):
        async with open_gateway(options(store, **changes), provider):
            pass
    assert provider.closed


async def test_a_local_store_is_refused_when_machines_cannot_see_it(
    worker: FakeWorker, store: Path
) -> None:
    provider = MemoryProvider(
        worker.start, capabilities=Capabilities(shares_host_files=False, default_max_machines=4)
    )
    with pytest.raises(StartupError, match="memory machines cannot write to a local folder"):
        async with open_gateway(options(store), provider):
            pass
    assert provider.closed  # what was opened before the refusal is closed


async def test_a_store_that_is_not_writable_closes_everything(
    provider: MemoryProvider, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{free_port()}",  # nobody listens
        "AWS_ACCESS_KEY_ID": "key",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_REGION": "us-east-1",
        "UPLODR_STORAGE_DEADLINE": "1",
    }.items():
        monkeypatch.setenv(name, value)
    settings = GatewayOptions(stores=("s3://bucket",), public_url="http://cdn.test/{key}")
    with pytest.raises(StartupError, match="bucket"):
        async with open_gateway(settings, provider):
            pass
    assert provider.closed
    # nothing of it stays registered: the next gateway's metrics do not clash
    async with open_gateway(options(store), MemoryProvider(provider.start_worker)):
        pass


async def test_a_store_folder_that_cannot_be_made_is_one_line(
    provider: MemoryProvider, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StartupError, match="cannot create the folder"):
        async with open_gateway(options(tmp_path / "file" / "store"), provider):
            pass


async def test_shutdown_destroys_the_machines_still_tagged_with_this_gateway(
    provider: MemoryProvider, store: Path
) -> None:
    async with open_gateway(options(store), provider) as gateway:
        mine = provider.add_foreign({MARKER_TAG: MARKER_VALUE, "gateway": gateway.gateway_id})
        other = provider.add_foreign({MARKER_TAG: MARKER_VALUE, "gateway": "another-gateway"})
    assert mine not in provider.alive and other in provider.alive


async def test_the_reaper_loop_logs_what_it_swallows_and_keeps_going(
    provider: MemoryProvider, store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    past = str(int(time.time()) - 10)
    stale = provider.add_foreign({MARKER_TAG: MARKER_VALUE, "gateway": "dead", "deadline": past})
    provider.faults.fail_lists = 2
    caplog.set_level(logging.WARNING, logger="uplodr.reaper")
    async with open_gateway(options(store, reap_interval=0.05), provider):
        while stale in provider.alive:
            await asyncio.sleep(0.02)
    failures = [r.getMessage() for r in caplog.records if "reaper pass failed" in r.getMessage()]
    assert len(failures) == 2 and "list failed (injected)" in failures[0]


async def test_a_provider_that_refuses_its_configuration_stops_start_up(
    worker: FakeWorker, store: Path
) -> None:
    provider = MemoryProvider(worker.start, faults=MemoryFaults(refuse_checks=1))
    with pytest.raises(StartupError, match=r"^provider memory: memory provider: refused"):
        async with open_gateway(options(store), provider):
            pass
    assert provider.closed


async def test_a_provider_outage_at_start_warns_and_readyz_names_it_until_it_is_back(
    worker: FakeWorker, store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # the start-up check fails, then /readyz's first check, then the provider is back
    provider = MemoryProvider(worker.start, faults=MemoryFaults(fail_checks=2))
    async with open_gateway(options(store), provider) as gateway, client(gateway) as http:
        assert "provider memory is not reachable yet" in caplog.text
        unready = await http.get("/readyz")
        assert unready.status_code == 503
        # the check and the kind of failure; the failure's text is the log's
        assert unready.json()["error"] == "provider: memory: failed (worker_unavailable)"
        assert "readiness check provider failed: memory provider: unreachable" in caplog.text
        ready = await eventually_ready(http)
        assert [c["name"] for c in ready["checks"]] == ["store", "provider"]


async def eventually_ready(http: httpx.AsyncClient) -> dict[str, Any]:
    """/readyz once its kept results (2 s) have given way to a new run that passes."""
    async with asyncio.timeout(10):
        while (answer := await http.get("/readyz")).status_code != 200:
            await asyncio.sleep(0.1)  # polling a condition under a deadline
    result: dict[str, Any] = answer.json()
    return result


async def test_shutdown_with_the_provider_unreachable_is_one_warning(
    worker: FakeWorker, store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    provider = MemoryProvider(worker.start)
    async with open_gateway(options(store), provider) as gateway, client(gateway) as http:
        assert (await post(http)).status_code == 200
        provider.faults.fail_lists = 5  # the provider goes away before the gateway stops
    assert "cannot list this gateway's machines (left to the reaper)" in caplog.text
    assert provider.closed
