"""What the client retries, and how long it waits: only `busy`, as long as Retry-After says, in
both of the header's forms. The real gateway sends delay-seconds (tests/client/test_client.py
waits one out); the HTTP-date form and the errors that must not be retried are answered here by
a small real HTTP server that plays a scripted list of answers and records each request."""

from __future__ import annotations

import email.utils
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from uplodr.client import ApiError, AsyncClient, Busy, Client, Internal, WorkerUnavailable
from uplodr.client._upload import retry_after_seconds

CONVERSION = {
    "file_name": "a.png",
    "folder": "",
    "variants": [
        {
            "url": "http://x/a.webp",
            "mime_type": "image/webp",
            "width": 1,
            "height": 1,
            "size_bytes": 10,
        }
    ],
    "deduplicated": False,
    "timings": {"total": 0.1},
}


@dataclass
class Scripted:
    """Answers in order (status, headers, body); the last one repeats."""

    answers: list[tuple[int, dict[str, str], bytes]]
    bodies: list[bytes] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    clock: list[float] = field(default_factory=list)  # wall-clock time of each request
    url: str = ""


def error(status: int, code: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"error": f"{code} happened", "code": code}).encode()
    return status, {"content-type": "application/json", **headers}, body


OK = (200, {"content-type": "application/json"}, json.dumps(CONVERSION).encode())


@contextmanager
def scripted_server(*answers: tuple[int, dict[str, str], bytes]) -> Iterator[Scripted]:
    script = Scripted(list(answers))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            script.bodies.append(self.rfile.read(length))
            script.times.append(time.monotonic())
            script.clock.append(time.time())
            index = min(len(script.bodies), len(script.answers)) - 1
            status, headers, body = script.answers[index]
            self.send_response(status)
            for key, value in {**headers, "content-length": str(len(body))}.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    script.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield script
    finally:
        server.shutdown()
        server.server_close()


def test_retry_after_in_both_forms() -> None:
    now = 1_800_000_000.0
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(email.utils.formatdate(now + 30, usegmt=True), now=now) == 30.0
    assert retry_after_seconds(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    for unreadable in (None, "", "soon", "-3", "1.5e9"):
        assert retry_after_seconds(unreadable) is None


def test_busy_with_an_http_date_is_waited_out() -> None:
    not_before = int(time.time()) + 2  # an HTTP-date has whole seconds
    when = email.utils.formatdate(not_before, usegmt=True)
    busy = error(503, "busy", **{"retry-after": when})
    with scripted_server(busy, OK) as server, Client(server.url) as client:
        conversion = client.convert(b"\x89PNG body", name="a.png")
    assert conversion.file_name == "a.png"
    assert server.bodies == [b"\x89PNG body"] * 2  # sent whole again
    assert server.clock[1] >= not_before  # not tried again before the date it was given


async def test_the_async_client_waits_out_busy_seconds_too() -> None:
    answers = (error(503, "busy", **{"retry-after": "1"}), error(503, "busy"), OK)
    with scripted_server(*answers) as server:
        async with AsyncClient(server.url) as client:
            conversion = await client.convert(b"GIF89a...", name="a.gif")
    assert conversion.variants[0].format is None  # fields the server does not send yet
    assert len(server.bodies) == 3 and set(server.bodies) == {b"GIF89a..."}
    assert server.times[1] - server.times[0] >= 0.95  # Retry-After: 1
    # No Retry-After on the second busy: stamina's own exponential backoff (from 0.5 s).
    assert server.times[2] - server.times[1] >= 0.45


@pytest.mark.parametrize(
    ("answer", "raised"),
    [
        (error(503, "worker_unavailable"), WorkerUnavailable),
        (error(500, "internal"), Internal),
        (error(503, "busy", **{"retry-after": "3600"}), Busy),  # beyond busy_timeout
        ((502, {"content-type": "text/html"}, b"<h1>Bad gateway</h1>"), ApiError),
    ],
)
def test_nothing_else_is_retried(
    answer: tuple[int, dict[str, str], bytes], raised: type[ApiError]
) -> None:
    with (
        scripted_server(answer, OK) as server,
        Client(server.url, busy_timeout=60) as client,
        pytest.raises(raised) as failed,
    ):
        client.convert(b"GIF89a", name="a.gif")
    assert len(server.bodies) == 1
    assert failed.value.status == answer[0]
    if raised is ApiError:
        assert failed.value.code == "http_error" and "Bad gateway" in failed.value.message
    if raised is Busy:
        assert failed.value.retry_after == 3600


def test_an_answer_that_is_not_a_conversion_is_an_error() -> None:
    not_a_conversion = (200, {"content-type": "application/json"}, b'{"variants": 3}')
    with (
        scripted_server(not_a_conversion) as server,
        Client(server.url) as client,
        pytest.raises(ApiError) as failed,
    ):
        client.convert(b"GIF89a", name="a.gif")
    assert failed.value.code == "invalid_answer"


def test_a_busy_timeout_of_zero_never_retries() -> None:
    busy = error(503, "busy", **{"retry-after": "1"})
    with (
        scripted_server(busy, OK) as server,
        Client(server.url, busy_timeout=0) as client,
        pytest.raises(Busy),
    ):
        client.convert(b"GIF89a", name="a.gif")
    assert len(server.bodies) == 1
