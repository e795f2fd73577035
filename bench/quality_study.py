"""Study: SSIMULACRA2 score against bytes for each format's quality setting, and whether the
cheap score the pipeline uses (a 512² centre crop ENCODED alone, `uplodr.imaging.quality`)
agrees with the score of the full-size encode.

    uv run python -m bench.quality_study [--photos ...] [--out var/quality_study.json]

Each photo is decoded once as the worker does (`pipeline.prepare`, long side 4096). For each
format and setting: the full image is encoded with the worker's encoder, decoded and scored at
1:1 against the decoded source — the whole image when it is at most `WHOLE_MP` megapixels, else
its 1024² centre crop (the issue's method; a whole 12 MP score needs ~8 GB with the numpy
implementation). Against that it compares three cheap scores: the 512² centre crop encoded
alone; the pipeline's sample (`targeted.sample`: four 256² tiles) encoded alone — what its
trials measure; and the same sample cut from the full encode — what its receipt says. It prints
them, the bytes, and per format the setting and bytes at each target.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pyvips
from rich.console import Console
from rich.table import Table

from tests.support.paths import CORPUS
from uplodr.formats import get as get_format
from uplodr.imaging import DEFAULT_LIMITS, configure_vips, pipeline, probe, quality, targeted
from uplodr.imaging.deadline import Deadline
from uplodr.imaging.encode import ENCODERS, QUALITY_SETTING
from uplodr.preset import DEFAULT_PRESET

PHOTOS = ("Landscape_6.jpg", "xmp_test-adobergb.jpg", "book-beside-flowers.jpg", "craft-beer.jpg")
SETTINGS = {
    "webp": (50, 60, 70, 75, 80, 85, 90),
    "avif": (35, 45, 55, 63, 70, 75, 80),
    "jpeg": (40, 50, 60, 70, 75, 82, 90),
}
WHOLE_MP = 2.5
TARGETS = (70, 73, 75, 78, 80)


@dataclass(frozen=True)
class Point:
    photo: str
    format: str
    setting: int
    bytes: int
    full_score: float  # of the full-size encode (whole image, or its 1024² centre crop)
    crop_score: float  # of the 512² centre crop encoded alone
    trial_score: float  # of the pipeline's sample (four 256² tiles) encoded alone: its trials
    sample_score: float  # of the same sample cut from the full encode: the receipt's score
    scored_whole: bool
    encode_cpu: float


def encode(image: pyvips.Image, fmt: str, setting: int) -> bytes:
    preset = DEFAULT_PRESET.with_changes(**{QUALITY_SETTING[fmt]: setting})
    return ENCODERS[fmt](image, preset)


def study(photo: str) -> list[Point]:
    path = CORPUS / photo
    info = probe(path, DEFAULT_LIMITS)
    decoded = pipeline.prepare(path, info, DEFAULT_PRESET.max_long_side, Deadline(600))
    decoded = pipeline.flatten(decoded, DEFAULT_PRESET.jpeg_background)
    whole = decoded.width * decoded.height <= WHOLE_MP * 1e6
    big = decoded if whole else quality.centre_crop(decoded, 1024)
    big_reference = quality.Reference(big)
    crop = quality.centre_crop(decoded)
    crop_reference = quality.Reference(crop)
    tiles = targeted.sample(decoded)
    tiles_reference = quality.Reference(tiles)
    points = []
    for fmt, settings in SETTINGS.items():
        for setting in settings:
            start = time.process_time()
            data = encode(decoded, fmt, setting)
            cpu = time.process_time() - start
            full = pyvips.Image.new_from_buffer(data, "")
            served = tiles_reference.score(targeted.sample(full))
            if not whole:
                full = quality.centre_crop(full, 1024)
            point = Point(
                photo,
                fmt,
                setting,
                len(data),
                round(big_reference.score(full), 2),
                round(crop_reference.score_bytes(encode(crop, fmt, setting)), 2),
                round(tiles_reference.score_bytes(encode(tiles, fmt, setting)), 2),
                round(served, 2),
                whole,
                round(cpu, 3),
            )
            print(point, flush=True)
            points.append(point)
    return points


def at_target(points: list[Point], target: float) -> tuple[float, float] | None:
    """Setting and bytes at `target` (full score), interpolated between bracketing settings."""
    ordered = sorted(points, key=lambda p: p.setting)
    for below, above in itertools.pairwise(ordered):
        if below.full_score < target <= above.full_score:
            share = (target - below.full_score) / (above.full_score - below.full_score)
            setting = below.setting + share * (above.setting - below.setting)
            size = below.bytes + share * (above.bytes - below.bytes)
            return setting, size
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", nargs="+", default=list(PHOTOS))
    parser.add_argument("--out", type=Path, default=Path("var/quality_study.json"))
    args = parser.parse_args()
    configure_vips()
    points = [point for photo in args.photos for point in study(photo)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([asdict(p) for p in points], indent=1))
    console = Console()
    table = Table(title="crop estimate vs full-size score")
    for column in ("photo", "format", "setting", "bytes", "full", "crop", "trial", "sample"):
        table.add_column(column)
    for p in points:
        table.add_row(
            p.photo,
            p.format,
            str(p.setting),
            f"{p.bytes:,}",
            f"{p.full_score:.1f}" + ("" if p.scored_whole else "*"),
            f"{p.crop_score - p.full_score:+.1f}",
            f"{p.trial_score - p.full_score:+.1f}",
            f"{p.sample_score - p.full_score:+.1f}",
        )
    console.print(table)
    for name in ("crop_score", "trial_score", "sample_score"):
        worst = max(abs(getattr(p, name) - p.full_score) for p in points if p.full_score > 60)
        console.print(f"largest |{name} - full| where full > 60: {worst:.2f} points")
    targets = Table(title="setting and bytes at each target (full score, interpolated)")
    for column in ("photo", "format", *map(str, TARGETS)):
        targets.add_column(column)
    for photo in args.photos:
        for fmt in SETTINGS:
            mine = [p for p in points if p.photo == photo and p.format == fmt]
            cells = []
            for target in TARGETS:
                found = at_target(mine, target)
                cells.append(f"q{found[0]:.0f} {found[1] / 1e3:,.0f} kB" if found else "-")
            targets.add_row(photo, get_format(fmt).label, *cells)
    console.print(targets)


if __name__ == "__main__":
    main()
