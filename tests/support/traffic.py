"""Packets on the host while a test runs: a bounded loop of loopback HTTP requests.

The host-state tests compare what an engine changed before and after its life; the host's own
traffic (any packet moves iptables' counters) must not count as a change. This makes that
traffic happen during the test instead of hoping for a quiet host.
"""

from __future__ import annotations

import contextlib
import http.server
import threading
import urllib.request
from collections.abc import Iterator

# Bounds: the loop stops by itself after this many requests or when the test ends.
MAX_REQUESTS = 100_000


class _Quiet(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def loopback_traffic() -> Iterator[list[int]]:
    """Requests to a server on 127.0.0.1 in a loop until the block ends; yields a one-item list
    with the number of requests answered so far (the test checks traffic really flowed)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    answered = [0]
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set() and answered[0] < MAX_REQUESTS:
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5):
                answered[0] += 1

    serving = threading.Thread(target=server.serve_forever, daemon=True)
    client = threading.Thread(target=loop, daemon=True)
    serving.start()
    client.start()
    try:
        yield answered
    finally:
        stop.set()
        client.join(timeout=10)
        server.shutdown()
        server.server_close()
