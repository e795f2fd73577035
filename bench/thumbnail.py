"""Benchmark: the PNG thumbnail before and after issue 17 — CPU-seconds, bytes, look.

    uv run python -m bench.thumbnail [--photos ...] [--runs 3]

Each corpus image is decoded once as the worker does (`pipeline.prepare`, the default preset's
long-side cap), its first frame shrunk to the default `thumbnail_width` and kept in memory, then
the thumbnail is encoded with yesterday's settings (libimagequant effort 7, full dither, zlib 6)
and with today's (the default preset: effort 1, dither 0.5, zlib 9). The CPU-seconds are the
process's (user + system) for the shrink and the encode together, the best of `--runs`. The look
is SSIM of each against the unquantised thumbnail (scikit-image, RGB, data range 255); the
SSIMULACRA2 scores quoted in docs/benchmarks.md were taken the same way with PyPI `ssimulacra2`.

Last column: what the worker answers with the default preset (`convert`), the thumbnail's bytes
and width against the full-size variant of the preset's first format (WebP) — the thumbnail is
never larger: a small upload's thumbnail is made narrower.
The scikit-image dependency is in the `bench` dependency group only.
"""

from __future__ import annotations

import argparse
import os
import platform
from dataclasses import replace
from typing import Any

import numpy as np
import psutil
import pyvips
from rich.console import Console
from rich.table import Table
from skimage.metrics import structural_similarity

from tests.support.paths import CORPUS
from uplodr.imaging import DEFAULT_LIMITS, configure_vips, convert, pipeline, probe
from uplodr.imaging.deadline import Deadline
from uplodr.imaging.encode import PALETTE_DITHER
from uplodr.preset import DEFAULT_PRESET

PHOTOS = (
    "book-beside-flowers.jpg",
    "craft-beer.jpg",
    "Landscape_6.jpg",
    "xmp_test-adobergb.jpg",
    "IMG_2682.heic",
    "alpha-premultiply-2048x1536-paper.png",
    "sample-16bit.png",
    "Channel_digital_image_CMYK_color.jpg",
)
# (label, libimagequant effort, dither, zlib level)
SETTINGS = (
    ("before", 7, 1.0, 6),
    ("after", DEFAULT_PRESET.png_palette_effort, PALETTE_DITHER, DEFAULT_PRESET.png_compression),
)


def pixels(image: pyvips.Image) -> Any:
    if image.hasalpha():
        image = image.flatten(background=[255, 255, 255])
    return np.ndarray(
        buffer=image.write_to_memory(),
        dtype=np.uint8,
        shape=(image.height, image.width, image.bands),
    )


def cpu_seconds() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


def thumbnail(still: pyvips.Image, effort: int, dither: float, zlib: int) -> tuple[bytes, float]:
    """The encoded thumbnail and the CPU-seconds of shrink + encode."""
    started = cpu_seconds()
    thumb = pipeline.fit_width(still, DEFAULT_PRESET.thumbnail_width).copy_memory()
    data: bytes = thumb.pngsave_buffer(
        compression=zlib,
        palette=True,
        Q=DEFAULT_PRESET.png_palette_quality,
        effort=effort,
        dither=dither,
        keep="none",
    )
    return data, cpu_seconds() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--photos", nargs="+", default=list(PHOTOS))
    args = parser.parse_args()
    configure_vips()
    console = Console(width=160)
    cores, load = os.cpu_count(), os.getloadavg()[0]
    console.print(
        f"{platform.machine()}, {cores} cores, load {load:.2f}; pyvips {pyvips.__version__}"
    )
    table = Table(title="PNG thumbnail, before -> after")
    for column in (
        "image",
        "CPU s before",
        "CPU s after",
        "bytes before",
        "bytes after",
        "SSIM before",
        "SSIM after",
        "answer: thumb / full WebP (thumb width)",
    ):
        table.add_column(column, justify="right")
    total = {"before": 0.0, "after": 0.0}
    for name in args.photos:
        path = CORPUS / name
        info = probe(path, DEFAULT_LIMITS)
        still = pipeline.first_frame(
            pipeline.prepare(path, info, DEFAULT_PRESET.max_long_side, Deadline(600))
        )
        reference = pixels(pipeline.fit_width(still, DEFAULT_PRESET.thumbnail_width))
        row: dict[str, tuple[int, float, float]] = {}
        for label, effort, dither, zlib in SETTINGS:
            runs = [thumbnail(still, effort, dither, zlib) for _ in range(args.runs)]
            data = runs[0][0]
            seconds = min(cpu for _, cpu in runs)
            total[label] += seconds
            decoded = pixels(pyvips.Image.new_from_buffer(data, ""))
            ssim = float(
                structural_similarity(  # type: ignore[no-untyped-call]
                    reference, decoded, channel_axis=2, data_range=255
                )
            )
            row[label] = (len(data), seconds, ssim)
        answer = convert(path, replace(DEFAULT_PRESET, widths=()), DEFAULT_LIMITS)
        thumb = answer.variants[-1]
        first = answer.variants[0]  # the full size of the preset's first format (WebP)
        table.add_row(
            name,
            f"{row['before'][1]:.3f}",
            f"{row['after'][1]:.3f}",
            f"{row['before'][0]:,}",
            f"{row['after'][0]:,}",
            f"{row['before'][2]:.4f}",
            f"{row['after'][2]:.4f}",
            f"{len(thumb.data):,} / {len(first.data):,} ({thumb.width} px)",
        )
    console.print(table)
    console.print(
        f"thumbnail CPU-s over {len(args.photos)} images: before {total['before']:.2f}, "
        f"after {total['after']:.2f} ({total['before'] / max(total['after'], 1e-9):.1f}x less)"
    )


if __name__ == "__main__":
    main()
