"""`uplodr serve --provider docker` on the tests' private engine, with the image built from the
repository's Dockerfile: a real photo converted in a limited container (which sends the outputs
back: it has no store) and served from the gateway's local store; a job that needs more memory
than the container has gets the 422; a container that exits while booting, and one whose image
cannot start, fail the job at once with their reason — and no container is ever left behind."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pyvips
from docker.models.containers import Container

from tests.support.docker_engine import DockerEngine
from tests.support.docker_images import EngineImages
from tests.support.docker_machines import (
    busy_container_process,
    docker_env,
    upload_photo,
    worker_containers,
)
from tests.support.gateway import Gateway, running_gateway
from tests.support.made import mime_types, of_json
from tests.support.paths import corpus_file
from tests.support.waiting import wait_for

MiB = 1024 * 1024
TOKEN = "gateway-secret-token"  # the gateway's own bearer token: never a worker's business
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def post(gateway: Gateway, photo: Path, **params: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/images",
        params={"name": photo.name, "folder": "docker", **params},
        content=photo.read_bytes(),
        headers=AUTH,
        timeout=300,
    )


def derived_image(engine: DockerEngine, image: str, tag: str, *changes: str) -> str:
    """`image` with Dockerfile-style `changes` (e.g. another ENTRYPOINT), as a new tag."""
    with engine.client() as client:
        container: Container = client.containers.create(image, ["true"])
        try:
            container.commit(repository="uplodr-test-derived", tag=tag, changes=list(changes))
        finally:
            container.remove(force=True)
    return f"uplodr-test-derived:{tag}"


def test_a_photo_is_converted_in_a_limited_container_and_nothing_is_left(
    docker_engine: DockerEngine, docker_images: EngineImages, tmp_path: Path
) -> None:
    photo = corpus_file("book-beside-flowers.jpg")  # 12 MP
    env = {**docker_env(docker_engine, docker_images.uplodr), "UPLODR_TOKENS": TOKEN}
    seen: dict[str, Any] = {}
    args = ("--machine-memory", "768M", "--machine-cpus", "1")
    with running_gateway(tmp_path / "gw", *args, env=env) as gateway:
        result: dict[str, httpx.Response] = {}
        upload = threading.Thread(target=lambda: result.update(response=post(gateway, photo)))
        upload.start()

        def running() -> bool:
            found = [c for c in worker_containers(docker_engine) if c["State"] == "running"]
            if found:
                with docker_engine.client() as client:
                    seen.update(client.api.inspect_container(found[0]["Id"]))
            return bool(found)

        wait_for(running, "the job's container to run")
        upload.join(timeout=300)
        response = result["response"]
        assert response.status_code == 200, response.text
        answer = response.json()
        left = worker_containers(docker_engine)  # the job's container is gone once it answered
        files = {v["mime_type"]: httpx.get(v["url"], timeout=30) for v in answer["variants"]}
        store = gateway.store
        turned = post(gateway, corpus_file("Landscape_6.jpg"))  # EXIF orientation 6
        turned_files = [httpx.get(v["url"], timeout=30) for v in turned.json()["variants"]]
    assert left == []
    assert worker_containers(docker_engine) == []

    # the formats that won (format_margin; JPEG always) and the thumbnail, served from its store
    assert sorted(files) == sorted([*mime_types(of_json(answer)), "image/png"])
    for variant in answer["variants"]:
        body = files[variant["mime_type"]].content
        assert len(body) == variant["size_bytes"]
        image = pyvips.Image.new_from_buffer(body, "")
        assert (image.width, image.height) == (variant["width"], variant["height"])
        image.avg()  # every pixel decodes
    sizes = {v["mime_type"]: (v["width"], v["height"]) for v in answer["variants"]}
    assert sizes["image/jpeg"] == (3024, 4032) and sizes["image/png"][0] == 800
    # upright: the orientation is applied, and no variant carries it any more
    assert turned.status_code == 200, turned.text
    for variant, fetched in zip(turned.json()["variants"], turned_files, strict=True):
        image = pyvips.Image.new_from_buffer(fetched.content, "")
        assert image.width > image.height and "orientation" not in image.get_fields()
        if variant["mime_type"] == "image/jpeg":
            assert (image.width, image.height) == (1800, 1200)
    written = [p for p in store.rglob("*") if p.is_file()]
    assert written and all(p.stat().st_uid == store.stat().st_uid for p in written)

    # the machine: the image's worker, the machine size as real limits, no privileges
    config, host = seen["Config"], seen["HostConfig"]
    assert config["Image"] == docker_images.uplodr
    assert config["Cmd"] == ["worker", "--grpc-addr", "0.0.0.0:50051"]
    assert host["Memory"] == host["MemorySwap"] == 768 * MiB
    assert host["NanoCpus"] == 1_000_000_000
    assert host["PidsLimit"] == 256
    assert host["ReadonlyRootfs"] is True and "/tmp" in host["Tmpfs"]
    assert host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges"]
    assert not host["Binds"] and config["User"] == "uplodr"  # no store: the image's own user
    labels = config["Labels"]
    assert labels["uplodr"] == "worker" and {"gateway", "lease", "deadline"} <= set(labels)
    # its environment: the image's own and the worker's settings, nothing of the gateway's
    variables = dict(item.split("=", 1) for item in config["Env"])
    assert variables["UPLODR_WORKER_TOKEN"] and variables["UPLODR_WORKER_TOKEN"] != TOKEN
    assert TOKEN not in json.dumps(config["Env"])
    assert "DOCKER_HOST" not in variables and "UPLODR_DOCKER_IMAGE" not in variables


def test_a_job_that_needs_more_memory_than_the_container_has_gets_422(
    docker_engine: DockerEngine, docker_images: EngineImages, tmp_path: Path
) -> None:
    """DESIGN.md: a full-resolution 24 MP AVIF needs 590-670 MB; the container has 512."""
    photo = corpus_file("craft-beer.jpg")  # 6000 x 4000
    preset = tmp_path / "full.json"
    preset.write_text(json.dumps({"max_long_side": 8000}))  # no downscale
    env = {**docker_env(docker_engine, docker_images.uplodr), "UPLODR_TOKENS": TOKEN}
    args = ("--machine-memory", "512M", "--preset", str(preset))
    with running_gateway(tmp_path / "gw", *args, env=env) as gateway:
        response = post(gateway, photo)
        left = worker_containers(docker_engine)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "limit_exceeded"
    assert body["error"] == (
        "the image needs more memory than the worker has: out of memory (512 MB limit)"
    )
    assert left == []


def test_a_container_that_exits_while_booting_fails_the_job_with_its_reason(
    docker_engine: DockerEngine, docker_images: EngineImages, tmp_path: Path
) -> None:
    # the worker's command line is refused: it exits with code 2 and one line, at once
    broken = derived_image(
        docker_engine,
        docker_images.uplodr,
        "bad-entrypoint",
        'ENTRYPOINT ["uplodr", "--no-such-option"]',
    )
    env = docker_env(docker_engine, broken)
    # a boot deadline far beyond the test's: only the container's exit can end the job
    with running_gateway(tmp_path / "gw", "--boot-timeout", "10m", env=env) as gateway:
        response = upload_photo(gateway.url)
        left = worker_containers(docker_engine)
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["code"] == "worker_unavailable"
    assert body["error"].startswith("worker stopped: exited with code 2: ")
    assert "--no-such-option" in body["error"] and "\n" not in body["error"]
    assert left == []


def test_an_image_that_cannot_start_a_worker_is_a_clear_provider_error(
    docker_engine: DockerEngine, docker_images: EngineImages, tmp_path: Path
) -> None:
    # the Debian base has no uplodr: the engine cannot even start the container
    env = docker_env(docker_engine, docker_images.base)
    with running_gateway(tmp_path / "gw", env=env) as gateway:
        response = upload_photo(gateway.url)
        left = worker_containers(docker_engine)
    assert response.status_code == 502, response.text
    body = response.json()
    assert body["code"] == "provider_error"
    assert body["error"].startswith(
        f"Docker engine refused to start a container of {docker_images.base}: "
    )
    assert "worker" in body["error"] and "\n" not in body["error"]
    assert left == []


def test_a_container_killed_mid_job_gives_503_with_its_reason_and_is_removed(
    docker_engine: DockerEngine, docker_images: EngineImages, tmp_path: Path
) -> None:
    photo = corpus_file("craft-beer.jpg")  # 24 MP: seconds of work
    env = docker_env(docker_engine, docker_images.uplodr)
    with running_gateway(tmp_path / "gw", env=env) as gateway:
        result: dict[str, httpx.Response] = {}
        upload = threading.Thread(target=lambda: result.update(response=post(gateway, photo)))
        upload.start()
        container, _ = busy_container_process(docker_engine)
        with docker_engine.client() as client:
            client.api.kill(container, "SIGKILL")
        upload.join(timeout=120)
        response = result["response"]
        left = worker_containers(docker_engine)
    assert response.status_code == 503, response.text
    assert response.json() == {
        "error": "worker stopped: killed by signal 9",
        "code": "worker_unavailable",
    }
    assert left == []
