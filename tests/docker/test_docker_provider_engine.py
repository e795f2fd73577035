"""The Docker provider and its engine: `check()` and `uplodr doctor` say in one line what would
stop a machine from starting (engine unreachable, image or network missing); an engine that is
not there makes every call a prompt WorkerUnavailable naming it; and an engine stopped in the
middle of a job gives the client a 503 and, once it is back, leaves no container behind while
the next job succeeds."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest

from tests.support.docker_engine import DockerEngine
from tests.support.docker_images import EngineImages, ensure_images
from tests.support.docker_machines import (
    alive,
    busy_container_process,
    docker_env,
    start_daemon,
    stop_daemon,
    uplodr,
    worker_containers,
)
from tests.support.docker_standin import standin_image
from tests.support.gateway import running_gateway
from tests.support.paths import corpus_file
from tests.support.waiting import wait_for
from uplodr.errors import NotCreated, ProviderError, WorkerUnavailable
from uplodr.machines.base import MachineSpec
from uplodr.machines.docker import DockerConfig, DockerProvider


def provider_for(engine_env: dict[str, str], image: str, **options: str | None) -> DockerProvider:
    return DockerProvider(
        DockerConfig(image=image, engine_env=engine_env, network=options.get("network"))
    )


async def test_check_passes_when_the_engine_answers_and_has_the_image(
    docker_engine: DockerEngine, docker_images: EngineImages
) -> None:
    provider = provider_for(docker_engine.env(), docker_images.uplodr, network="bridge")
    try:
        await provider.check()
    finally:
        await provider.aclose()


@pytest.mark.parametrize(
    ("image", "network", "message"),
    [
        (
            "uplodr-test:missing",
            None,
            r"^image uplodr-test:missing is not in the Docker engine at unix://\S+ "
            r"\(build it there: docker build -t uplodr-test:missing \.\)$",
        ),
        (None, "no-such-net", r"^network no-such-net does not exist in the Docker engine"),
        ("", None, r"^the Docker provider needs --docker-image \(UPLODR_DOCKER_IMAGE\)"),
    ],
)
async def test_check_names_what_the_engine_lacks(
    docker_engine: DockerEngine,
    docker_images: EngineImages,
    image: str | None,
    network: str | None,
    message: str,
) -> None:
    chosen = docker_images.uplodr if image is None else image
    provider = provider_for(docker_engine.env(), chosen, network=network)
    try:
        with pytest.raises(ProviderError, match=message):
            await provider.check()
    finally:
        await provider.aclose()


async def test_an_engine_that_is_not_there_is_an_outage_on_every_call(tmp_path: Path) -> None:
    host = f"unix://{tmp_path}/docker.sock"
    provider = provider_for({"DOCKER_HOST": host}, "uplodr:any")
    unreachable = f"^Docker engine at {host} is unreachable: No such file or directory$"
    try:
        with pytest.raises(WorkerUnavailable, match=unreachable):
            await provider.check()
        # the request never left: nothing was made, nobody needs to look for it
        with pytest.raises(NotCreated, match=unreachable):
            await provider.create(MachineSpec(env={}, tags={"job": "j"}))
        with pytest.raises(WorkerUnavailable, match=unreachable) as listing:
            await provider.list({})
        assert not isinstance(listing.value, NotCreated)
        with pytest.raises(WorkerUnavailable, match=unreachable):
            await provider.destroy("uplodr-000000000000")
    finally:
        await provider.aclose()


def test_serve_without_its_engine_answers_503_at_once_and_looks_for_nothing(
    tmp_path: Path,
) -> None:
    host = f"unix://{tmp_path}/docker.sock"  # no engine there
    env = {"DOCKER_HOST": host, "UPLODR_PROVIDER": "docker", "UPLODR_DOCKER_IMAGE": "uplodr:x"}
    with running_gateway(tmp_path / "gw", env=env) as gateway:
        response = httpx.post(
            f"{gateway.url}/v1/images",
            params={"name": "photo.jpg"},
            content=corpus_file("Landscape_6.jpg").read_bytes(),
            timeout=120,
        )
        log = gateway.log_text()
    assert response.status_code == 503, response.text
    assert response.json() == {
        "error": f"Docker engine at {host} is unreachable: No such file or directory",
        "code": "worker_unavailable",
    }
    # the create certainly made nothing: no search for its container (which would retry
    # against the missing engine until the destroy deadline), nothing left to the reaper
    assert "could not look for it" not in log and "left to the reaper" not in log


def test_doctor_says_each_check_in_one_line(
    docker_engine: DockerEngine, docker_images: EngineImages, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    good = uplodr(
        "doctor", "--store", str(store), env=docker_env(docker_engine, docker_images.uplodr)
    )
    assert good.returncode == 0, good.stderr
    assert good.stdout.splitlines() == [
        "ok      provider docker: can start a machine",
        f"ok      store {store}: writable",
    ]
    assert list(store.iterdir()) == []  # the check object is gone

    host = f"unix://{tmp_path}/nothing.sock"
    env = {**docker_env(docker_engine, docker_images.uplodr), "DOCKER_HOST": host}
    bad = uplodr("doctor", "--store", str(tmp_path / "new" / "store"), env=env)
    assert bad.returncode == 1
    assert bad.stdout.splitlines() == [
        f"failed  provider docker: Docker engine at {host} is unreachable: No such file or "
        "directory",
        f"ok      store {tmp_path / 'new' / 'store'}: does not exist yet; serve creates it",
    ]
    assert "Traceback" not in bad.stderr

    missing = uplodr("doctor", env=docker_env(docker_engine, "uplodr-test:missing"))
    assert missing.returncode == 1
    assert missing.stdout.splitlines()[0].startswith(
        "failed  provider docker: image uplodr-test:missing is not in the Docker engine"
    )


def test_serve_with_an_image_the_engine_lacks_stops_at_start_in_one_line(
    docker_engine: DockerEngine, tmp_path: Path
) -> None:
    """A configuration that cannot work stops start-up, as an unwritable store does (an engine
    that is only down now does not: see the next test's /readyz)."""
    env = {**docker_env(docker_engine, "uplodr-test:missing"), "UPLODR_DATA_DIR": str(tmp_path)}
    done = uplodr("serve", "--port", "0", "--store", str(tmp_path / "store"), env=env)
    assert done.returncode == 2
    assert done.stderr.startswith(
        "uplodr serve: provider docker: image uplodr-test:missing is not in the Docker engine"
    )
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert worker_containers(docker_engine) == []


def readyz(url: str) -> httpx.Response:
    return httpx.get(f"{url}/readyz", timeout=30)


def test_an_engine_stopped_mid_job_gives_503_and_leaves_nothing_once_back(
    docker_images: EngineImages, tmp_path: Path
) -> None:
    """Its own engine (the session's stays up): stopped while the worker converts, started
    again while the gateway still tries to remove the container. A stopping engine gives its
    containers SIGTERM and SIGKILL after their stop timeout (10 s); the worker finishes a job in
    flight on SIGTERM if it can, so the job here is one that cannot: a slow AVIF encode
    (effort 6, ~5x the default's CPU) of a 24 MP photo on one CPU."""
    presets = tmp_path / "presets.json"
    presets.write_text(json.dumps({"slow": {"avif_effort": 6}}))
    with DockerEngine(keep_data=False) as engine:
        image = ensure_images(engine).uplodr  # loaded from the cache the session filled
        env = docker_env(engine, image)
        args = ("--machine-cpus", "1", "--presets", str(presets))
        with running_gateway(tmp_path / "gw", *args, env=env) as gateway:
            photo = corpus_file("craft-beer.jpg")  # 24 MP
            result: dict[str, httpx.Response] = {}

            def upload(name: str, **params: str) -> None:
                result[name] = httpx.post(
                    f"{gateway.url}/v1/images",
                    params={"name": photo.name, **params},
                    content=photo.read_bytes(),
                    timeout=300,
                )

            first = threading.Thread(target=upload, args=("first",), kwargs={"preset": "slow"})
            first.start()
            _, worker = busy_container_process(engine)
            stop_daemon(engine)
            wait_for(lambda: not alive(worker), "the engine to stop the worker")
            assert first.is_alive()  # the gateway still tries to remove the container
            wait_for(lambda: readyz(gateway.url).status_code == 503, "/readyz to see the outage")
            unready = readyz(gateway.url).json()
            start_daemon(engine)
            first.join(timeout=120)
            wait_for(lambda: readyz(gateway.url).status_code == 200, "/readyz to be ready again")
            response = result["first"]
            after_restart = worker_containers(engine)

            photo = corpus_file("book-beside-flowers.jpg")
            upload("second")
            left = worker_containers(engine)
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["code"] == "worker_unavailable"
    assert body["error"].startswith("worker stopped") and "\n" not in body["error"]
    # Readiness named the provider (the local store stayed writable) while the engine was down.
    assert [c["name"] for c in unready["checks"] if not c["ok"]] == ["provider"]
    # the check and the kind of failure, never the failure's text (the engine's socket path)
    assert unready["error"] == "provider: docker: failed (worker_unavailable)"
    assert "readiness check provider failed: Docker engine at unix://" in gateway.log_text()
    assert after_restart == []
    assert result["second"].status_code == 200, result["second"].text
    assert left == []


async def test_a_machine_larger_than_the_engine_is_refused_in_its_words(
    docker_engine: DockerEngine,
) -> None:
    with docker_engine.client() as client:
        image = standin_image(client)
    provider = DockerProvider(DockerConfig(image=image, cpus=512, engine_env=docker_engine.env()))
    try:
        with pytest.raises(ProviderError) as refused:
            await provider.create(MachineSpec(env={}, tags={"job": "big"}))
        assert await provider.list({}) == []  # nothing was left of it
    finally:
        await provider.aclose()
    message = str(refused.value)
    assert message.startswith(f"Docker engine refused to create a container of {image}: ")
    assert "CPU" in message and "\n" not in message
