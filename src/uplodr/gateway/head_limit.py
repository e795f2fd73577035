"""ASGI middleware that refuses an over-long request head: a path and query over 16 KiB (414
`uri_too_long`) or headers over 32 KiB (431 `headers_too_large`), answered as JSON like every
other error, before any route runs.

uvicorn's HTTP parser (h11) reads a request head of up to `READ_HEAD_BYTES`; past that it can
only answer a plain-text 400 and close with the rest unread, which the client sees as a
connection reset (a 200 KB query string did, before any answer could be read). So the parser
reads up to 256 KiB — one such buffer per connection at most — and this middleware answers
anything over the API's own needs within that: the longest parameters (a 255-character name,
a 1000-character alt, percent-encoded) fit 16 KiB.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from uplodr.errors import HeadersTooLarge, UplodrError, UriTooLong, byte_size, status_of
from uplodr.gateway import metrics

MAX_TARGET_BYTES = 16 * 1024
MAX_HEADER_BYTES = 32 * 1024
READ_HEAD_BYTES = 256 * 1024  # uvicorn's h11_max_incomplete_event_size


def head_error(scope: Scope) -> UplodrError | None:
    """What is too long in this request's head, if anything."""
    target = len(scope.get("raw_path") or scope["path"].encode()) + 1 + len(scope["query_string"])
    if target > MAX_TARGET_BYTES:
        return UriTooLong(
            f"the request's path and query are {byte_size(target)}; "
            f"at most {byte_size(MAX_TARGET_BYTES)}"
        )
    headers = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
    if headers > MAX_HEADER_BYTES:
        return HeadersTooLarge(
            f"the request's headers are {byte_size(headers)}; at most {byte_size(MAX_HEADER_BYTES)}"
        )
    return None


async def send_refusal(send: Send, error: UplodrError) -> None:
    """`error` as the JSON answer every error gets (see gateway.app.error_response), from
    middleware that runs before the app; the connection is closed after it."""
    body = json.dumps({"error": str(error), "code": error.code}, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status_of(error).http,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class HeadLimit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = head_error(scope) if scope["type"] == "http" else None
        if error is None:
            await self.app(scope, receive, send)
            return
        metrics.count_error(scope.get("method", ""), scope["path"], error.code)
        await send_refusal(send, error)
