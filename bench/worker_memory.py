"""Worker memory over many jobs, by malloc setting: glibc's arenas, its mmap threshold, jemalloc.

    uv run python -m bench.worker_memory [--jobs 20] [--worker-jobs 6] [--photo craft-beer.jpg]
                                         [--allocators glibc arena2 arena2-mmap jemalloc ...]

Why: a worker that a pool keeps for many jobs must stay under its machine's memory (without
MALLOC_ARENA_MAX a long-running pyvips worker grew 224 → 606 MB over 8 images). Two runs per
allocator, each in a fresh process started with that allocator's environment:

- **worker**: ONE real `uplodr worker` process gets `--worker-jobs` consecutive jobs of the
  photo over gRPC (each into a fresh folder, so nothing is answered from storage) — what a pooled
  worker does today;
- **collected**: `--jobs` consecutive `uplodr.imaging.convert` calls in one process with
  `gc.collect()` after each — the allocator's own behaviour once nothing keeps a finished
  conversion alive (each conversion leaves a reference cycle that holds its decoded image,
  ~100 MB for 24 MP, until Python's cyclic collector runs).

For each it prints the resident set after the first job, after the last, the largest after any
job, the peak (VmHWM), the median job time and the CPU seconds per job (user + system: the
allocator's page-fault and madvise cost shows there, and it is steadier than wall time on a
busy machine). jemalloc is Debian's `libjemalloc2`, preloaded
with LD_PRELOAD; its rows are skipped with a message when it is not installed. Figures and the
choice they led to: docs/benchmarks.md, "Worker memory over many jobs".
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

from tests.support.paths import CORPUS
from tests.support.procs import free_port
from uplodr.dispatch.worker_client import UploadSource, WorkerClient

JEMALLOC = Path(f"/usr/lib/{platform.machine()}-linux-gnu/libjemalloc.so.2")
GLIBC_DEFAULT_ARENAS = str(8 * (os.cpu_count() or 1))  # glibc's own default on 64-bit
MMAP_THRESHOLD = str(128 * 1024)  # glibc's initial value, pinned (no dynamic raise)
NO_DECAY = "dirty_decay_ms:0,muzzy_decay_ms:0"

# The worker re-executes itself with MALLOC_ARENA_MAX=2 when it is unset, so every row sets it.
ALLOCATORS: dict[str, tuple[str, dict[str, str]]] = {
    "glibc": (
        f"glibc, default arenas ({GLIBC_DEFAULT_ARENAS})",
        {"MALLOC_ARENA_MAX": GLIBC_DEFAULT_ARENAS},
    ),
    "arena2": ("glibc, MALLOC_ARENA_MAX=2", {"MALLOC_ARENA_MAX": "2"}),
    "arena2-mmap": (
        "glibc, 2 arenas + MALLOC_MMAP_THRESHOLD_=131072",
        {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD},
    ),
    "jemalloc": (
        "jemalloc 5.3, defaults",
        {"MALLOC_ARENA_MAX": "2", "LD_PRELOAD": str(JEMALLOC)},
    ),
    "jemalloc-nodecay": (
        f"jemalloc 5.3, MALLOC_CONF={NO_DECAY}",
        {"MALLOC_ARENA_MAX": "2", "LD_PRELOAD": str(JEMALLOC), "MALLOC_CONF": NO_DECAY},
    ),
}


def _kib(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {name} for process {pid}")


def rss_mb(pid: int) -> float:
    return _kib(pid, "VmRSS") / 1024


def peak_mb(pid: int) -> float:
    return _kib(pid, "VmHWM") / 1024


def allocator_env(allocator: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LD_PRELOAD", "MALLOC_"))}
    env.update(ALLOCATORS[allocator][1])
    return env


@dataclass
class Run:
    allocator: str
    rss_after: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    peak: float = 0.0
    cpu: float = 0.0  # CPU seconds (user + system) of all its jobs


def worker_run(allocator: str, photo: Path, jobs: int, root: Path) -> Run:
    """`jobs` consecutive jobs through one real worker process."""
    token = secrets.token_urlsafe(16)
    address = f"127.0.0.1:{free_port()}"
    store = root / allocator
    store.mkdir()
    command = [sys.executable, "-m", "uplodr", "worker", "--grpc-addr", address]
    command += ["--store", str(store), "--public-url", "http://bench.invalid/{key}"]
    command += ["--max-lifetime", "2h"]
    env = {**allocator_env(allocator), "UPLODR_WORKER_TOKEN": token}
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        run = asyncio.run(_jobs(Run(allocator), process.pid, address, token, photo, jobs))
        times = psutil.Process(process.pid).cpu_times()
        run.cpu = times.user + times.system
        return run
    finally:
        process.terminate()
        process.wait(timeout=60)


async def _jobs(run: Run, pid: int, address: str, token: str, photo: Path, jobs: int) -> Run:
    client = WorkerClient(address, token, 64 << 20, 256 << 10)
    try:
        await client.wait_ready(60)
        for index in range(jobs):
            source = UploadSource(photo, photo.name, f"job-{index}")
            started = time.monotonic()
            await client.stream([source], 600)
            run.seconds.append(time.monotonic() - started)
            run.rss_after.append(rss_mb(pid))
        run.peak = peak_mb(pid)
        return run
    finally:
        await client.close()


def collected_child(photo: Path, jobs: int) -> None:
    """In a fresh process: convert `jobs` times, collecting cycles after each; print JSON."""
    from uplodr.imaging import DEFAULT_LIMITS, configure_vips, convert
    from uplodr.preset import DEFAULT_PRESET

    configure_vips()
    rss: list[float] = []
    seconds: list[float] = []
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(jobs):
        started = time.monotonic()
        convert(photo, DEFAULT_PRESET, DEFAULT_LIMITS)
        gc.collect()
        seconds.append(time.monotonic() - started)
        rss.append(rss_mb(os.getpid()))
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(json.dumps({"rss": rss, "seconds": seconds, "peak": peak_mb(os.getpid()), "cpu": cpu}))


def collected_run(allocator: str, photo: Path, jobs: int) -> Run:
    command = [sys.executable, "-m", "bench.worker_memory", "--child", "--photo", str(photo)]
    command += ["--jobs", str(jobs)]
    done = subprocess.run(
        command, env=allocator_env(allocator), capture_output=True, text=True, check=True
    )
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return Run(allocator, data["rss"], data["seconds"], data["peak"], data["cpu"])


def table(title: str, runs: list[Run]) -> Table:
    result = Table(title=title)
    for column in ("malloc", "after job 1", "after last", "largest after a job", "peak (VmHWM)"):
        result.add_column(column, justify="right")
    result.add_column("median job s", justify="right")
    result.add_column("CPU s / job", justify="right")
    for run in runs:
        result.add_row(
            ALLOCATORS[run.allocator][0],
            f"{run.rss_after[0]:.0f}",
            f"{run.rss_after[-1]:.0f}",
            f"{max(run.rss_after):.0f}",
            f"{run.peak:.0f}",
            f"{statistics.median(run.seconds):.2f}",
            f"{run.cpu / len(run.seconds):.2f}",
        )
    return result


def main(photo: Path, jobs: int, worker_jobs: int, allocators: list[str]) -> None:
    console = Console(width=150)
    console.print(
        f"{photo.name}; {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.2f}; resident memory in MB"
    )
    usable = [a for a in allocators if "LD_PRELOAD" not in ALLOCATORS[a][1] or JEMALLOC.exists()]
    if len(usable) < len(allocators):
        console.print(f"skipping jemalloc: {JEMALLOC} is absent (apt-get install libjemalloc2)")
    workers: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="uplodr-bench-mem-") as tmp:
        for allocator in usable if worker_jobs else []:
            workers.append(worker_run(allocator, photo, worker_jobs, Path(tmp)))
    if workers:
        console.print(table(f"worker process (today): {worker_jobs} jobs over gRPC", workers))
    collected = [collected_run(a, photo, jobs) for a in usable]
    console.print(table(f"{jobs} conversions, cycles collected after each", collected))
    for kind, runs in (("worker", workers), ("collected", collected)):
        for run in runs:
            curve = " ".join(f"{mb:.0f}" for mb in run.rss_after)
            console.print(f"{kind} {run.allocator}: RSS after each job: {curve}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20, help="conversions per collected run")
    parser.add_argument("--worker-jobs", type=int, default=6, help="jobs per worker run (0: none)")
    parser.add_argument("--photo", default="craft-beer.jpg")
    parser.add_argument(
        "--allocators", nargs="+", choices=list(ALLOCATORS), default=list(ALLOCATORS)
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    photo_path = Path(args.photo) if Path(args.photo).is_absolute() else CORPUS / args.photo
    if args.child:
        collected_child(photo_path, args.jobs)
    else:
        main(photo_path, args.jobs, args.worker_jobs, args.allocators)
