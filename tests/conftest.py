"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
