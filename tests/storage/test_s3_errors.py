"""obstore's errors, as they really come: a real Swift server and real sockets driven into each
class of failure, read by `storage.s3_errors.classify`. What obstore says only in its message
text (status, S3 code, transport kind) is read from that text, so these fail if its wording
changes."""

from __future__ import annotations

import socket
import threading
from collections.abc import Awaitable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import obstore
import pytest
from obstore.exceptions import (
    AlreadyExistsError,
    GenericError,
    PermissionDeniedError,
)
from obstore.store import S3Store

from tests.support.procs import free_port
from tests.support.swift import SwiftServer
from uplodr.storage.s3_errors import Failure, Kind, classify, explain


def raw_store(endpoint: str, bucket: str, secret: str = "testing") -> S3Store:
    """obstore itself, without uplodr's wrapper: its errors exactly as it raises them."""
    return S3Store(
        bucket,
        config={
            "endpoint": endpoint,
            "region": "us-east-1",
            "access_key_id": "test:tester",
            "secret_access_key": secret,
        },
        client_options={
            "allow_http": True,
            "timeout": timedelta(seconds=1),
            "connect_timeout": timedelta(seconds=1),
        },
        retry_config={"max_retries": 0},
    )


async def failure_of(call: Awaitable[object], expected: type[BaseException]) -> Failure:
    with pytest.raises(expected) as caught:
        await call
    return classify(caught.value)


async def test_swift_refusals(swift: SwiftServer, bucket: str) -> None:
    store = raw_store(swift.endpoint, bucket)
    await obstore.put_async(store, "taken", b"x")

    taken = await failure_of(
        obstore.put_async(store, "taken", b"y", mode="create"), AlreadyExistsError
    )
    assert taken == Failure("exists", 412, "PreconditionFailed")

    missing_key = await failure_of(obstore.get_async(store, "nope"), FileNotFoundError)
    assert missing_key == Failure("not_found", 404, "NoSuchKey")
    assert not missing_key.retryable

    wrong = raw_store(swift.endpoint, bucket, secret="not-the-secret")
    bad_put = await failure_of(obstore.put_async(wrong, "k", b"x"), PermissionDeniedError)
    assert bad_put == Failure("bad_credentials", 403, "SignatureDoesNotMatch")
    assert not bad_put.retryable
    # HEAD answers carry no body: only the type and the status are left
    bad_head = await failure_of(obstore.head_async(wrong, "k"), PermissionDeniedError)
    assert bad_head == Failure("denied", 403, "")

    short_name = raw_store(swift.endpoint, "b1")  # s3api wants 3 characters or more
    invalid = await failure_of(obstore.get_async(short_name, "k"), GenericError)
    assert invalid == Failure("refused", 400, "InvalidBucketName")
    assert not invalid.retryable


async def test_a_missing_bucket_whatever_the_call(swift: SwiftServer) -> None:
    store = raw_store(swift.endpoint, "no-such-bucket-here")
    for call, expected in [
        (obstore.get_async(store, "k"), FileNotFoundError),
        (obstore.put_async(store, "k", b"x"), FileNotFoundError),
        (obstore.list(store).collect_async(), GenericError),
    ]:
        failure = await failure_of(call, expected)
        assert failure == Failure("no_bucket", 404, "NoSuchBucket")
        assert not failure.retryable


async def test_transport_failures() -> None:
    refused = raw_store(f"http://127.0.0.1:{free_port()}", "bucket")
    failure = await failure_of(obstore.put_async(refused, "k", b"x"), GenericError)
    assert failure == Failure("connect") and failure.retryable

    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        quiet = raw_store(f"http://127.0.0.1:{silent.getsockname()[1]}", "bucket")
        failure = await failure_of(obstore.get_async(quiet, "k"), GenericError)
    assert failure == Failure("timeout") and failure.retryable


class _Answer(BaseHTTPRequestHandler):
    """Answers every request with the status and S3 error code the test set."""

    answer: tuple[int, str] = (500, "InternalError")

    def _reply(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status, code = self.answer
        body = f"<?xml version='1.0'?><Error><Code>{code}</Code></Error>".encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = _reply

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def answering() -> Iterator[ThreadingHTTPServer]:
    """An HTTP server that gives the status Swift cannot be asked for (throttling, 5xx)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        ((503, "SlowDown"), "throttled"),
        ((429, "TooManyRequests"), "throttled"),
        ((500, "InternalError"), "server"),
        ((502, "BadGateway"), "server"),
        ((408, "RequestTimeout"), "refused"),
    ],
)
async def test_status_answers(
    answering: ThreadingHTTPServer, answer: tuple[int, str], kind: Kind
) -> None:
    _Answer.answer = answer
    store = raw_store(f"http://127.0.0.1:{answering.server_address[1]}", "bucket")
    failure = await failure_of(obstore.put_async(store, "k", b"x"), GenericError)
    assert failure == Failure(kind, *answer)
    assert failure.retryable  # 408 included: the request may go again


def test_explanations_name_no_url_or_secret() -> None:
    text = (
        "Generic S3 error: Error performing PUT http://127.0.0.1:1/b/k in 1ms - Server returned "
        "non-2xx status code: 503 Service Unavailable: <Error><Code>SlowDown</Code></Error>"
    )
    assert explain(GenericError(text)) == (
        "the service kept throttling requests (SlowDown) until the deadline"
    )
    assert explain(GenericError(text.replace("503", "500").replace("SlowDown", "X"))) == (
        "the service kept failing (HTTP 500 X)"
    )
