"""What a dead gateway leaves behind ends: its workers end themselves within their idle
timeout, and `uplodr reap` (a separate process) destroys the rest. Machines without uplodr's
tags are never touched; `uplodr machines ls` works for both providers from another process."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.lifecycle.conftest import IDLE_TIMEOUT, cli, fly_gateway, marked_workers, wait_until
from tests.support.fly import fly_env
from tests.support.fly_api import FlyApiServer, standin_process
from tests.support.gateway import Gateway, start_gateway, stop_gateway
from tests.support.paths import corpus_file
from tests.support.procs import RUN_MARK, free_port
from tests.support.strangers import stranger_machine
from tests.support.swift import SwiftServer
from uplodr.machines.base import MARKER_TAG, MARKER_VALUE
from uplodr.machines.local_records import RecordDir

# Once its gateway is gone, a worker's idle timer runs out within IDLE_TIMEOUT; it then gives
# the conversion in flight the 2 s orphan grace and tears down. The margin is slack for a loaded
# machine: what matters is that the orphan ends in seconds, not after its 10 min idle timeout.
MARGIN = 15.0


def upload_in_background(url: str, photo: Path) -> threading.Thread:
    def post() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the gateway dies under it
            httpx.post(
                f"{url}/v1/images",
                params={"name": photo.name},
                content=photo.read_bytes(),
                timeout=120,
            )

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread


def converting(pids: list[int]) -> psutil.Process | None:
    """A worker that has used real CPU time: it is converting."""
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if sum(proc.cpu_times()[:2]) > 1.5:
                return proc
    return None


def gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kill_mid_job(gateway: Gateway) -> psutil.Process:
    upload_in_background(gateway.url, corpus_file("craft-beer.jpg"))
    found: list[psutil.Process] = []

    def busy() -> bool:
        proc = converting(gateway.workers())
        if proc is not None:
            found.append(proc)
        return proc is not None

    wait_until(busy, "a worker to be converting", 60)
    gateway.process.kill()
    gateway.process.wait()
    return found[0]


def test_local_worker_of_a_killed_gateway_ends_itself(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, "--worker-idle-timeout", f"{IDLE_TIMEOUT:g}s")
    try:
        worker = kill_mid_job(gateway)
        took = wait_until(lambda: gone(worker), "the orphan worker to exit", 30)
        assert took <= IDLE_TIMEOUT + MARGIN, f"the orphan lived {took:.1f}s"
        # Its record outlived it (nobody destroyed it); any later command tidies it up.
        out = cli("reap", "--state-dir", str(gateway.state))
        assert "0 failed" in out
        assert gateway.machine_records() == [] and gateway.workers() == []
    finally:
        stop_gateway(gateway)


def test_reap_destroys_what_a_dead_gateway_left_and_nothing_else(tmp_path: Path, mark: str) -> None:
    # a machine someone else made in the same state dir, without uplodr's marker
    bystander = stranger_machine(tmp_path / "state", {"role": "database"}, {RUN_MARK: mark})
    # a gateway whose workers would idle for ten minutes, killed mid-job
    with bystander as untagged:
        gateway = start_gateway(tmp_path, "--worker-idle-timeout", "10m")
        try:
            orphan = kill_mid_job(gateway)
            state = ["--state-dir", str(gateway.state)]
            listed = json.loads(cli("machines", "ls", "--json", *state))
            assert [m["tags"][MARKER_TAG] for m in listed] == [MARKER_VALUE]  # not the bystander
            assert "1 stale, 0 destroyed" in cli("reap", "--older-than", "1s", "--dry-run", *state)
            assert "0 stale" in cli("reap", *state)  # younger than 1h and before its deadline
            assert not gone(orphan)
            assert "1 stale, 1 destroyed, 0 failed" in cli("reap", "--older-than", "1s", *state)
            assert gone(orphan)
            assert gateway.workers() == []
            assert [p.stem for p in gateway.machine_records()] == [untagged]
            # the bystander was never touched, even by an aggressive reap
            assert "0 stale" in cli("reap", "--older-than", "0s", *state)
            record = RecordDir(gateway.state / "machines").read(untagged)
            assert record is not None and record.running()
        finally:
            stop_gateway(gateway)


# Makes a machine past its deadline, as a gateway does, then dies without destroying it.
LEFT_BY_A_DEAD_GATEWAY = """
import asyncio, os, sys, time
from uplodr.machines.base import MachineSpec
from uplodr.machines.local import LocalProvider, base_env

async def main() -> None:
    now = int(time.time())
    provider = LocalProvider(
        sys.argv[1],
        command=lambda port: [sys.executable, "-c", "import time; time.sleep(600)"],
        env={**base_env(), "UPLODR_FAULT_RUN": sys.argv[2]},
    )
    tags = {"gateway": "dead", "created_at": str(now - 100), "deadline": str(now - 1)}
    machine = await provider.create(MachineSpec(env={}, tags=tags))
    print(machine.id, flush=True)
    os._exit(0)  # killed outright: nothing destroyed

asyncio.run(main())
"""


def test_a_running_serve_reaps_what_a_dead_gateway_left(tmp_path: Path, mark: str) -> None:
    state = tmp_path / "state"
    made = subprocess.run(
        [sys.executable, "-c", LEFT_BY_A_DEAD_GATEWAY, str(state), mark],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    left = made.stdout.strip()
    (orphan,) = marked_workers(mark)  # its worker outlived its gateway
    gateway = start_gateway(tmp_path, "--reap-interval", "0.2s")
    try:
        wait_until(
            lambda: gone(orphan) and not gateway.machine_records(),
            "the running gateway's reaper to destroy the orphan",
            30,
        )
        assert f"reaped machine {left}" in gateway.log_text()
    finally:
        stop_gateway(gateway)


def raw_create(fly: FlyApiServer, metadata: dict[str, str]) -> str:
    response = httpx.post(
        f"{fly.url}/v1/apps/{fly.app}/machines",
        headers={"Authorization": f"Bearer {fly.token}"},
        json={"config": {"image": "someone/else:1", "metadata": metadata}},
    )
    assert response.status_code == 200, response.text
    machine_id: str = response.json()["id"]
    return machine_id


def test_fly_reap_and_ls_from_a_separate_process(mark: str) -> None:
    with FlyApiServer(grpc_port=free_port(), process_factory=standin_process) as fly:
        fly.limit(0)
        env = fly_env(fly)
        now = int(time.time())
        marker = {MARKER_TAG: MARKER_VALUE, "gateway": "dead-gw", "job": "j"}
        expired = raw_create(
            fly, {**marker, "created_at": str(now - 600), "deadline": str(now - 10)}
        )
        fresh = raw_create(fly, {**marker, "created_at": str(now), "deadline": str(now + 600)})
        untagged = raw_create(fly, {"role": "database", "deadline": str(now - 10)})
        imposter = raw_create(fly, {MARKER_TAG: "something-else", "deadline": str(now - 10)})

        listed = json.loads(cli("machines", "ls", "--provider", "fly", "--json", env=env))
        assert sorted(m["id"] for m in listed) == sorted([expired, fresh])
        out = cli("machines", "ls", "--provider", "fly", env=env)  # piped: a line per machine
        header, *rows = out.splitlines()
        assert header.split("\t") == ["id", "state", "address", "age", "gateway", "lease"]
        assert sorted(row.split("\t")[0] for row in rows) == sorted([expired, fresh])
        assert "dead-gw" in out

        # the default reap: only what is past its deadline (or older than 1h)
        assert "1 stale, 1 destroyed, 0 failed" in cli("reap", "--provider", "fly", env=env)
        reaped = fly.machine(expired)
        assert reaped is not None and reaped.state == "destroyed"
        # an aggressive one takes every uplodr machine, and still nothing else
        assert "1 destroyed" in cli("reap", "--provider", "fly", "--older-than", "0s", env=env)
        alive = {m.id for m in fly.snapshot()}
        assert alive == {untagged, imposter}


@pytest.mark.timeout(180)
def test_fly_worker_of_a_killed_gateway_ends_itself(
    tmp_path: Path, swift: SwiftServer, bucket: str, fly: FlyApiServer, mark: str
) -> None:
    with fly_gateway(tmp_path, swift, bucket, fly) as gateway:
        upload_in_background(gateway.url, corpus_file("craft-beer.jpg"))
        found: list[psutil.Process] = []

        def busy() -> bool:
            # The simulator's own machines' processes: the gateway carries the mark too (it
            # inherits the test's environment) and uses CPU time of its own while it starts.
            proc = converting(
                [m.process.pid for m in fly.snapshot() if isinstance(m.process, subprocess.Popen)]
            )
            if proc is not None:
                found.append(proc)
            return proc is not None

        wait_until(busy, "a worker machine to be converting", 60)
        assert fly.machines_alive == 1
        gateway.kill()
        took = wait_until(lambda: fly.machines_alive == 0, "the orphan machine to end", 30)
        assert took <= IDLE_TIMEOUT + MARGIN, f"the orphan lived {took:.1f}s"
        # it ended itself: flyd's auto_destroy after its process exited, no DELETE
        assert fly.destroyed == {"flyd": 1} and fly.calls["delete"] == 0
        assert gone(found[0])
        env = {**fly_env(fly, regions="")}
        assert json.loads(cli("machines", "ls", "--provider", "fly", "--json", env=env)) == []
