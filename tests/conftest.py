"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.docker_engine import DockerEngine
from tests.support.swift import SwiftServer


@pytest.fixture(scope="session")
def swift() -> Iterator[SwiftServer]:
    """A real Swift S3 server (s3api, SigV4), started once, only when a test asks for it."""
    server = SwiftServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """A private dockerd (own socket, state, bridge; no iptables rules), started once, only when
    a test asks for it; stopped and removed with everything it made at the end."""
    engine = DockerEngine()
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()
