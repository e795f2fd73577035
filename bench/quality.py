"""Benchmark: today's fixed settings against the quality-targeted default, per photo and format.

    uv run python -m bench.quality [--photos ...] [--margin 10]

Each photo is converted in a fresh process (`imaging.convert`, as the worker does) with the
fixed preset (`"quality": "fixed"`: WebP q80, AVIF q63 effort 0, JPEG q82) and with the default
(SSIMULACRA2 75), no thumbnail (issue 17 item 6 is another engineer's). Per conversion: process
CPU-seconds and peak RSS (with MALLOC_ARENA_MAX=2, as the worker runs). Per full-size variant:
bytes, the SSIMULACRA2 score at 1:1 against the decoded source — the whole image up to
`WHOLE_MP` megapixels, else its 1024² centre crop (a whole 12 MP score needs ~8 GB with the
numpy implementation) — and, when targeted, the encoder setting, the encodes it took and the
receipt's score. `--margin` also reports which formats a
`format_margin` of that many percent would drop.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import pyvips
from rich.console import Console
from rich.table import Table

from tests.support.paths import CORPUS
from uplodr.imaging import DEFAULT_LIMITS, configure_vips, convert, pipeline, probe, quality
from uplodr.imaging.deadline import Deadline
from uplodr.imaging.winners import keep_winners
from uplodr.preset import DEFAULT_PRESET, Preset

PHOTOS = ("Landscape_6.jpg", "xmp_test-adobergb.jpg", "book-beside-flowers.jpg", "craft-beer.jpg")
WHOLE_MP = 2.5


@dataclass(frozen=True)
class Row:
    format: str
    bytes: int
    score: float  # at 1:1, whole image or 1024² centre crop
    setting: int | None
    encodes: int
    receipt: float | None


@dataclass(frozen=True)
class Run:
    photo: str
    mode: str
    cpu: float
    peak_mb: float
    rows: list[Row]
    skipped: list[str]
    whole: bool


def run(photo: str, mode: str, margin: int) -> Run:
    configure_vips()
    path = CORPUS / photo
    preset: Preset = DEFAULT_PRESET.with_changes(thumbnail_width=0)
    if mode == "fixed":
        preset = preset.with_changes(quality="fixed")
    start = time.process_time()
    conversion = convert(path, preset, DEFAULT_LIMITS)
    cpu = time.process_time() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    decoded = pipeline.prepare(
        path, probe(path, DEFAULT_LIMITS), preset.max_long_side, Deadline(600)
    )
    decoded = pipeline.flatten(decoded, preset.jpeg_background)
    whole = decoded.width * decoded.height <= WHOLE_MP * 1e6
    reference = quality.Reference(decoded if whole else quality.centre_crop(decoded, 1024))
    rows = []
    for variant in conversion.variants:
        shown = pyvips.Image.new_from_buffer(variant.data, "")
        score = reference.score(shown if whole else quality.centre_crop(shown, 1024))
        receipt = variant.quality
        rows.append(
            Row(
                variant.format,
                len(variant.data),
                round(score, 1),
                receipt.setting if receipt else None,
                receipt.encodes if receipt else 1,
                receipt.score if receipt else None,
            )
        )
    skipped = [] if mode == "fixed" else keep_winners(conversion.variants, margin)[1]
    return Run(photo, mode, cpu, peak, rows, [s.format for s in skipped], whole)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", nargs="+", default=list(PHOTOS))
    parser.add_argument("--margin", type=int, default=10)
    args = parser.parse_args()
    runs = []
    # As the worker runs (uplodr.worker.run): glibc reads it when a process starts.
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    for photo in args.photos:
        for mode in ("fixed", "target"):
            # a fresh process per conversion: its peak RSS is that conversion's
            spawn = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(1, mp_context=spawn, max_tasks_per_child=1) as pool:
                runs.append(pool.submit(run, photo, mode, args.margin).result())
    console = Console()
    console.print(f"{platform.node()}: {platform.processor() or platform.machine()}")
    table = Table(title="fixed (WebP q80, AVIF q63 e0, JPEG q82) vs target SSIMULACRA2 75")
    for column in ("photo", "mode", "format", "bytes", "score 1:1", "setting", "encodes",
                   "receipt", "CPU-s", "peak MB", f"dropped at {args.margin} %"):  # fmt: skip
        table.add_column(column)
    for r in runs:
        for index, row in enumerate(r.rows):
            first = index == 0
            table.add_row(
                r.photo if first else "",
                r.mode if first else "",
                row.format,
                f"{row.bytes:,}",
                f"{row.score:.1f}" + ("" if r.whole else "*"),
                "" if row.setting is None else str(row.setting),
                str(row.encodes),
                "" if row.receipt is None else f"{row.receipt:.1f}",
                f"{r.cpu:.2f}" if first else "",
                f"{r.peak_mb:.0f}" if first else "",
                ", ".join(r.skipped) if first else "",
            )
    console.print(table)
    console.print("* scored on the 1024² centre crop of the full-size variant")
    summary = Table(title="per photo: total bytes of the full-size variants, CPU")
    for column in ("photo", "fixed bytes", "target bytes", "change", "JPEG change",
                   "fixed CPU-s", "target CPU-s", "CPU ×", "encodes/variant"):  # fmt: skip
        summary.add_column(column)
    for fixed, target in zip(runs[::2], runs[1::2], strict=True):
        total_f = sum(r.bytes for r in fixed.rows)
        total_t = sum(r.bytes for r in target.rows)
        jpeg_f = next(r.bytes for r in fixed.rows if r.format == "jpeg")
        jpeg_t = next(r.bytes for r in target.rows if r.format == "jpeg")
        encodes = sum(r.encodes for r in target.rows) / len(target.rows)
        summary.add_row(
            fixed.photo,
            f"{total_f:,}",
            f"{total_t:,}",
            f"{total_t / total_f - 1:+.1%}",
            f"{jpeg_t / jpeg_f - 1:+.1%}",
            f"{fixed.cpu:.2f}",
            f"{target.cpu:.2f}",
            f"{target.cpu / fixed.cpu:.2f}",
            f"{encodes:.1f}",
        )
    console.print(summary)


if __name__ == "__main__":
    main()
