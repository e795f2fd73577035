"""A gateway SIGKILLed mid-job leaves its container behind: the worker in it ends itself within
its idle deadline, `uplodr machines ls --provider docker` shows it by its labels, and `uplodr
reap` removes it — and never a container that is not uplodr's."""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path

import httpx

from tests.support.docker_engine import DockerEngine
from tests.support.docker_images import EngineImages
from tests.support.docker_machines import docker_env, uplodr, worker_containers
from tests.support.docker_standin import standin_image
from tests.support.gateway import start_gateway
from tests.support.paths import corpus_file
from tests.support.waiting import wait_for


def test_reap_removes_the_container_of_a_dead_gateway_and_nothing_else(
    docker_engine: DockerEngine, docker_images: EngineImages, tmp_path: Path
) -> None:
    env = docker_env(docker_engine, docker_images.uplodr)
    with docker_engine.client() as client:  # someone else's container on the same engine
        stranger = client.containers.run(
            standin_image(client), labels={"role": "database"}, detach=True
        )
    try:
        gateway = start_gateway(tmp_path / "gw", "--worker-idle-timeout", "3s", env=env)
        photo = corpus_file("craft-beer.jpg")
        upload = threading.Thread(
            target=lambda: _quietly_post(gateway.url, photo), name="doomed upload"
        )
        upload.start()
        wait_for(
            lambda: any(c["State"] == "running" for c in worker_containers(docker_engine)),
            "the job's container to run",
        )
        gateway.process.kill()  # SIGKILL: no shutdown, no destroy
        gateway.process.wait()
        upload.join(timeout=60)
        (orphan,) = worker_containers(docker_engine)
        name = orphan["Names"][0].lstrip("/")

        # the worker ends itself (its gateway's connection is gone), the container stays
        wait_for(
            lambda: worker_containers(docker_engine)[0]["State"] == "exited",
            "the orphaned worker to end itself",
        )
        listed = uplodr("machines", "ls", "--json", env=env)
        assert listed.returncode == 0, listed.stderr
        (machine,) = json.loads(listed.stdout)
        assert machine["id"] == name and machine["state"] == "stopped"
        assert machine["tags"]["uplodr"] == "worker" and machine["tags"]["gateway"]

        table = uplodr("machines", "ls", env=env)  # piped: whole values, tab-separated
        _, row = table.stdout.splitlines()
        assert row.split("\t")[:2] == [name, "stopped"]

        reaped = uplodr("reap", env=env)
        assert reaped.returncode == 0, reaped.stderr
        assert f"destroyed {name} (stopped, " in reaped.stdout
        assert reaped.stdout.rstrip().endswith("1 stale, 1 destroyed, 0 failed")
        assert worker_containers(docker_engine) == []
        stranger.reload()
        assert stranger.status == "running"  # not uplodr's: untouched
    finally:
        stranger.remove(force=True)


def _quietly_post(url: str, photo: Path) -> None:
    # its gateway is killed mid-job: the connection breaks
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(
            f"{url}/v1/images",
            params={"name": photo.name},
            content=photo.read_bytes(),
            timeout=60,
        )
