"""An ASGI app served by uvicorn on loopback in a thread of this process: the test API servers
(Fly's, Kubernetes') run so, and can be stopped and started again on the same port."""

from __future__ import annotations

import threading
import time
from typing import Any, Literal

import uvicorn


def serve_in_thread(
    asgi: Any, name: str, *, port: int = 0, lifespan: Literal["on", "off"] = "off"
) -> tuple[uvicorn.Server, threading.Thread, int]:
    """Start serving `asgi` on 127.0.0.1:`port` (0: a free one); return once it listens, with
    the server (`should_exit = True` stops it), its thread and its port."""
    config = uvicorn.Config(
        asgi,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan=lifespan,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"{name}: the test server did not start")
        time.sleep(0.01)  # polling the server's own flag under a deadline
    return server, thread, int(server.servers[0].sockets[0].getsockname()[1])
