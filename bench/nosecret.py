"""What a worker without a store costs: a burst through `uplodr serve`, the gateway publishing.

    uv run python -m bench.nosecret [--count 32] [--photo xmp_test-adobergb.jpg] [--rounds 1]
                                    [--fly]

Since issue 16 a worker holds no store credential: it sends its outputs back on the Stream call
and the gateway checks and publishes them (docs/security.md). This runs `--count` simultaneous
uploads of one photo (default the 2 MP one) through a real `uplodr serve` (local provider, pool
on, a local-folder store) and prints: the burst's wall time, machines created, the bytes that
came back through the gateway per job (the sum of the published variants), the gateway's peak
RSS (sampled every 20 ms), and per job the worker's convert seconds and the gateway's publish
seconds (the answer's `store` timing). `--fly` runs the same burst a second time through the
Fly API simulator (machines as real worker processes, its create rate limit of 1/s with a burst
of 3) into a real Swift bucket (S3, SigV4; needs scripts/setup-swift). Run it on a checkout
before the change for the "before" row: the script only speaks HTTP to `serve`, so it works
against either.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx
import psutil

from tests.support.fly import fly_env
from tests.support.fly_api import FlyApiServer, logged_worker_process
from tests.support.gateway import start_gateway, stop_gateway
from tests.support.paths import CORPUS
from tests.support.procs import free_port
from tests.support.swift import SwiftServer

SMALL = "xmp_test-adobergb.jpg"


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def sample_rss(pid: int, stop: asyncio.Event) -> int:
    """The process's peak RSS while `stop` is not set (sampled: a 20 ms spike may be missed)."""
    process, peak = psutil.Process(pid), 0
    while not stop.is_set():
        peak = max(peak, process.memory_info().rss)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.02)
    return peak


async def burst(
    root: Path, photo: Path, count: int, args: Sequence[str] = (), env: Mapping[str, str] = {}
) -> dict[str, float]:
    gateway = await asyncio.to_thread(
        functools.partial(
            start_gateway,
            root,
            "--pool-idle",
            "30s",
            "--max-queue",
            str(count * 2),
            *args,
            env={**os.environ, **env},
        )
    )
    try:
        data = await asyncio.to_thread(photo.read_bytes)
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_rss(gateway.process.pid, stop))
        idle_rss = psutil.Process(gateway.process.pid).memory_info().rss
        async with httpx.AsyncClient(base_url=gateway.url, timeout=600) as http:
            started = time.monotonic()
            responses = await asyncio.gather(
                *(
                    http.post(
                        "/v1/images", params={"name": photo.name, "folder": f"b{i}"}, content=data
                    )
                    for i in range(count)
                )
            )
            wall = time.monotonic() - started
            stop.set()
            text = (await http.get("/metrics")).text
        peak = await sampler
        answers = [r.json() for r in responses if r.status_code == 200]
        return {
            "wall": wall,
            "failed": count - len(answers),
            "machines": metric(text, "uplodr_machines_created_total"),
            "bytes_per_job": statistics.mean(
                sum(v["size_bytes"] for v in a["variants"]) for a in answers
            ),
            "idle_rss_mb": idle_rss / 2**20,
            "peak_rss_mb": peak / 2**20,
            "convert_s": statistics.mean(a["timings"].get("convert", 0.0) for a in answers),
            "store_s": statistics.mean(a["timings"].get("store", 0.0) for a in answers),
        }
    finally:
        await asyncio.to_thread(stop_gateway, gateway)


@contextlib.contextmanager
def fly_with_swift(root: Path) -> Iterator[tuple[list[str], dict[str, str]]]:
    """`serve` arguments and environment for the Fly simulator storing into a Swift bucket."""
    swift = SwiftServer()
    swift.start()
    try:
        with FlyApiServer(
            grpc_port=free_port(), process_factory=logged_worker_process(root / "fly-workers")
        ) as fly:
            bucket = f"bench-{os.urandom(4).hex()}"
            swift.create_bucket(bucket, public_read=True)
            args = ["--provider", "fly", "--store", f"s3://{bucket}"]
            args += ["--public-url", swift.public_url(bucket)]
            yield args, {**swift.s3_env(), **fly_env(fly, regions="")}
    finally:
        swift.stop()


def row(label: str, f: dict[str, float]) -> str:
    return (
        f"{label:<16} {f['wall']:7.2f} {f['machines']:8.0f} "
        f"{f['bytes_per_job'] / 1024:11.0f} {f['idle_rss_mb']:7.0f}M "
        f"{f['peak_rss_mb']:7.0f}M {f['convert_s']:9.3f} {f['store_s']:7.3f} {f['failed']:6.0f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.nosecret", description=__doc__)
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--photo", default=SMALL)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--fly", action="store_true", help="also through the Fly simulator")
    args = parser.parse_args(argv)
    print(
        f"{'burst':<16} {'wall s':>7} {'machines':>8} {'KB/job back':>11} {'RSS idle':>8} "
        f"{'RSS peak':>8} {'convert s':>9} {'store s':>7} {'failed':>6}"
    )
    photo = CORPUS / args.photo
    label = f"{args.count} x {args.photo[:4]}"
    with tempfile.TemporaryDirectory(prefix="uplodr-bench-nosecret-") as folder:
        for round_ in range(args.rounds):
            f = asyncio.run(burst(Path(folder) / f"local-{round_}", photo, args.count))
            print(row(f"{label} local", f), flush=True)
            if args.fly:
                with fly_with_swift(Path(folder) / f"fly-{round_}") as (extra, env):
                    root = Path(folder) / f"fly-gw-{round_}"
                    f = asyncio.run(burst(root, photo, args.count, extra, env))
                print(row(f"{label} fly-sim", f), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
