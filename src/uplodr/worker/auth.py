"""Per-machine token check: every call but health checks needs `authorization: Bearer <token>`.

The gateway creates a fresh token for each machine and passes it in UPLODR_WORKER_TOKEN, so a
tool on the same private network cannot use a worker it did not start.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


def _denied(handler: Any) -> Any:
    async def deny(_request: Any, context: grpc.aio.ServicerContext) -> Any:
        context.set_trailing_metadata((("uplodr-error", "unauthenticated"),))
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong worker token")

    if handler is None:
        return None
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny)
    return grpc.unary_unary_rpc_method_handler(deny)


class TokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler_call_details.method.startswith(OPEN_PREFIXES):
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        given = str(metadata.get("authorization", "")).encode()
        if hmac.compare_digest(given, self._expected):
            return handler
        return _denied(handler)
