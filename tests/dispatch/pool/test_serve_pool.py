"""The pool through a real `uplodr serve` with the local provider (real worker processes): a
burst on `--pool-max 2` makes at most 2 machines and 0 remain after the idle window; `--pool-idle
0` is a machine per job; SIGTERM destroys idle machines; a gateway SIGKILLed with idle pooled
machines leaves workers that end themselves (their heartbeat stops)."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil

from tests.support.gateway import Gateway, running_gateway, start_gateway, stop_gateway
from tests.support.images import noise_png


def wait_until(condition: Callable[[], bool], what: str, deadline: float = 20.0) -> None:
    give_up = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out after {deadline:g}s waiting for {what}")
        time.sleep(0.05)  # polling processes and files under a deadline


def metric(gateway: Gateway, name: str) -> float:
    text = httpx.get(f"{gateway.url}/metrics").text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} is not exported"
    return float(found.group(1))


def burst(gateway: Gateway, count: int) -> list[httpx.Response]:
    rng = random.Random(time.monotonic_ns())
    images = [noise_png(48, 48, rng) for _ in range(count)]

    async def send() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=120) as http:
            return await asyncio.gather(
                *(
                    http.post("/v1/images", params={"name": f"n{i}.png"}, content=image)
                    for i, image in enumerate(images)
                )
            )

    return asyncio.run(send())


def test_a_burst_on_a_pool_of_two_then_zero_machines(tmp_path: Path) -> None:
    args = ("--pool-max", "2", "--pool-idle", "1s", "--max-queue", "16")
    with running_gateway(tmp_path / "pool", *args) as gateway:
        responses = burst(gateway, 12)
        assert [r.status_code for r in responses] == [200] * 12, responses[0].text
        assert 1 <= metric(gateway, "uplodr_machines_created_total") <= 2
        machines = {r.json()["job"]["machine"] for r in responses}
        assert len(machines) == metric(gateway, "uplodr_machines_created_total")
        wait_until(
            lambda: gateway.workers() == [] and gateway.machine_records() == [],
            "0 machines after the idle window",
        )
        assert metric(gateway, "uplodr_pool_machines") == 0
        assert metric(gateway, "uplodr_machine_idle_seconds_total") >= 1.0


def test_a_machine_that_met_a_truncated_file_is_destroyed_and_not_reused(tmp_path: Path) -> None:
    """--pool-max 1: good file → truncated file → good file. The truncated file's machine is
    destroyed (its worker decoded bytes that may be crafted), the third job runs on a new
    one, and /metrics says why. A bad name, refused by the gateway before any byte reached a
    worker, costs no machine."""
    rng = random.Random(time.monotonic_ns())
    good, other = noise_png(64, 64, rng), noise_png(64, 64, rng)
    cut = noise_png(256, 256, rng)
    cut = cut[: len(cut) // 2]  # the header reads, the pixels do not
    args = ("--pool-max", "1", "--pool-idle", "10m")
    with (
        running_gateway(tmp_path / "bad", *args) as gateway,
        httpx.Client(base_url=gateway.url, timeout=60) as http,
    ):
        first = http.post("/v1/images", params={"name": "a.png"}, content=good)
        assert first.status_code == 200, first.text
        (pid,) = gateway.workers()
        bad = http.post("/v1/images", params={"name": "cut.png"}, content=cut)
        assert bad.status_code == 422 and bad.json()["code"] == "corrupt_image", bad.text
        refused = http.post("/v1/images", params={"name": "../x.png"}, content=good)
        assert refused.status_code == 400
        third = http.post("/v1/images", params={"name": "c.png"}, content=other)
        assert third.status_code == 200, third.text
        assert third.json()["job"]["machine"] != first.json()["job"]["machine"]
        wait_until(lambda: not _alive(pid), "the bad file's worker to be gone")
        assert (
            metric(gateway, 'uplodr_machines_retired_bad_input_total{reason="corrupt_image"}') == 1
        )
        assert metric(gateway, "uplodr_machines_created_total") == 2
        assert metric(gateway, "uplodr_machines_destroyed_total") == 1
        assert len(gateway.workers()) == 1 and len(gateway.machine_records()) == 1


def test_pool_idle_0_is_a_machine_per_job(tmp_path: Path) -> None:
    args = ("--pool-max", "2", "--pool-idle", "0")
    with running_gateway(tmp_path / "per-job", *args) as gateway:
        responses = burst(gateway, 3)
        assert [r.status_code for r in responses] == [200] * 3
        assert metric(gateway, "uplodr_machines_created_total") == 3
        assert gateway.workers() == [] and gateway.machine_records() == []


def test_sigterm_destroys_idle_machines(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path / "term", "--pool-max", "2", "--pool-idle", "10m")
    try:
        assert [r.status_code for r in burst(gateway, 2)] == [200, 200]
        assert gateway.workers() != []  # pooled, idle
    finally:
        stop_gateway(gateway)
    assert gateway.process.returncode is not None
    assert gateway.workers() == [] and gateway.machine_records() == []


def test_idle_pooled_workers_end_themselves_when_the_gateway_is_killed(tmp_path: Path) -> None:
    args = ("--pool-max", "2", "--pool-idle", "10m", "--worker-idle-timeout", "2s")
    gateway = start_gateway(tmp_path / "kill", *args)
    try:
        assert [r.status_code for r in burst(gateway, 2)] == [200, 200]
        pids = gateway.workers()
        assert pids
        gateway.process.send_signal(signal.SIGKILL)
        gateway.process.wait()
        wait_until(
            lambda: not any(psutil.pid_exists(p) and _alive(p) for p in pids),
            "the orphaned pooled workers to end themselves",
        )
    finally:
        stop_gateway(gateway)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def serve_refuses(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "uplodr", "serve", "--store", str(tmp_path / "s"), *args],
        env={**os.environ, "UPLODR_DATA_DIR": str(tmp_path / "d"), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    return line


def test_bad_pool_options_are_one_line_each(tmp_path: Path) -> None:
    line = serve_refuses(tmp_path, "--pool-max", "2", "--max-machines", "3")
    assert "--pool-max 2 and --max-machines 3 disagree" in line
    line = serve_refuses(tmp_path, "--pool-max", "2", env={"UPLODR_POOL_MIN": "3"})
    assert line == "uplodr serve: --pool-min 3 is above --pool-max 2"
    line = serve_refuses(tmp_path, "--pool-keep-stopped", "1")
    assert line.endswith(
        "--pool-keep-stopped needs a provider that can stop machines; local cannot"
    )
    assert "Invalid value for '--jobs-per-machine'" in serve_refuses(
        tmp_path, "--jobs-per-machine", "0"
    )
