"""The pool against a machine per job: a burst of uploads, same photos, same machine.

    uv run python -m bench.pool [--small 32] [--large 8] [--fly] [--boot-latency 1.0]
    uv run python -m bench.pool --keep-stopped 4
    uv run python -m bench.pool --bad-every 5 [--small 32]

Bursts: `--small` uploads of the 2 MP photo (xmp_test-adobergb.jpg, 2000 x 1072) and `--large`
of the 12 MP one (book-beside-flowers.jpg), all sent at once, each into its own folder so none
is answered from storage.

- **local**: through a real `uplodr serve` (local provider, default --pool-max: one per core),
  with the pool (`--pool-idle 30s`) and without (`--pool-idle 0`);
- **fly** (`--fly`): an in-process pool over the Fly provider and the API simulator with a
  create latency (`--boot-latency` created → starting, then 0.5 s → started) and Fly's rate
  limit (1 create/s, burst 3) — real worker processes on this host.

Per burst and mode it prints: wall seconds; wall ÷ one process converting the same photos back
to back (`uplodr.imaging.convert`, measured first); machines created; machine-seconds ÷ the
workers' conversion seconds; machine-seconds spent idle during the burst (after it, each pooled
machine also idles for the idle window before it goes: machines times --pool-idle).

`--keep-stopped N`: N jobs one after another on a Fly-simulator pool with `--pool-keep-stopped 1`,
each after the idle window stopped the machine: the wait for a created machine against the wait
for a stopped one started again (the simulator models a start as its start latency, 0.5 s, and a
create as boot latency + start latency).

`--bad-every N`: what "a machine that met a bad file is gone" costs. The `--small` burst through a
real `uplodr serve` with the pool, all good, then with every Nth upload the photo cut in half (a
truncated JPEG: 422 corrupt_image, and its machine is destroyed, never reused), and the same
bad burst with no pool (`--pool-idle 0`, a machine per job) as the ceiling. Per run: wall
seconds, machines created, seconds they spent being created and booted, machines retired after
a bad input (/metrics) and the answers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.fly import fly_config
from tests.support.fly_api import FlyApiServer, logged_worker_process
from tests.support.gateway import Gateway, start_gateway, stop_gateway
from tests.support.paths import CORPUS
from tests.support.procs import free_port
from uplodr.dispatch.dispatcher import Dispatcher, DispatchSettings
from uplodr.dispatch.events import EventKind
from uplodr.dispatch.pool import Pool, PoolSettings
from uplodr.dispatch.worker_client import UploadSource
from uplodr.machines.fly import FlyProvider
from uplodr.worker_env import WorkerEnv

SMALL = "xmp_test-adobergb.jpg"
LARGE = "book-beside-flowers.jpg"

BACK_TO_BACK = """
import sys, time
from pathlib import Path
from uplodr.imaging import convert
from uplodr.limits import DEFAULT_LIMITS
from uplodr.preset import DEFAULT_PRESET
paths = [Path(p) for p in sys.argv[2:]] * int(sys.argv[1])
convert(paths[0], DEFAULT_PRESET, DEFAULT_LIMITS)  # warm: imports and libvips start-up
started = time.perf_counter()
for path in paths:
    convert(path, DEFAULT_PRESET, DEFAULT_LIMITS)
print(time.perf_counter() - started)
"""


@dataclass
class Row:
    burst: str
    mode: str
    wall: float
    single: float
    machines: float
    machine_seconds: float
    convert_seconds: float
    idle_seconds: float
    failed: int

    @classmethod
    def of(
        cls, burst: str, mode: str, single: float, measured: tuple[float, dict[str, float], int]
    ) -> Row:
        """A row from a burst's (wall, figures, failed)."""
        wall, f, failed = measured
        return cls(
            burst, mode, wall, single, f["machines"], f["machine_seconds"], f["convert"],
            f["idle"], failed,
        )  # fmt: skip

    def line(self) -> str:
        ratio = self.machine_seconds / self.convert_seconds if self.convert_seconds else 0.0
        return (
            f"{self.burst:<12} {self.mode:<18} {self.wall:7.2f} {self.wall / self.single:6.2f} "
            f"{self.machines:8.0f} {ratio:9.2f} {self.idle_seconds:8.2f} {self.failed:6d}"
        )


def back_to_back(photo: Path, count: int) -> float:
    """Seconds one process takes to convert `photo` `count` times, one after another."""
    done = subprocess.run(
        [sys.executable, "-c", BACK_TO_BACK, str(count), str(photo)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "MALLOC_ARENA_MAX": "2"},
    )
    return float(done.stdout.strip().splitlines()[-1])


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def local_burst(
    root: Path, photo: Path, count: int, idle: str, bad_every: int = 0
) -> tuple[float, dict[str, float], int]:
    """A burst through `uplodr serve`; with `bad_every` N, every Nth upload is the photo cut
    in half (figures: "retired", machines destroyed after a bad input; "bad", its answers)."""
    gateway: Gateway = await asyncio.to_thread(
        start_gateway, root, "--pool-idle", idle, "--max-queue", str(count * 2)
    )
    try:
        data = await asyncio.to_thread(photo.read_bytes)
        cut = data[: len(data) // 2]

        def body(i: int) -> bytes:
            return cut if bad_every and i % bad_every == bad_every - 1 else data

        async with httpx.AsyncClient(base_url=gateway.url, timeout=600) as http:
            started = time.monotonic()
            responses = await asyncio.gather(
                *(
                    http.post(
                        "/v1/images",
                        params={"name": photo.name, "folder": f"b{i}"},
                        content=body(i),
                    )
                    for i in range(count)
                )
            )
            wall = time.monotonic() - started
            text = (await http.get("/metrics")).text
        converted = sum(
            r.json()["timings"].get("convert", 0.0) for r in responses if r.status_code == 200
        )
        figures = {
            "machines": metric(text, "uplodr_machines_created_total"),
            # released machines (all of them per job) + pooled ones so far: their jobs'
            # shares, their idle time and their boots
            "machine_seconds": metric(text, "uplodr_machine_seconds_total")
            if idle == "0"
            else sum(r.json()["job"]["machine_seconds"] for r in responses if r.status_code == 200)
            + metric(text, "uplodr_machine_idle_seconds_total")
            + metric(text, "uplodr_machine_boot_seconds_total"),
            "convert": converted,
            "idle": metric(text, "uplodr_machine_idle_seconds_total"),
            "retired": sum(
                float(n)
                for n in re.findall(
                    r"^uplodr_machines_retired_bad_input_total\{[^}]*\} (\S+)$", text, re.MULTILINE
                )
            ),
            "bad": sum(1 for r in responses if r.status_code == 422),
            "boot": metric(text, "uplodr_machine_boot_seconds_total"),
        }
        return wall, figures, sum(1 for r in responses if r.status_code not in (200, 422))
    finally:
        await asyncio.to_thread(stop_gateway, gateway)


@contextlib.asynccontextmanager
async def fly_pool(
    root: Path, boot_latency: float, name: str, settings: PoolSettings
) -> AsyncIterator[tuple[Pool, FlyApiServer]]:
    """A pool over the Fly provider and the API simulator (create → started: `boot_latency` +
    0.5 s, creates limited to 1/s), its workers writing to `root/store`; closed with every
    machine destroyed when the block ends. With it, the simulator (its own counts of creates
    and starts)."""
    store = root / "store"
    store.mkdir(parents=True, exist_ok=True)
    with FlyApiServer(
        grpc_port=free_port(),
        boot_latency=boot_latency,
        start_latency=0.5,
        rate=1.0,
        process_factory=logged_worker_process(root / "workers"),
    ) as fly:
        provider = FlyProvider(fly_config(fly, regions=()))
        env = WorkerEnv(stores=(str(store),), idle_timeout=30.0)
        pool = Pool(Dispatcher(provider, env, name, DispatchSettings()), settings)
        try:
            yield pool, fly
        finally:
            await pool.close()
            await pool.dispatcher.drain()
            await provider.aclose()


async def fly_burst(
    root: Path, photo: Path, count: int, idle: float, boot_latency: float
) -> tuple[float, dict[str, float], int]:
    max_machines = os.cpu_count() or 1
    settings = PoolSettings(max=max_machines, idle=idle)
    async with fly_pool(root, boot_latency, "bench-pool", settings) as (pool, _):
        slots = asyncio.Semaphore(max_machines)  # what the gateway's job slots do

        async def one(i: int) -> float:
            async with slots:
                source = UploadSource(photo, photo.name, f"b{i}")
                result = await pool.run([source])
                return sum(r.timings.convert for r in result.responses)

        started = time.monotonic()
        outcomes = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
        wall = time.monotonic() - started
        idle_seconds = pool.stats().idle_seconds
    converted = [o for o in outcomes if isinstance(o, float)]
    totals = pool.dispatcher.totals
    figures = {
        "machines": float(totals.machines_created),
        "machine_seconds": totals.machine_seconds,
        "convert": sum(converted),
        "idle": idle_seconds,
    }
    return wall, figures, count - len(converted)


async def keep_stopped(boot_latency: float, rounds: int) -> None:
    """Fly simulator, `--pool-keep-stopped 1`: how long a job waits for its machine when the pool
    must create one, and when it starts the machine it stopped after the last job."""
    with tempfile.TemporaryDirectory(prefix="uplodr-bench-stopped-") as folder:
        photo = CORPUS / SMALL
        settings = PoolSettings(max=1, idle=0.5, keep_stopped=1)
        async with fly_pool(Path(folder), boot_latency, "bench-stopped", settings) as (pool, fly):
            waits: list[float] = []
            stopped = asyncio.Event()
            pool.dispatcher.events.subscribe(
                lambda event: stopped.set() if event.kind is EventKind.STOPPED else None
            )
            for i in range(rounds):
                stopped.clear()
                result = await pool.run([UploadSource(photo, photo.name, f"s{i}")])
                waits.append(result.timings.wait or 0.0)
                await asyncio.wait_for(stopped.wait(), 30)  # the idle window stopped it
            print(
                f"fly-sim keep-stopped: wait for a created machine {waits[0]:.2f} s; for a "
                f"stopped one started again {min(waits[1:]):.2f}-{max(waits[1:]):.2f} s "
                f"({rounds - 1} starts); machines created {fly.created}, "
                f"started again {fly.started_again}"
            )


async def bad_files(count: int, bad_every: int) -> None:
    """The `--small` burst through serve: all good on the pool, 1 in `bad_every` bad on the
    pool, and 1 in `bad_every` bad with a machine per job."""
    photo = CORPUS / SMALL
    print(
        f"{'run':<28} {'wall s':>7} {'machines':>8} {'boot s':>7} {'retired':>7} {'422':>4} "
        f"{'other':>5}"
    )
    with tempfile.TemporaryDirectory(prefix="uplodr-bench-bad-") as folder:
        for label, idle, every in (
            ("pool, all good", "30s", 0),
            (f"pool, 1 in {bad_every} bad", "30s", bad_every),
            (f"per job, 1 in {bad_every} bad", "0", bad_every),
        ):
            root = Path(folder) / label.replace(" ", "").replace(",", "")
            wall, f, other = await local_burst(root, photo, count, idle, every)
            print(
                f"{label:<28} {wall:7.2f} {f['machines']:8.0f} {f['boot']:7.2f} "
                f"{f['retired']:7.0f} "
                f"{f['bad']:4.0f} {other:5d}",
                flush=True,
            )


async def run(small: int, large: int, fly: bool, boot_latency: float) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="uplodr-bench-pool-") as folder:
        workdir = Path(folder)
        for label, name, count in (("2 MP", SMALL, small), ("12 MP", LARGE, large)):
            if count <= 0:
                continue
            photo = CORPUS / name
            single = back_to_back(photo, count)
            burst = f"{count} x {label}"

            for mode, idle in (("local pool", "30s"), ("local per job", "0")):
                root = workdir / f"{label}-{idle}".replace(" ", "")
                measured = await local_burst(root, photo, count, idle)
                rows.append(Row.of(burst, mode, single, measured))
                print(rows[-1].line(), flush=True)
            if fly:
                for mode, fly_idle in (("fly-sim pool", 30.0), ("fly-sim per job", 0.0)):
                    root = workdir / f"fly-{label}-{fly_idle}".replace(" ", "")
                    measured = await fly_burst(root, photo, count, fly_idle, boot_latency)
                    rows.append(Row.of(burst, mode, single, measured))
                    print(rows[-1].line(), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pool", description=__doc__)
    parser.add_argument("--small", type=int, default=32, help="uploads of the 2 MP photo")
    parser.add_argument("--large", type=int, default=8, help="uploads of the 12 MP photo")
    parser.add_argument("--fly", action="store_true", help="also the Fly API simulator")
    parser.add_argument("--boot-latency", type=float, default=1.0, help="fly: created → starting")
    parser.add_argument(
        "--keep-stopped", type=int, default=0, help="only: N jobs on a stopped-machine Fly pool"
    )
    parser.add_argument(
        "--bad-every", type=int, default=0, help="only: --small burst with every Nth file cut"
    )
    args = parser.parse_args(argv)
    if args.bad_every:
        logging.basicConfig(level=logging.WARNING)
        print(f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, {args.small} x 2 MP")
        asyncio.run(bad_files(args.small, args.bad_every))
        return 0
    if args.keep_stopped:
        asyncio.run(keep_stopped(args.boot_latency, args.keep_stopped))
        return 0
    logging.basicConfig(level=logging.WARNING)
    print(f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    print(
        f"{'burst':<12} {'mode':<18} {'wall s':>7} {'÷ 1p':>6} {'machines':>8} "
        f"{'mach-s/cv':>9} {'idle s':>8} {'failed':>6}"
    )
    asyncio.run(run(args.small, args.large, args.fly, args.boot_latency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
