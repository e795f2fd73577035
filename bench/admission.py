"""Admission before the body: a burst of simultaneous 12 MP uploads through `uplodr serve`
(local provider), with and without a bound of uploads in flight.

    uv run python -m bench.admission [--uploads 30] [--bounds 4 1000] [--pool-max 2]

Each upload goes to a folder of its own (no dedupe). For each `--max-in-flight` it prints the
answers (200 / 503), how soon the last 503 came, the most upload folders the spool held at
once, the bytes spooled (`uplodr_upload_bytes_total`), the gateway's RSS before and at its peak
(VmHWM), and the burst's wall time. A bound of 1000 is "no bound": only the service's queue
(slots + --max-queue) refuses, after the body was spooled — the gateway before admission.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

from tests.hostile.support import SpoolWatch, metric, status_kb
from tests.support.gateway import running_gateway
from tests.support.paths import CORPUS

PHOTO = "book-beside-flowers.jpg"


def burst(bound: int, uploads: int, pool_max: int, root: Path) -> str:
    spool = root / "spool"
    photo = (CORPUS / PHOTO).read_bytes()
    args = ("--max-in-flight", str(bound), "--spool-dir", str(spool), "--pool-max", str(pool_max))
    with running_gateway(root / "gateway", *args) as gateway:
        before_mb = psutil.Process(gateway.process.pid).memory_info().rss / 2**20
        start = threading.Barrier(uploads)
        answers: dict[int, tuple[int, float]] = {}

        def post(index: int) -> None:
            with httpx.Client(timeout=600) as http:
                start.wait()
                began = time.monotonic()
                response = http.post(
                    f"{gateway.url}/v1/images",
                    params={"name": PHOTO, "folder": f"burst/{index}"},
                    content=photo,
                )
                answers[index] = (response.status_code, time.monotonic() - began)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(uploads)]
        began = time.monotonic()
        with SpoolWatch(spool) as watch:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        wall = time.monotonic() - began
        converted = sum(1 for status, _ in answers.values() if status == 200)
        busy = [seconds for status, seconds in answers.values() if status == 503]
        spooled_mb = metric(gateway, "uplodr_upload_bytes_total") / 1e6
        peak_mb = status_kb(gateway.process.pid, "VmHWM") / 1024
    return (
        f"--max-in-flight {bound}: {converted} x 200, {len(busy)} x 503 (the last after "
        f"{max(busy, default=0):.2f} s), spool held at most {watch.most} uploads, "
        f"{spooled_mb:.1f} MB spooled, gateway RSS {before_mb:.0f} -> peak {peak_mb:.0f} MB, "
        f"wall {wall:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=30)
    parser.add_argument("--bounds", type=int, nargs="+", default=[4, 1000])
    parser.add_argument("--pool-max", type=int, default=2)
    options = parser.parse_args()
    for bound in options.bounds:
        with tempfile.TemporaryDirectory(prefix="uplodr-bench-admission-") as root:
            print(burst(bound, options.uploads, options.pool_max, Path(root)), flush=True)


if __name__ == "__main__":
    main()
