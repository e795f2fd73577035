"""Benchmark: one job per corpus photo on a real local machine (a worker process).

    uv run python -m bench [--runs N] [--photos book-beside-flowers.jpg craft-beer.jpg]

For each photo it prints the job's wall time, the worker's CPU seconds and peak RSS, the ratio
of conversion wall time to the CPU floor (CPU-seconds ÷ cores), boot-to-Ping of the local
provider, and — from an in-process run of the same conversion — the encode time of each variant.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

from tests.support.paths import CORPUS
from uplodr.dispatch.worker_client import UploadSource, WorkerClient
from uplodr.imaging import DEFAULT_LIMITS, configure_vips, convert
from uplodr.machines.base import MARKER_TAG, MARKER_VALUE, Machine, MachineSpec
from uplodr.machines.local import LocalProvider
from uplodr.preset import DEFAULT_PRESET

PHOTOS = ("book-beside-flowers.jpg", "craft-beer.jpg")


@dataclass
class JobFigures:
    photo: str
    megapixels: float
    create: float
    boot_to_ping: float
    job_wall: float
    convert_wall: float
    worker_cpu: float
    peak_rss_mb: float
    encode: dict[str, float] = field(default_factory=dict)

    @property
    def floor_ratio(self) -> float:
        """Conversion wall time ÷ (worker CPU-seconds ÷ cores): 1.0 = both cores fully busy."""
        cores = os.cpu_count() or 1
        return self.convert_wall / (self.worker_cpu / cores) if self.worker_cpu else 0.0


def worker_process(machine: Machine) -> psutil.Process:
    port = machine.address.rsplit(":", 1)[1]
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "worker" in cmdline and any(arg.endswith(f":{port}") for arg in cmdline):
            return proc
    raise RuntimeError(f"no worker process for {machine.id}")


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


async def one_job(provider: LocalProvider, store: Path, photo: Path) -> JobFigures:
    token = secrets.token_urlsafe(16)
    env = {
        "UPLODR_WORKER_TOKEN": token,
    }
    spec = MachineSpec(env=env, tags={MARKER_TAG: MARKER_VALUE, "bench": "1"})
    started = time.monotonic()
    machine = await provider.create(spec)
    created = time.monotonic()
    client = WorkerClient(machine.address, token, 64 << 20, 256 << 10)
    try:
        await provider.wait_started(machine, 60)
        await client.wait_ready(60)
        booted = time.monotonic()
        process = worker_process(machine)
        cpu_before = sum(process.cpu_times()[:2])
        folder = f"run-{secrets.token_hex(4)}"  # a fresh folder: never answered from storage
        (response,) = await client.stream([UploadSource(photo, photo.name, folder)], 300)
        finished = time.monotonic()
        cpu = sum(process.cpu_times()[:2]) - cpu_before
        peak_mb = peak_rss_mb(process.pid)
        return JobFigures(
            photo=photo.name,
            megapixels=0.0,  # filled in from the in-process run
            create=created - started,
            boot_to_ping=booted - created,
            job_wall=finished - started,
            convert_wall=response.timings.convert,
            worker_cpu=cpu,
            peak_rss_mb=peak_mb,
        )
    finally:
        await client.close()
        await provider.destroy(machine.id)


def encode_times(photo: Path) -> tuple[float, dict[str, float]]:
    configure_vips()
    variants = convert(photo, DEFAULT_PRESET, DEFAULT_LIMITS).variants
    return (
        max(v.width * v.height for v in variants) / 1e6,
        {f"{v.name} {v.width}×{v.height}": v.encode_seconds for v in variants},
    )


async def main(photos: list[str], runs: int) -> None:
    console = Console(width=150)
    console.print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}"
    )
    results: list[JobFigures] = []
    with tempfile.TemporaryDirectory(prefix="uplodr-bench-") as tmp:
        provider = LocalProvider(Path(tmp) / "state")
        (Path(tmp) / "store").mkdir()
        try:
            for name in photos:
                photo = CORPUS / name
                megapixels, encodes = await asyncio.to_thread(encode_times, photo)
                for _ in range(runs):
                    figures = await one_job(provider, Path(tmp) / "store", photo)
                    figures.megapixels = megapixels
                    figures.encode = encodes
                    results.append(figures)
        finally:
            await provider.aclose()
    table = Table(title="one job per row (local provider, real worker process)")
    for column in (
        "photo",
        "out MP",
        "create s",
        "boot→Ping s",
        "job wall s",
        "convert wall s",
        "worker CPU s",
        "wall ÷ CPU floor",
        "peak RSS MB",
    ):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            r.photo,
            f"{r.megapixels:.1f}",
            f"{r.create:.3f}",
            f"{r.boot_to_ping:.3f}",
            f"{r.job_wall:.2f}",
            f"{r.convert_wall:.2f}",
            f"{r.worker_cpu:.2f}",
            f"{r.floor_ratio:.2f}",
            f"{r.peak_rss_mb:.0f}",
        )
    console.print(table)
    encode_table = Table(title="encode time per variant (in-process, same preset)")
    encode_table.add_column("photo")
    encode_table.add_column("variant")
    encode_table.add_column("seconds", justify="right")
    for name in photos:
        first = next(r for r in results if r.photo == name)
        for variant, seconds in first.encode.items():
            encode_table.add_row(name, variant, f"{seconds:.2f}")
    console.print(encode_table)
    boots = [r.boot_to_ping for r in results]
    console.print(f"boot→Ping: median {statistics.median(boots):.3f} s over {len(boots)} machines")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--photos", nargs="+", default=list(PHOTOS))
    args = parser.parse_args()
    asyncio.run(main(args.photos, args.runs))
