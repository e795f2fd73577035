"""Each job records its machine-seconds (create requested → destroy confirmed) and their cost
from the price table; the answer and /metrics carry them."""

from __future__ import annotations

import random
import re
from pathlib import Path

import httpx
import pytest

from tests.lifecycle.conftest import fly_gateway
from tests.support.fly_api import FlyApiServer
from tests.support.gateway import running_gateway
from tests.support.images import noise_png
from tests.support.swift import SwiftServer
from uplodr.machines.fly import FlyGuest


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


@pytest.mark.timeout(180)
def test_fly_job_reports_its_cost(
    tmp_path: Path, swift: SwiftServer, bucket: str, fly: FlyApiServer, mark: str
) -> None:
    price = FlyGuest().price_per_second()  # the default guest: shared-cpu-2x, 1 GB
    with fly_gateway(tmp_path, swift, bucket, fly) as gateway:
        response = httpx.post(
            f"{gateway.url}/v1/images",
            params={"name": "noise.png"},
            content=noise_png(64, 64, random.Random(7)),
            timeout=60,
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        job, timings = answer["job"], answer["timings"]
        assert job["machine_seconds"] > 0
        # the machine's whole life is the job's, but for the gateway publishing its outputs
        # after the machine was destroyed (workers hold no store)
        assert job["machine_seconds"] == pytest.approx(
            timings["total"] - timings["store"], abs=1e-3
        )
        assert job["machine_seconds"] > timings["convert"] > 0
        assert job["cost"] > 0
        assert job["cost"] == pytest.approx(job["machine_seconds"] * price, abs=1e-8)
        metrics = httpx.get(f"{gateway.url}/metrics").text
        assert metric(metrics, "uplodr_machine_seconds_total") == pytest.approx(
            job["machine_seconds"], abs=1e-3
        )
        # the answer rounds the cost to 8 decimals; /metrics keeps every digit
        assert metric(metrics, "uplodr_cost_total") == pytest.approx(job["cost"], abs=1e-8)
        assert job["machine"] in gateway.log_text()  # "job … on <machine>: … cost …" logged
        assert "machine-seconds, cost" in gateway.log_text()
    assert fly.machines_alive == 0


@pytest.mark.timeout(180)
def test_price_per_hour_overrides_the_table(tmp_path: Path) -> None:
    with running_gateway(tmp_path, "--price-per-hour", "3.6") as gateway:
        response = httpx.post(
            f"{gateway.url}/v1/images",
            params={"name": "noise.png"},
            content=noise_png(64, 64, random.Random(8)),
            timeout=60,
        )
        assert response.status_code == 200, response.text
        job = response.json()["job"]
        assert job["cost"] == pytest.approx(job["machine_seconds"] * 0.001, rel=1e-3, abs=1e-8)
