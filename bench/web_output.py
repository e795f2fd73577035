"""Benchmark: what web-ready output costs — widths, HEIC, placeholders, animated AVIF.

    uv run python -m bench.web_output [--runs N] [--skip-animation]

1. Each photo (12 MP JPEG, 24 MP JPEG, 12 MP HEIC) converted in a fresh worker-like process
   (MALLOC_ARENA_MAX=2, `convert` as the worker calls it) with today's set (the default preset:
   full sizes and thumbnail), the same at the former AVIF default (effort 3, q60), and with
   widths [480, 960, 1600]: CPU-seconds (user + system, every thread), wall seconds, peak RSS
   (VmHWM) and the bytes written (best of --runs by CPU; peak RSS the highest).
2. The placeholder (ThumbHash + BlurHash + data URL) on each photo's decoded image: ms per image,
   median of 20.
3. Animated AVIF of iss634.gif (42 frames, 245x245) at each effort: CPU-seconds, wall, bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

from tests.support.paths import CORPUS
from uplodr.imaging import DEFAULT_LIMITS, configure_vips, pipeline, placeholder, probe
from uplodr.imaging.animated_avif import encode as encode_animated
from uplodr.imaging.deadline import Deadline
from uplodr.preset import DEFAULT_PRESET

PHOTOS = ("book-beside-flowers.jpg", "craft-beer.jpg", "IMG_2682.heic")
WIDTHS = (480, 960, 1600)

# Runs in a fresh interpreter: one conversion, then its own figures as one JSON line.
CONVERT_SCRIPT = """
import json, resource, sys, time
from pathlib import Path
from uplodr.imaging import ImageLimits, configure_vips, convert
from uplodr.preset import Preset
configure_vips()
preset = Preset.from_json(sys.argv[2])
started = time.perf_counter()
conversion = convert(Path(sys.argv[1]), preset, ImageLimits())
wall = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_SELF)
peak = next(int(line.split()[1]) / 1024 for line in open("/proc/self/status")
            if line.startswith("VmHWM:"))
print(json.dumps({"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "peak_mb": peak,
                  "variants": len(conversion.variants),
                  "bytes": sum(len(v.data) for v in conversion.variants)}))
"""


def convert_in_fresh_process(photo: Path, preset_json: str) -> dict[str, float]:
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
    done = subprocess.run(
        [sys.executable, "-c", CONVERT_SCRIPT, str(photo), preset_json],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def widths_table(console: Console, runs: int) -> None:
    table = Table(title="one conversion per row, fresh process (CPU-s include start-up ~0.3 s)")
    for column in ("photo", "preset", "variants", "CPU s", "wall s", "peak RSS MB", "bytes"):
        table.add_column(column, justify="right")
    presets = {
        "today's set, former AVIF effort 3 q60": DEFAULT_PRESET.with_changes(
            widths=[], avif_effort=3, avif_quality=60
        ),
        "today's set (default)": DEFAULT_PRESET.with_changes(widths=[]),
        "+ widths 480/960/1600": DEFAULT_PRESET.with_changes(widths=list(WIDTHS)),
    }
    for name in PHOTOS:
        for label, preset in presets.items():
            results = [
                convert_in_fresh_process(CORPUS / name, preset.to_json()) for _ in range(runs)
            ]
            best = min(results, key=lambda r: r["cpu"])
            table.add_row(
                name,
                label,
                f"{best['variants']:.0f}",
                f"{best['cpu']:.2f}",
                f"{best['wall']:.2f}",
                f"{max(r['peak_mb'] for r in results):.0f}",
                f"{best['bytes'] / 1e6:.2f} MB",
            )
    console.print(table)


def placeholder_table(console: Console) -> None:
    configure_vips()
    table = Table(title="placeholder from the decoded image (one core)")
    for column in ("photo", "decoded", "ms per image (median of 20)", "thumbhash bytes"):
        table.add_column(column, justify="right")
    for name in PHOTOS:
        path = CORPUS / name
        info = probe(path, DEFAULT_LIMITS)
        decoded = pipeline.prepare(path, info, DEFAULT_PRESET.max_long_side, Deadline(60))
        times = []
        for _ in range(20):
            started = time.perf_counter()
            made = placeholder.make(decoded, DEFAULT_PRESET.jpeg_background)
            times.append(time.perf_counter() - started)
        size = len(__import__("base64").b64decode(made.thumbhash))
        table.add_row(
            name,
            f"{decoded.width}x{decoded.height}",
            f"{statistics.median(times) * 1000:.1f}",
            str(size),
        )
    console.print(table)


def animation_table(console: Console) -> None:
    configure_vips()
    path = CORPUS / "iss634.gif"
    info = probe(path, DEFAULT_LIMITS)
    decoded = pipeline.prepare(path, info, DEFAULT_PRESET.max_long_side, Deadline(60))
    page = pipeline.page_height(decoded)
    table = Table(title=f"animated AVIF of iss634.gif ({pipeline.frame_count(decoded)} frames)")
    for column in ("avif_animation_effort", "libavif speed", "CPU s", "wall s", "bytes"):
        table.add_column(column, justify="right")
    process = psutil.Process()
    for effort in (0, 1, 2, 3, 4):
        cpu = sum(process.cpu_times()[:2])
        started = time.perf_counter()
        data = encode_animated(decoded, page, DEFAULT_PRESET.avif_quality, effort)
        wall = time.perf_counter() - started
        cpu = sum(process.cpu_times()[:2]) - cpu
        table.add_row(str(effort), str(9 - effort), f"{cpu:.2f}", f"{wall:.2f}", f"{len(data):,}")
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--skip-animation", action="store_true")
    args = parser.parse_args()
    console = Console(width=150)
    console.print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.2f}, Python {platform.python_version()}"
    )
    widths_table(console, args.runs)
    placeholder_table(console)
    if not args.skip_animation:
        animation_table(console)


if __name__ == "__main__":
    main()
