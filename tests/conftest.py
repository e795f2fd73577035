"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support.docker_engine import DockerEngine
from tests.support.docker_images import EngineImages, ensure_images
from tests.support.paths import missing_shared
from tests.support.swift import SwiftServer

# Property tests judge answers, not speed: Hypothesis' default 200 ms deadline per example turns
# a loaded CI machine into a failure (speed lives in bench/).
settings.register_profile("uplodr", deadline=None)
settings.load_profile("uplodr")


def pytest_configure(config: pytest.Config) -> None:
    # The real images and the providers' specs are ../shared: without them a third of the suite
    # could only skip, so the run stops here, in one line naming the path.
    if problem := missing_shared():
        raise pytest.UsageError(problem)
    # A gateway opened in the test process keeps its delete-token secret (and a default store)
    # in the data folder: a folder of this run's, never the user's ~/.local/share/uplodr.
    os.environ.setdefault("UPLODR_DATA_DIR", tempfile.mkdtemp(prefix="uplodr-test-data-"))


@pytest.fixture(scope="session")
def swift() -> Iterator[SwiftServer]:
    """A real Swift S3 server (s3api, SigV4), started once, only when a test asks for it."""
    server = SwiftServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


# A fresh clone pays debootstrap (~75 s idle, minutes on a loaded machine) and the image build in
# the setup of the first test that asks for the images; cached runs take seconds.
IMAGES_TIMEOUT_S = 1200


# The test command runs the suite on 2 processes (pytest-xdist, `--dist loadgroup`). Every test
# of a Docker engine goes to one of them, in file order: one private engine and one image build
# per run (not one per process), and the host-state tests see no other engine start mid-test.
DOCKER_GROUP = pytest.mark.xdist_group("docker")


def uses_docker(item: pytest.Item) -> bool:
    if item.path.parent.name == "docker":
        return True
    if {"docker_engine", "docker_images"} & set(getattr(item, "fixturenames", ())):
        return True
    callspec = getattr(item, "callspec", None)
    return callspec is not None and callspec.params.get("harness") == "docker"


@pytest.hookimpl(tryfirst=True)  # before xdist reads the group markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "docker_images" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(IMAGES_TIMEOUT_S))
        if uses_docker(item):
            item.add_marker(DOCKER_GROUP)


def one_engine_per_run() -> Path | None:
    """Under xdist, the first test process to start an engine claims the run; a second one
    fails at once (the Docker tests must share one engine: a second would build the images
    again, into the same cache)."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run is None:
        return None
    claim = Path(tempfile.gettempdir()) / f"uplodr-docker-run-{run}"
    try:
        claim.open("x").close()
    except FileExistsError:
        pytest.fail(
            "a second test process asked for the Docker engine: the Docker tests must run on one "
            "(xdist_group 'docker', tests/conftest.py)",
            pytrace=False,
        )
    return claim


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """A private dockerd (own socket, state, bridge; no iptables rules), started once, only when
    a test asks for it; stopped and removed with everything it made at the end."""
    claim = one_engine_per_run()
    engine = DockerEngine()
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()
        if claim is not None:
            claim.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def docker_images(docker_engine: DockerEngine) -> EngineImages:
    """The Debian base and uplodr's image built from the Dockerfile on it, in `docker_engine`
    (made once per session; cached under var/docker/cache between local runs)."""
    return ensure_images(docker_engine)
