"""ASGI middleware that refuses request bodies over a byte limit while they arrive.

A declared Content-Length over the limit is answered 413 before one byte of the body is read;
a chunked body is cut off as soon as it passes the limit. Either way a 300 MB body never sits
in the gateway's memory or disk.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from uplodr.errors import TooLarge
from uplodr.gateway import metrics
from uplodr.gateway.head_limit import send_refusal

log = logging.getLogger("uplodr.gateway")


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            metrics.count_error(scope["method"], scope["path"], TooLarge.code)
            log.info("upload refused: %d bytes declared, limit %d", int(declared), self.limit)
            await send_refusal(send, TooLarge.over_limit("upload", self.limit))
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise TooLarge.over_limit("upload", self.limit)
            return message

        await self.app(scope, limited_receive, send)
