"""Benchmark: the AVIF effort to use by default — bytes against CPU-seconds at equal quality.

    uv run python -m bench.avif_effort [--photos ...] [--efforts 0 1 2 3 4] [--qualities ...]

Each photo is decoded once as the worker does (`pipeline.prepare`, long side capped at the
default 4096 px). For every effort (libvips effort; aom speed = 9 - effort) and quality it is
encoded with the worker's encoder settings, the CPU-seconds of the encode are measured (process
CPU time: aom runs threads) and the result is decoded and compared with the same reference, the
decoded image, by SSIM on luma (scikit-image, `structural_similarity`, data range 255).

Equal perceived quality: for each photo the target is the SSIM of today's default (effort 3,
quality 60); each effort's bytes and CPU-seconds at that SSIM are interpolated linearly between
the two qualities whose SSIM brackets it. The summary table is relative to effort 3.
The scikit-image dependency is in the `bench` dependency group only.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import psutil
import pyvips
from rich.console import Console
from rich.table import Table
from skimage.metrics import structural_similarity

from tests.support.paths import CORPUS
from uplodr.imaging import DEFAULT_LIMITS, configure_vips, pipeline, probe
from uplodr.imaging.deadline import Deadline
from uplodr.preset import DEFAULT_PRESET

PHOTOS = ("book-beside-flowers.jpg", "craft-beer.jpg", "IMG_2682.heic")
REFERENCE_EFFORT, REFERENCE_QUALITY = 3, 60


@dataclass(frozen=True)
class Point:
    effort: int
    quality: int
    bytes: int
    cpu: float
    ssim: float


def luma(image: pyvips.Image) -> Any:
    grey = image.colourspace("b-w")[0].cast("uchar")
    return np.ndarray(
        buffer=grey.write_to_memory(), dtype=np.uint8, shape=(grey.height, grey.width)
    )


def measure(reference: pyvips.Image, reference_luma: Any, effort: int, quality: int) -> Point:
    process = psutil.Process()
    cpu = sum(process.cpu_times()[:2])
    data: bytes = reference.heifsave_buffer(
        compression="av1", Q=quality, effort=effort, keep="none"
    )
    cpu = sum(process.cpu_times()[:2]) - cpu
    decoded = pyvips.Image.new_from_buffer(data, "")
    ssim = float(
        structural_similarity(  # type: ignore[no-untyped-call]
            reference_luma, luma(decoded), data_range=255
        )
    )
    return Point(effort, quality, len(data), cpu, ssim)


def at_ssim(points: list[Point], target: float) -> tuple[float, float, float] | None:
    """(quality, bytes, cpu) where this effort's SSIM reaches `target`, interpolated."""
    ordered = sorted(points, key=lambda p: p.quality)
    for low, high in itertools.pairwise(ordered):
        if low.ssim <= target <= high.ssim and high.ssim > low.ssim:
            t = (target - low.ssim) / (high.ssim - low.ssim)
            return (
                low.quality + t * (high.quality - low.quality),
                low.bytes + t * (high.bytes - low.bytes),
                low.cpu + t * (high.cpu - low.cpu),
            )
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", nargs="+", default=list(PHOTOS))
    parser.add_argument("--efforts", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--qualities", nargs="+", type=int, default=[50, 55, 60, 65, 70])
    args = parser.parse_args()
    configure_vips()
    console = Console(width=150)
    console.print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.2f}; libvips {pyvips.version(0)}.{pyvips.version(1)}"
    )
    summary: dict[int, list[tuple[float, float, float]]] = {e: [] for e in args.efforts}
    for name in args.photos:
        path = CORPUS / name
        reference = pipeline.prepare(
            path, probe(path, DEFAULT_LIMITS), DEFAULT_PRESET.max_long_side, Deadline(600)
        )
        reference_luma = luma(reference)
        points: list[Point] = []
        table = Table(title=f"{name} ({reference.width}x{reference.height})")
        for column in ("effort", "quality", "bytes", "encode CPU s", "SSIM (luma)"):
            table.add_column(column, justify="right")
        for effort in args.efforts:
            for quality in args.qualities:
                started = time.perf_counter()
                point = measure(reference, reference_luma, effort, quality)
                points.append(point)
                table.add_row(
                    str(effort),
                    str(quality),
                    f"{point.bytes:,}",
                    f"{point.cpu:.2f}",
                    f"{point.ssim:.4f}",
                )
                console.log(
                    f"{name} effort {effort} q{quality}: {time.perf_counter() - started:.1f}s"
                )
        console.print(table)
        target = next(
            p.ssim for p in points if (p.effort, p.quality) == (REFERENCE_EFFORT, REFERENCE_QUALITY)
        )
        for effort in args.efforts:
            found = at_ssim([p for p in points if p.effort == effort], target)
            if found is not None:
                summary[effort].append(found)
            else:
                console.print(f"{name}: effort {effort} does not reach SSIM {target:.4f}")
    base = summary[REFERENCE_EFFORT]
    table = Table(
        title=f"at the SSIM of effort {REFERENCE_EFFORT} q{REFERENCE_QUALITY}, "
        f"summed over {len(args.photos)} photos"
    )
    for column in (
        "effort",
        "aom speed",
        "quality needed",
        "bytes",
        "vs effort 3",
        "CPU s",
        "vs effort 3",
    ):
        table.add_column(column, justify="right")
    base_bytes = sum(b for _, b, _ in base)
    base_cpu = sum(c for _, _, c in base)
    for effort in args.efforts:
        reached = summary[effort]
        if len(reached) != len(base):
            continue
        total_bytes = sum(b for _, b, _ in reached)
        total_cpu = sum(c for _, _, c in reached)
        qualities = ", ".join(f"{q:.0f}" for q, _, _ in reached)
        table.add_row(
            str(effort),
            str(9 - effort),
            qualities,
            f"{total_bytes:,.0f}",
            f"{total_bytes / base_bytes - 1:+.1%}",
            f"{total_cpu:.2f}",
            f"{total_cpu / base_cpu:.2f}x",
        )
    console.print(table)


if __name__ == "__main__":
    main()
