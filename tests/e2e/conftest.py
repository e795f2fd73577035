from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway import Gateway, running_gateway


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running_gateway(tmp_path_factory.mktemp("gateway")) as running:
        yield running
        # Whatever the tests did, nothing may be left running once they are done.
        assert running.workers() == []
        assert running.machine_records() == []


@pytest.fixture(autouse=True)
def no_worker_left_after_each_test(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "gateway" in request.fixturenames:
        running: Gateway = request.getfixturevalue("gateway")
        assert running.workers() == [], "a worker process outlived its job"
        assert running.machine_records() == [], "a machine record outlived its job"


@pytest.fixture
def corpus() -> Path:
    from tests.support.paths import CORPUS

    if not CORPUS.is_dir():
        pytest.skip(f"test corpus {CORPUS} is absent")
    return CORPUS
