"""An over-long request target or header block gets an answer — 414 or 431, JSON like every
other error, the connection closed — not a connection reset (a 200 KB query string once reset
the connection before any answer could be read)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.gateway import Gateway, running_gateway


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running_gateway(tmp_path_factory.mktemp("head-limit")) as running:
        yield running


def exchange(gateway: Gateway, request: bytes) -> bytes:
    """Send a whole request over a raw socket and read the answer until the server closes."""
    parts = urlsplit(gateway.url)
    assert parts.hostname and parts.port
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(request)
        received = bytearray()
        while data := sock.recv(65536):  # a reset raises here and fails the test
            received.extend(data)
    return bytes(received)


def refusal(answer: bytes) -> tuple[int, dict[str, str]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower(), head
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize("path", ["/v1/images?name=a.jpg&alt=", "/healthz?x="])
def test_a_200_kb_query_string_is_a_414(gateway: Gateway, path: str) -> None:
    for _ in range(3):  # every time, not by luck of timing
        answer = exchange(
            gateway,
            f"POST {path}{'a' * 200_000} HTTP/1.1\r\nHost: uplodr\r\n".encode()
            + b"Content-Length: 0\r\n\r\n",
        )
        status, body = refusal(answer)
        assert status == 414
        assert body == {
            "error": "the request's path and query are 195.3 KiB; at most 16 KiB",
            "code": "uri_too_long",
        }
    assert httpx.get(f"{gateway.url}/healthz").status_code == 200


def test_a_200_kb_header_is_a_431(gateway: Gateway) -> None:
    answer = exchange(
        gateway,
        b"GET /healthz HTTP/1.1\r\nHost: uplodr\r\n"
        + f"X-Padding: {'b' * 200_000}\r\n\r\n".encode(),
    )
    status, body = refusal(answer)
    assert status == 431
    assert body["code"] == "headers_too_large"
    assert body["error"].endswith("; at most 32 KiB")


def test_a_long_but_fair_request_is_served(gateway: Gateway) -> None:
    # The longest alt text (1000 characters, each 3 UTF-8 bytes percent-encoded) fits.
    answer = httpx.post(
        f"{gateway.url}/v1/images", params={"name": "a.jpg", "alt": "é" * 1000}, content=b""
    )
    assert answer.status_code == 400 and answer.json()["code"] == "invalid_request"  # empty body
