"""Machine overhead: machine-seconds per job ÷ conversion seconds, and API calls per job.

    uv run python -m bench.overhead [--runs 3] [--boot-latency 0.5] [--start-latency 0.5]

For the 2 MP photo (xmp_test-adobergb.jpg, 2000 x 1072) and the 12 MP photo
(book-beside-flowers.jpg) it runs jobs the way the gateway does (a Dispatcher: create, wait,
Ping, Stream, destroy) on
- the local provider (a worker process per job), and
- the Fly provider against the Fly API test server (tests/support/fly_api.py) with its simulated
  boot latency (created → starting → started) and its rate limit, whose machines are real
  worker processes on this host;
and prints, per photo and provider, the medians of: machine-seconds (create requested → destroy
confirmed), conversion seconds (the worker's `timings.convert`), their ratio, create / boot /
destroy seconds, and the Fly API calls per job.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tests.support.fly import fly_config
from tests.support.fly_api import FlyApiServer, logged_worker_process
from tests.support.paths import CORPUS
from tests.support.procs import free_port
from uplodr.dispatch.dispatcher import Dispatcher
from uplodr.dispatch.job import JobResult
from uplodr.dispatch.worker_client import UploadSource
from uplodr.machines.base import Provider
from uplodr.machines.fly import FlyProvider
from uplodr.machines.local import LocalProvider
from uplodr.worker_env import WorkerEnv

PHOTOS = {"2 MP": "xmp_test-adobergb.jpg", "12 MP": "book-beside-flowers.jpg"}


@dataclass
class Row:
    provider: str
    photo: str
    machine_seconds: float
    convert: float
    create: float
    boot: float
    destroy: float
    api_calls: float
    calls_by_action: str

    @property
    def ratio(self) -> float:
        return self.machine_seconds / self.convert if self.convert else 0.0


async def measure(
    provider: Provider, label: str, workdir: Path, runs: int, fly: FlyApiServer | None
) -> list[Row]:
    rows = []
    for size, name in PHOTOS.items():
        photo = CORPUS / name
        results: list[JobResult] = []
        calls: Counter[str] = Counter()
        for run in range(runs):
            store = workdir / f"store-{label}-{size.replace(' ', '')}-{run}"  # no dedup
            store.mkdir(parents=True)
            env = WorkerEnv()
            dispatcher = Dispatcher(provider, env, "overhead")
            before = Counter(fly.calls) if fly else Counter()
            results.append(await dispatcher.run([UploadSource(photo, name, "bench")]))
            if fly:
                calls.update(Counter(fly.calls) - before)
        timings = [r.timings for r in results]
        rows.append(
            Row(
                provider=label,
                photo=f"{size} {name}",
                machine_seconds=statistics.median(t.machine_seconds for t in timings),
                convert=statistics.median(t.convert for t in timings),
                create=statistics.median(t.create or 0.0 for t in timings),
                boot=statistics.median(t.boot or 0.0 for t in timings),
                destroy=statistics.median(t.destroy or 0.0 for t in timings),
                api_calls=sum(calls.values()) / runs,
                calls_by_action=", ".join(f"{k} {v / runs:g}" for k, v in sorted(calls.items())),
            )
        )
    return rows


async def run(runs: int, boot_latency: float, start_latency: float) -> list[Row]:
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    with tempfile.TemporaryDirectory(prefix="uplodr-overhead-") as tmp:
        workdir = Path(tmp)
        local = LocalProvider(workdir / "state")
        try:
            rows = await measure(local, "local", workdir, runs, None)
        finally:
            await local.aclose()
        with FlyApiServer(
            grpc_port=free_port(),
            boot_latency=boot_latency,
            start_latency=start_latency,
            process_factory=logged_worker_process(workdir / "workers"),
        ) as fly:
            provider = FlyProvider(fly_config(fly, regions=()))
            try:
                rows += await measure(provider, "fly (test server)", workdir, runs, fly)
            finally:
                await provider.aclose()
            assert fly.machines_alive == 0
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--boot-latency", type=float, default=0.5, help="created → starting, s")
    parser.add_argument("--start-latency", type=float, default=0.5, help="starting → started, s")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    missing = [name for name in PHOTOS.values() if not (CORPUS / name).is_file()]
    if missing:
        print(f"missing corpus photos in {CORPUS}: {', '.join(missing)}", file=sys.stderr)
        return 2
    rows = asyncio.run(run(args.runs, args.boot_latency, args.start_latency))
    print(
        f"medians of {args.runs} jobs; Fly test server boot latency "
        f"{args.boot_latency:g}+{args.start_latency:g} s, {os.cpu_count()} cores"
    )
    header = (
        f"{'provider':<18} {'photo':<32} {'machine-s':>9} {'convert-s':>9} {'ratio':>6} "
        f"{'create':>7} {'boot':>6} {'destroy':>7} {'API calls/job':>13}"
    )
    print(header)
    for r in rows:
        print(
            f"{r.provider:<18} {r.photo:<32} {r.machine_seconds:9.2f} {r.convert:9.2f} "
            f"{r.ratio:6.2f} {r.create:7.3f} {r.boot:6.2f} {r.destroy:7.3f} {r.api_calls:13.1f}"
            + (f"  ({r.calls_by_action})" if r.calls_by_action else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
