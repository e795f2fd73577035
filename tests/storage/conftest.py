"""Fixtures for the storage tests: one real Swift (s3api) server for the session."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from tests.support.swift import SwiftServer
from uplodr.storage.s3 import S3Store

# Short enough for outage tests to finish quickly, long enough for a loaded CI machine.
TEST_DEADLINE_S = 3.0


@pytest.fixture
def bucket(swift: SwiftServer) -> str:
    """A fresh public-read bucket for one test."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    swift.create_bucket(name)
    return name


@pytest.fixture
def make_bucket(swift: SwiftServer) -> Callable[[], str]:
    def make() -> str:
        name = f"t-{uuid.uuid4().hex[:12]}"
        swift.create_bucket(name)
        return name

    return make


@pytest.fixture
def s3_store(swift: SwiftServer) -> Callable[..., S3Store]:
    """S3Store(bucket, prefix="", **overrides) wired to the test server through the AWS_* env."""

    def make(
        bucket: str, prefix: str = "", deadline_s: float = TEST_DEADLINE_S, **env: str
    ) -> S3Store:
        return S3Store.from_env(
            bucket,
            prefix,
            swift.s3_env(**env),
            public_url=swift.public_url(bucket),
            deadline_s=deadline_s,
        )

    return make


async def read_stream(chunks: AsyncIterator[bytes] | None) -> tuple[bytes, list[int]]:
    """A streamed read's bytes joined, and the size of each chunk."""
    assert chunks is not None, "the store has no such object"
    sizes: list[int] = []
    read = bytearray()
    async for chunk in chunks:
        sizes.append(len(chunk))
        read += chunk
    return bytes(read), sizes
