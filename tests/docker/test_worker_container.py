"""`uplodr worker` in a container with a machine's real limits: it answers Ping and converts a
photo streamed from the host over gRPC, sending the outputs back on the call (it has no store);
a job that needs more memory than the container has is OOM-killed by the kernel; the worker sees
only its own env; the image writes JPEG XL and repacks a kept JPEG as JPEG XL."""

from __future__ import annotations

import json
import os
from pathlib import Path

import imagecodecs
import pytest
import pyvips

from tests.imaging import js_decoders
from tests.support.docker_engine import DockerEngine
from tests.support.docker_images import EngineImages
from tests.support.docker_worker import LIMITS, process_env, worker_container
from tests.support.made import of_proto
from tests.support.paths import corpus_file
from uplodr.dispatch.worker_client import UploadSource, WorkerClient
from uplodr.errors import WorkerUnavailable
from uplodr.preset import DEFAULT_PRESET

MiB = 1024 * 1024


def client_for(address: str, token: str) -> WorkerClient:
    return WorkerClient(address, token, 64 * MiB, 256 * 1024)


async def test_a_limited_worker_container_converts_a_photo_streamed_from_the_host(
    docker_engine: DockerEngine, docker_images: EngineImages, tmp_path: Path
) -> None:
    photo = corpus_file("book-beside-flowers.jpg")  # 12 MP
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    with (
        docker_engine.client() as docker,
        worker_container(docker, docker_images.uplodr) as worker,
    ):
        host_config = worker.container.attrs["HostConfig"]
        client = client_for(worker.address, worker.token)
        try:
            await client.wait_ready(60)
            await client.ping(10)
            source = UploadSource(photo, photo.name, "docker", outputs=outputs)
            (answer,) = await client.stream([source], 300)
        finally:
            await client.close()
        env = process_env(worker.container)
        write = worker.container.exec_run(["sh", "-c", "echo x > /opt/probe"])
    assert host_config["Memory"] == host_config["MemorySwap"] == 512 * MiB
    assert host_config["NanoCpus"] == LIMITS["nano_cpus"]
    assert host_config["PidsLimit"] == LIMITS["pids_limit"]
    assert host_config["ReadonlyRootfs"] is True
    assert host_config["CapDrop"] == ["ALL"]
    assert host_config["SecurityOpt"] == ["no-new-privileges"]
    assert write.exit_code != 0 and b"Read-only file system" in write.output

    # the formats that won (format_margin; JPEG always) and the thumbnail
    assert len(answer.variants) == len(of_proto(answer)) + 1
    for index, variant in enumerate(answer.variants):
        stored = outputs / str(index)  # sent back by the worker, written by the gateway's side
        assert stored.stat().st_size == variant.size_bytes
        image = pyvips.Image.new_from_file(str(stored))
        assert (image.width, image.height) == (variant.width, variant.height)
        image.avg()  # decodes every pixel

    # The worker's environment: what the image sets and what the test gave, nothing of ours.
    given = set(worker.env)
    assert given <= set(env)
    image_env = {"PATH", "LANG", "MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_"}
    image_env |= {"PYTHONDONTWRITEBYTECODE"}
    image_env |= {"PYTHONUNBUFFERED", "UPLODR_DATA_DIR", "UPLODR_HOST", "UPLODR_PORT"}
    runtime_env = {"HOSTNAME", "HOME"}  # set by the engine for every container
    assert set(env) - given - image_env - runtime_env == set()
    host_only = {k for k in os.environ if k not in given | image_env | runtime_env}
    assert host_only and not host_only & set(env)


async def test_a_full_resolution_24mp_photo_is_oom_killed_under_512m(
    docker_engine: DockerEngine, docker_images: EngineImages, tmp_path: Path
) -> None:
    """The limit is real: a full-resolution 24 MP AVIF peaks at 590-670 MB (README, presets)."""
    photo = corpus_file("craft-beer.jpg")  # 6000 x 4000
    preset = json.loads(DEFAULT_PRESET.to_json())
    preset["max_long_side"] = 8000  # no downscale
    env = {"UPLODR_PRESET": json.dumps(preset)}
    with (
        docker_engine.client() as docker,
        worker_container(docker, docker_images.uplodr, env) as worker,
    ):
        client = client_for(worker.address, worker.token)
        try:
            await client.wait_ready(60)
            with pytest.raises(WorkerUnavailable):
                await client.stream([UploadSource(photo, photo.name, "oom")], 300)
        finally:
            await client.close()
        status = worker.container.wait(timeout=60)
        worker.container.reload()
        state = worker.container.attrs["State"]
    assert status["StatusCode"] == 137
    assert state["OOMKilled"] is True


async def test_the_worker_image_writes_jpeg_xl_and_repacks_a_jpeg_original(
    docker_engine: DockerEngine, docker_images: EngineImages, tmp_path: Path
) -> None:
    # The image carries libjxl (the imagecodecs wheel of the lock's server extra).
    photo = corpus_file("Landscape_6.jpg")
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    preset = DEFAULT_PRESET.with_changes(formats=["jxl", "webp"], original_jxl=True)
    with (
        docker_engine.client() as docker,
        worker_container(docker, docker_images.uplodr) as worker,
    ):
        client = client_for(worker.address, worker.token)
        try:
            await client.wait_ready(60)
            source = UploadSource(
                photo, photo.name, "docker", preset.to_json(), "keep", outputs=outputs
            )
            (answer,) = await client.stream([source], 300)
        finally:
            await client.close()
    kinds = [(v.format, v.role) for v in answer.variants]
    assert kinds == [("jxl", "full"), ("webp", "full"), ("png", "thumbnail"), ("jxl", "original")]
    jxl = answer.variants[0]
    decoded = js_decoders.decode_jxl((outputs / "0").read_bytes())
    assert (decoded.width, decoded.height) == (jxl.width, jxl.height) == (1800, 1200)
    restored = imagecodecs.jpegxl_decode_jpeg((outputs / "3").read_bytes(), numthreads=1)
    assert bytes(restored) == photo.read_bytes()
