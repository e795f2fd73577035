"""Benchmark: JPEG XL through imagecodecs (libjxl) — bytes, CPU-seconds and peak memory per effort,
and the lossless recompression of the corpus JPEGs.

    uv run python -m bench.jxl [--photos ...] [--efforts 3 4 5 7] [--quality 75]

Each encode runs in a fresh process (`MALLOC_ARENA_MAX=2`, as a worker): the photo is decoded as
the worker does (`pipeline.prepare`, `--max-long-side`, default: no cap, the photo's full size),
then encoded once by `imagecodecs.jpegxl_encode` on 2 threads; the child reports the encode's
CPU-seconds (all threads), its bytes, and the process's peak RSS (ru_maxrss) before and after the
encode — the encode's own memory is the difference. The recompression table repacks every corpus
JPEG with `uplodr.imaging.original.repack` (libjxl's JPEG transcoding, checked byte for byte).
The library was chosen against pillow-jxl-plugin by the same measurement (docs/formats.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from rich.console import Console
from rich.table import Table

from tests.support.paths import CORPUS

PHOTOS = ("book-beside-flowers.jpg", "craft-beer.jpg")
JPEGS = (
    "book-beside-flowers.jpg",
    "craft-beer.jpg",
    "Landscape_6.jpg",
    "xmp_test-adobergb.jpg",
    "Channel_digital_image_CMYK_color.jpg",
)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(photo: str, effort: int, quality: int, max_long_side: int) -> dict[str, float]:
    """In the child: decode, encode once, report."""
    import imagecodecs
    import numpy as np

    from uplodr.imaging import DEFAULT_LIMITS, configure_vips, pipeline, probe
    from uplodr.imaging.deadline import Deadline

    configure_vips()
    path = CORPUS / photo
    image = pipeline.prepare(path, probe(path, DEFAULT_LIMITS), max_long_side, Deadline(600))
    before = peak_mb()
    started = time.process_time()
    pixels = np.frombuffer(image.write_to_memory(), dtype=np.uint8).reshape(
        image.height, image.width, image.bands
    )
    data = imagecodecs.jpegxl_encode(pixels, level=quality, effort=effort, numthreads=2)
    return {
        "megapixels": image.width * image.height / 1e6,
        "bytes": len(data),
        "cpu": time.process_time() - started,
        "before": before,
        "peak": peak_mb(),
    }


def measure(photo: str, effort: int, quality: int, max_long_side: int) -> dict[str, float]:
    child = subprocess.run(
        [
            *(sys.executable, "-m", "bench.jxl", "--one", photo, str(effort), str(quality)),
            *("--max-long-side", str(max_long_side)),
        ],
        env={**os.environ, "MALLOC_ARENA_MAX": "2"},
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(child.stdout)
    return result


def recompression(console: Console) -> None:
    from uplodr.imaging.original import repack

    table = Table(title="lossless JPEG -> JPEG XL (original_jxl), restored byte for byte")
    for column in ("JPEG", "bytes", "JPEG XL bytes", "saved", "CPU s"):
        table.add_column(column, justify="right")
    total_in = total_out = 0
    for name in JPEGS:
        path = CORPUS / name
        started = time.process_time()
        repacked = repack(path, "jpeg")
        cpu = time.process_time() - started
        size = path.stat().st_size
        if repacked is None:
            table.add_row(name, f"{size:,}", "kept as JPEG", "-", f"{cpu:.2f}")
            continue
        total_in += size
        total_out += len(repacked.data)
        saved = 1 - len(repacked.data) / size
        table.add_row(name, f"{size:,}", f"{len(repacked.data):,}", f"{saved:.1%}", f"{cpu:.2f}")
    console.print(table)
    if total_in:
        console.print(f"repacked JPEGs together: {1 - total_out / total_in:.1%} smaller")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", nargs="+", default=list(PHOTOS))
    parser.add_argument("--efforts", nargs="+", type=int, default=[3, 4, 5, 7])
    parser.add_argument("--quality", type=int, default=75)
    parser.add_argument("--max-long-side", type=int, default=65535)
    parser.add_argument("--one", nargs=3, metavar=("PHOTO", "EFFORT", "QUALITY"))
    args = parser.parse_args()
    if args.one:
        photo, effort, quality = args.one
        print(json.dumps(one(photo, int(effort), int(quality), args.max_long_side)))
        return
    console = Console(width=150)
    console.print(f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    table = Table(title=f"imagecodecs jpegxl_encode, quality {args.quality}, 2 threads")
    for column in ("photo", "MP", "effort", "bytes", "CPU s", "RSS before", "peak RSS", "encode"):
        table.add_column(column, justify="right")
    for photo in args.photos:
        for effort in args.efforts:
            r = measure(photo, effort, args.quality, args.max_long_side)
            table.add_row(
                photo,
                f"{r['megapixels']:.1f}",
                str(effort),
                f"{int(r['bytes']):,}",
                f"{r['cpu']:.2f}",
                f"{r['before']:.0f} MB",
                f"{r['peak']:.0f} MB",
                f"+{r['peak'] - r['before']:.0f} MB",
            )
    console.print(table)
    recompression(console)


if __name__ == "__main__":
    main()
