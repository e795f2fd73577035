"""Benchmark: today's fixed settings, the quality-targeted default and sharp's defaults, per photo
and format, and whether issue 17's targets are met.

    uv run python -m bench.quality [--photos ...] [--margin 10] [--no-sharp]

Each photo is converted in a fresh process (`imaging.convert`, as the worker does, thumbnail
included) five times: `today`, the issue's baseline — the fixed settings below with the thumbnail
as it was made before this work (libimagequant effort 7, zlib 6: within 4 % of the CPU-s of the
code before issue 17 on the four photos, measured on a worktree of 0c5bac7^); the fixed preset
(`"quality": "fixed"`: WebP q80, AVIF q63 effort 0, JPEG q82, the thumbnail as the default makes
it now); the default (SSIMULACRA2 75, `format_margin` 10: what is stored, and its CPU);
`every`, the default with every format kept (`format_margin` 0), so each format's bytes and
score are shown; and `+jxl`, that with JPEG XL first (`"formats": ["jxl", "webp", "avif",
"jpeg"]`). Per conversion: process CPU-seconds and peak RSS (MALLOC_ARENA_MAX=2,
as the worker runs). Per full-size variant: bytes, the SSIMULACRA2 score at 1:1 against the
decoded source — the whole image up to `WHOLE_MP` megapixels, else its 1024² centre crop (a whole
12 MP score needs ~8 GB with the numpy implementation), scored by the package's float64
arithmetic (`quality.Reference`, the package's score to 1e-9), not the worker's float32 sample —
and, when targeted, the encoder setting, the encodes it took and the receipt's score.

The peer: npm `sharp` with its defaults (WebP q80, AVIF q50 effort 4, JPEG q80) at the same
output size (bench/sharp_peer.py, one thread), scored the same way; CPU-s as node reports them.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyvips
from rich.console import Console
from rich.table import Table

from bench.sharp_peer import sharp_defaults
from tests.support.paths import CORPUS
from uplodr.imaging import DEFAULT_LIMITS, configure_vips, convert, pipeline, probe, quality
from uplodr.imaging.deadline import Deadline
from uplodr.imaging.winners import keep_winners
from uplodr.preset import DEFAULT_PRESET, Preset

PHOTOS = ("Landscape_6.jpg", "xmp_test-adobergb.jpg", "book-beside-flowers.jpg", "craft-beer.jpg")
WHOLE_MP = 2.5
MODES = ("today", "fixed", "default", "every", "+jxl")
# Issue 17's targets.
JPEG_SAVING = 0.15
JXL_UNDER_AVIF = 0.20
TOTAL_SAVING = 0.10
CPU_BUDGET = 1.5


@dataclass(frozen=True)
class Row:
    format: str
    role: str
    bytes: int
    score: float | None  # at 1:1, whole image or 1024² centre crop; None for the thumbnail
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
    stored: list[str]  # full-size formats kept at --margin
    whole: bool

    def full(self, fmt: str) -> Row | None:
        return next((r for r in self.rows if r.format == fmt and r.role == "full"), None)

    def full_bytes(self, formats: list[str] | None = None) -> int:
        return sum(
            r.bytes
            for r in self.rows
            if r.role == "full" and (formats is None or r.format in formats)
        )


class Scorer:
    """SSIMULACRA2 at 1:1 against the photo decoded as the worker does (float64)."""

    def __init__(self, path: Path, preset: Preset) -> None:
        decoded = pipeline.prepare(
            path, probe(path, DEFAULT_LIMITS), preset.max_long_side, Deadline(600)
        )
        self.decoded = pipeline.flatten(decoded, preset.jpeg_background)
        self.whole = self.decoded.width * self.decoded.height <= WHOLE_MP * 1e6
        self.reference = quality.Reference(self._view(self.decoded))

    def _view(self, image: pyvips.Image) -> pyvips.Image:
        return image if self.whole else quality.centre_crop(image, 1024)

    def score(self, data: bytes) -> float | None:
        shown = quality.decode(data)
        if (shown.width, shown.height) != (self.decoded.width, self.decoded.height):
            return None  # not the same output size: no 1:1 score
        return round(self.reference.score(self._view(shown)), 1)


def run(photo: str, mode: str, margin: int) -> Run:
    configure_vips()
    path = CORPUS / photo
    preset: Preset = DEFAULT_PRESET
    if mode == "today":
        preset = preset.with_changes(quality="fixed", png_compression=6, png_palette_effort=7)
    elif mode == "fixed":
        preset = preset.with_changes(quality="fixed")
    elif mode == "every":
        preset = preset.with_changes(format_margin=0)
    elif mode == "+jxl":
        preset = preset.with_changes(formats=["jxl", *DEFAULT_PRESET.formats], format_margin=0)
    start = time.process_time()
    conversion = convert(path, preset, DEFAULT_LIMITS)
    cpu = time.process_time() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    scorer = Scorer(path, preset)
    rows = []
    for variant in conversion.variants:
        receipt = variant.quality
        full = variant.role == "full"
        rows.append(
            Row(
                variant.format,
                variant.role,
                len(variant.data),
                scorer.score(variant.data) if full else None,
                receipt.setting if receipt else None,
                receipt.encodes if receipt else 1,
                receipt.score if receipt else None,
            )
        )
    if mode in ("every", "+jxl"):  # what `margin` would keep of every format
        kept = keep_winners(conversion.variants, margin)[0]
    else:
        kept = conversion.variants
    stored = [v.format for v in kept if v.role == "full"]
    return Run(photo, mode, cpu, peak, rows, stored, scorer.whole)


def peer(photo: str) -> Run:
    """sharp's defaults at the preset's long side, scored as uplodr's variants are."""
    configure_vips()
    path = CORPUS / photo
    scorer = Scorer(path, DEFAULT_PRESET)
    with tempfile.TemporaryDirectory() as tmp:
        outputs = sharp_defaults(path, DEFAULT_PRESET.max_long_side, Path(tmp))
        rows = [
            Row(name, "full", out.bytes, scorer.score(out.path.read_bytes()), None, 1, None)
            for name, out in outputs.items()
        ]
        cpu = sum(out.cpu_s for out in outputs.values())
    return Run(photo, "sharp", cpu, 0.0, rows, [r.format for r in rows], scorer.whole)


def fresh(function: object, *args: object) -> Run:
    """`function(*args)` in a fresh process: its peak RSS is that conversion's."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn, max_tasks_per_child=1) as pool:
        result: Run = pool.submit(function, *args).result()  # type: ignore[arg-type]
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", nargs="+", default=list(PHOTOS))
    parser.add_argument("--margin", type=int, default=DEFAULT_PRESET.format_margin or 10)
    parser.add_argument("--no-sharp", action="store_true", help="leave the peer out")
    args = parser.parse_args()
    # As the worker runs (uplodr.worker.run): glibc reads it when a process starts.
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    runs: dict[tuple[str, str], Run] = {}
    for photo in args.photos:
        for mode in MODES:
            runs[photo, mode] = fresh(run, photo, mode, args.margin)
        if not args.no_sharp:
            runs[photo, "sharp"] = fresh(peer, photo)
    console = Console()
    console.print(f"{platform.node()}: {platform.processor() or platform.machine()}")
    print_variants(console, runs, args.margin)
    print_summary(console, runs, args.photos, args.margin)
    print_targets(console, runs, args.photos)


def print_variants(console: Console, runs: dict[tuple[str, str], Run], margin: int) -> None:
    table = Table(title="fixed (WebP q80, AVIF q63 e0, JPEG q82) · target SSIMULACRA2 75 · sharp")
    for column in ("photo", "mode", "variant", "bytes", "score 1:1", "setting", "encodes",
                   "receipt", "CPU-s", "peak MB", f"stored (at {margin} %)"):  # fmt: skip
        table.add_column(column)
    for r in runs.values():
        for index, row in enumerate(r.rows):
            first = index == 0
            score = "" if row.score is None else f"{row.score:.1f}" + ("" if r.whole else "*")
            table.add_row(
                r.photo if first else "",
                r.mode if first else "",
                row.format if row.role == "full" else f"{row.format} {row.role}",
                f"{row.bytes:,}",
                score,
                "" if row.setting is None else str(row.setting),
                str(row.encodes),
                "" if row.receipt is None else f"{row.receipt:.1f}",
                f"{r.cpu:.2f}" if first else "",
                f"{r.peak_mb:.0f}" if first and r.peak_mb else "",
                ", ".join(r.stored) if first and r.mode != "sharp" else "",
            )
    console.print(table)
    console.print("* scored on the 1024² centre crop of the full-size variant")


def print_summary(
    console: Console, runs: dict[tuple[str, str], Run], photos: list[str], margin: int
) -> None:
    summary = Table(title=f"per photo, full-size variants (issue 17's targets; margin {margin} %)")
    for column in ("photo", "fixed bytes", "every format kept", "default: stored",
                   "JPEG", "JXL vs fixed AVIF", "today CPU-s", "fixed CPU-s", "default CPU-s",
                   "× today", "× fixed",
                   "every CPU-s", "+JXL CPU-s", "encodes/variant", "sharp bytes",
                   "sharp CPU-s"):  # fmt: skip
        summary.add_column(column)
    for photo in photos:
        today, fixed, default, every, jxl = (runs[photo, mode] for mode in MODES)
        total_f = fixed.full_bytes()
        total_e = every.full_bytes()
        stored = default.full_bytes()
        jpeg_f, jpeg_t = fixed.full("jpeg"), default.full("jpeg")
        avif_f, jxl_t = fixed.full("avif"), jxl.full("jxl")
        full_rows = [r for r in every.rows if r.role == "full"]
        encodes = sum(r.encodes for r in full_rows) / len(full_rows)
        sharp = runs.get((photo, "sharp"))
        summary.add_row(
            photo,
            f"{total_f:,}",
            f"{total_e:,} ({total_e / total_f - 1:+.1%})",
            f"{stored:,} ({stored / total_f - 1:+.1%}: {', '.join(default.stored)})",
            f"{jpeg_t.bytes / jpeg_f.bytes - 1:+.1%}" if jpeg_f and jpeg_t else "",
            f"{jxl_t.bytes / avif_f.bytes - 1:+.1%}"
            + ("" if "jxl" in jxl.stored else f" (not stored at {margin} %)")
            if avif_f and jxl_t
            else "",
            f"{today.cpu:.2f}",
            f"{fixed.cpu:.2f}",
            f"{default.cpu:.2f}",
            f"{default.cpu / today.cpu:.2f}",
            f"{default.cpu / fixed.cpu:.2f}",
            f"{every.cpu:.2f}",
            f"{jxl.cpu:.2f}",
            f"{encodes:.1f}",
            f"{sharp.full_bytes():,}" if sharp else "",
            f"{sharp.cpu:.2f}" if sharp else "",
        )
    console.print(summary)


def print_targets(console: Console, runs: dict[tuple[str, str], Run], photos: list[str]) -> None:
    """Issue 17's targets, met or not, per photo (against `today`, the issue's baseline)."""
    table = Table(title="issue 17's targets")
    for column in ("target", *photos):
        table.add_column(column)

    def row(name: str, values: list[float | None], met: Callable[[float], bool]) -> None:
        cells = ["—" if v is None else f"{v:+.1%} {'met' if met(v) else 'NOT met'}" for v in values]
        table.add_row(name, *cells)

    def ratio(new: Row | None, old: Row | None) -> float | None:
        return new.bytes / old.bytes - 1 if new and old else None

    fixed = [runs[photo, "fixed"] for photo in photos]
    row(f"JPEG ≥ {JPEG_SAVING:.0%} fewer bytes",
        [ratio(runs[photo, "default"].full("jpeg"), run.full("jpeg"))
         for photo, run in zip(photos, fixed, strict=True)],
        lambda v: v <= -JPEG_SAVING)  # fmt: skip
    row(f"JXL ≥ {JXL_UNDER_AVIF:.0%} under today's AVIF",
        [ratio(runs[photo, "+jxl"].full("jxl"), run.full("avif"))
         for photo, run in zip(photos, fixed, strict=True)],
        lambda v: v <= -JXL_UNDER_AVIF)  # fmt: skip
    row(f"full-size bytes ≥ {TOTAL_SAVING:.0%} fewer",
        [runs[photo, "default"].full_bytes() / run.full_bytes() - 1
         for photo, run in zip(photos, fixed, strict=True)],
        lambda v: v <= -TOTAL_SAVING)  # fmt: skip
    row(f"CPU ≤ {CPU_BUDGET:g}× today's (as +%)",
        [runs[photo, "default"].cpu / runs[photo, "today"].cpu - 1 for photo in photos],
        lambda v: v <= CPU_BUDGET - 1)  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    main()
