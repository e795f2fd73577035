"""A 300 MB body is refused with 413 while it arrives: with a declared Content-Length before one
byte of it is read, chunked as soon as it passes the limit. The gateway's memory stays small, the
connection is closed, nothing is left on disk, no machine is created, and the gateway is fine."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import pytest

from tests.hostile.support import machines_created, peak_rss_mb
from tests.support.gateway import Gateway, running_gateway

BODY = 300 * 1024 * 1024
LIMIT = 64 * 1024 * 1024  # uplodr serve's default --max-upload
CHUNK = 1024 * 1024
GROWTH_MB = 50


@dataclass
class Served:
    gateway: Gateway
    spool: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("body-limit")
    spool = root / "tmp"
    spool.mkdir()
    with running_gateway(root, env={"TMPDIR": str(spool)}) as gateway:
        yield Served(gateway, spool)


def connect(gateway: Gateway) -> socket.socket:
    parts = urlsplit(gateway.url)
    assert parts.hostname and parts.port
    sock = socket.create_connection((parts.hostname, parts.port), timeout=60)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or resets) the connection."""
    received = bytearray()
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        received.extend(data)
    return bytes(received)


def assert_413(answer: bytes) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"connection: close" in head.lower()
    # The limit in the units it is given in (--max-upload 64MiB), not 67108864 bytes.
    assert json.loads(body) == {
        "error": "upload is larger than the limit of 64 MiB",
        "code": "too_large",
    }


def rss_mb(gateway: Gateway) -> float:
    return psutil.Process(gateway.process.pid).memory_info().rss / (1024 * 1024)


def assert_unharmed(served: Served, rss_before: float, peak_before: float) -> None:
    gateway = served.gateway
    assert httpx.get(f"{gateway.url}/healthz", timeout=10).status_code == 200
    assert rss_mb(gateway) - rss_before < GROWTH_MB
    assert peak_rss_mb(gateway.process.pid) - peak_before < GROWTH_MB
    assert list(served.spool.iterdir()) == []  # the partial spool file is gone
    assert machines_created(gateway) == []


def test_declared_300_mb_is_refused_before_the_body_is_read(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway = served.gateway
    rss_before, peak_before = rss_mb(gateway), peak_rss_mb(gateway.process.pid)
    with connect(gateway) as sock:
        # Only the head is sent: the answer comes without waiting for one byte of the body.
        sock.sendall(
            b"POST /v1/images?name=huge.jpg HTTP/1.1\r\nHost: uplodr\r\n"
            b"Content-Type: application/octet-stream\r\n"
            + f"Content-Length: {BODY}\r\n\r\n".encode()
        )
        assert_413(read_until_closed(sock))
    assert_unharmed(served, rss_before, peak_before)
    with capsys.disabled():
        print(f"\ndeclared 300 MB: gateway RSS {rss_before:.0f} -> {rss_mb(gateway):.0f} MB")


def send_chunked(gateway: Gateway, head: bytes, pieces: Iterator[bytes]) -> tuple[bytes, int]:
    """Send `pieces` as a chunked body until the gateway closes the connection; its answer and
    how many body bytes were sent."""
    sent = 0
    with connect(gateway) as sock:
        sock.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n")
        answer: list[bytes] = []
        reader = threading.Thread(target=lambda: answer.append(read_until_closed(sock)))
        reader.start()
        try:
            for piece in pieces:
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                sent += len(piece)
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway closed the connection at the limit
        reader.join(timeout=60)
    assert answer, "no answer"
    return answer[0], sent


def test_chunked_300_mb_is_cut_off_at_the_limit(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway = served.gateway
    rss_before, peak_before = rss_mb(gateway), peak_rss_mb(gateway.process.pid)
    piece = b"\xff\xd8\xff" + bytes(CHUNK - 3)
    answer, sent = send_chunked(
        gateway,
        b"POST /v1/images?name=huge.jpg HTTP/1.1\r\nHost: uplodr\r\n"
        b"Content-Type: application/octet-stream\r\n",
        (piece for _ in range(BODY // CHUNK)),
    )
    assert_413(answer)
    # Cut off near the limit (plus what socket buffers held), far from the whole body.
    assert LIMIT <= sent < LIMIT + 64 * 1024 * 1024
    assert_unharmed(served, rss_before, peak_before)
    with capsys.disabled():
        print(
            f"\nchunked 300 MB: cut off after {sent / 2**20:.0f} MB sent; gateway RSS "
            f"{rss_before:.0f} -> {rss_mb(gateway):.0f} MB, "
            f"peak {peak_rss_mb(gateway.process.pid):.0f} MB"
        )


def test_chunked_multipart_300_mb_is_cut_off_at_the_limit(served: Served) -> None:
    gateway = served.gateway
    rss_before, peak_before = rss_mb(gateway), peak_rss_mb(gateway.process.pid)

    def parts() -> Iterator[bytes]:
        yield (
            b"--b\r\nContent-Disposition: form-data; name=file; filename=a.jpg\r\n"
            b"Content-Type: image/jpeg\r\n\r\n\xff\xd8\xff"
        )
        for _ in range(BODY // CHUNK):
            yield bytes(CHUNK)
        yield b"\r\n--b--\r\n"

    answer, sent = send_chunked(
        gateway,
        b"POST /v1/images HTTP/1.1\r\nHost: uplodr\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n",
        parts(),
    )
    assert_413(answer)
    assert sent < LIMIT + 64 * 1024 * 1024
    assert_unharmed(served, rss_before, peak_before)
