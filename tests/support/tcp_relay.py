"""A TCP relay: a loopback-only service made reachable at another address of this host.

    with tcp_relay("fdaa:0:1f::1", swift.ports["proxy"]) as port:
        endpoint = f"http://[fdaa:0:1f::1]:{port}"

Why: the test services (Swift's S3 proxy) listen on 127.0.0.1 only, while Fly machines simulated
as containers are on their own network and reach this host at its address there — as a real Fly
machine reaches Tigris over the network, never the gateway's loopback. The relay copies bytes both
ways and nothing else (TLS, SigV4 and HTTP stay end to end); it closes both sides when either
does.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from collections.abc import Iterator

IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # Linux; Python 3.12 names it


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def tcp_relay(listen_host: str, target_port: int, target_host: str = "127.0.0.1") -> Iterator[int]:
    """Relay connections to `listen_host`:<free port> to target_host:target_port; yields the
    port. Stops accepting at the end of the block."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            client: socket.socket = self.request
            with socket.create_connection((target_host, target_port), timeout=30) as upstream:
                upstream.settimeout(None)
                back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
                back.start()
                _pump(client, upstream)
                back.join()

    class Server(socketserver.ThreadingTCPServer):
        address_family = socket.AF_INET6 if ":" in listen_host else socket.AF_INET
        daemon_threads = True
        allow_reuse_address = True

        def server_bind(self) -> None:
            # An address on a bridge with no port up yet is still "tentative" (IPv6 duplicate
            # address detection): bind to it anyway, it answers once the first machine is on.
            self.socket.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
            super().server_bind()

    with Server((listen_host, 0), Handler) as server:
        thread = threading.Thread(target=server.serve_forever, name="tcp-relay", daemon=True)
        thread.start()
        try:
            yield int(server.server_address[1])
        finally:
            server.shutdown()
            thread.join(timeout=10)
