"""Worker boot: seconds from starting `uplodr worker` to its first Ping answer, and where they go.

    uv run python -m bench.worker_boot [--runs 7]

Starts a real worker process (local-folder store, MALLOC_ARENA_MAX set so it does not re-exec)
on a free port `--runs` times and prints the median and spread of start → Ping answered, then
start → its port accepting connections (polled every 5 ms: without gRPC's reconnect backoff,
which adds up to ~0.1 s to the first), then the biggest imports of the worker's module
(`python -X importtime`), cumulative, in ms. The pool (issue 10) hides boot from all but a
burst's first jobs; this is what those first jobs pay.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.procs import free_port
from uplodr.dispatch.worker_client import WorkerClient
from uplodr.worker_env import WorkerEnv


async def listening(port: int) -> None:
    """Return once something accepts TCP connections on the port (polled every 5 ms)."""
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.005)
            continue
        writer.close()
        return


async def one_boot(store: Path, ping: bool = True) -> float:
    port = free_port()
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", **WorkerEnv().to_env()}
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "uplodr", "worker", "--grpc-addr", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = WorkerClient(f"127.0.0.1:{port}", None, 1 << 20, 1 << 16)
    try:
        if ping:
            await client.wait_ready(30)
        else:
            await asyncio.wait_for(listening(port), 30)
        return time.monotonic() - started
    finally:
        await client.close()
        process.terminate()
        await process.wait()


def import_profile(top: int = 12) -> list[tuple[str, float]]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import uplodr.worker.server"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        rows.append((name.strip(), int(cumulative) / 1000))
    return sorted(rows, key=lambda row: -row[1])[:top]


async def main_async(runs: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        times = [await one_boot(Path(folder)) for _ in range(runs)]
        listen = [await one_boot(Path(folder), ping=False) for _ in range(runs)]
    for what, seconds in (("Ping answered", times), ("port accepting", listen)):
        print(
            f"worker start → {what}, {runs} runs: median {statistics.median(seconds):.3f} s "
            f"(min {min(seconds):.3f}, max {max(seconds):.3f})"
        )
    print("import uplodr.worker.server, cumulative ms:")
    for name, ms in import_profile():
        print(f"  {ms:8.1f}  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker_boot", description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    asyncio.run(main_async(args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
