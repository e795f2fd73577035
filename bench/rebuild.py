"""Benchmark: `uplodr rebuild` of 40 sets of 2 MP photos into a new preset.

    uv run --locked python -m bench.rebuild [--count 40] [--pools 1 2] [--fly]

The sets (a WebP and the kept original: 2 MP JPEG crops of corpus photos, each unique) are
published into a local store once, copied for each run, then rebuilt by the `uplodr rebuild`
command as a user runs it — with `--pool-max` 1 and 2 on the local provider and, with
`--fly`, 2 on the Fly API simulator (machines as real worker processes, its create rate limit).
The new preset is the "new widths" case of issue 18: WebP and AVIF at full size and at 480 and
960 px. Printed per run: wall seconds, images per minute, machine-seconds per image (the
command's own summary: each job's share of its machine), and machines created (counted from the
command's log; the simulator's own count beside it).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from tests.support.fly import fly_env
from tests.support.fly_api import FlyApiServer, logged_worker_process
from tests.support.paths import CORPUS
from tests.support.procs import free_port
from tests.support.stored_sets import publish_set

PHOTOS = ("book-beside-flowers.jpg", "craft-beer.jpg", "Landscape_6.jpg")
SIZE = (1632, 1224)  # 2.0 MP
PRESETS = '[web]\nformats = ["webp", "avif"]\nwidths = [480, 960]\nthumbnail_width = 0\n'
CREATED = re.compile(r"uplodr\.dispatch: lease \w+: machine \S+ created")


def originals(count: int) -> Iterator[bytes]:
    """`count` unique 2 MP JPEGs: crops of the corpus photos at shifting offsets."""
    sources = [Image.open(CORPUS / name).convert("RGB") for name in PHOTOS]
    for index in range(count):
        photo = sources[index % len(sources)]
        shift = 8 * (index // len(sources))
        width, height = photo.size
        box = (shift, shift, width - shift, height - shift)
        crop = photo.crop(box).resize(SIZE)
        out = io.BytesIO()
        crop.save(out, "JPEG", quality=90)
        yield out.getvalue()


def make_store(root: Path, count: int) -> None:
    async def go() -> None:
        for index, data in enumerate(originals(count)):
            await publish_set(root, "photos", f"photo{index:03d}", data)

    asyncio.run(go())


def rebuild(
    work: Path, template: Path, presets: Path, args: list[str], env: dict[str, str]
) -> dict[str, float]:
    store = work / "store"
    shutil.copytree(template, store)
    cwd = work / "cwd"
    cwd.mkdir(parents=True)
    command = [sys.executable, "-m", "uplodr", "rebuild", "--folder", "photos"]
    command += ["--preset", "web", "--presets", str(presets), "--store", str(store)]
    command += ["--state-dir", str(work / "state"), "--json", *args]
    started = time.monotonic()
    done = subprocess.run(
        command, cwd=cwd, env={**os.environ, **env}, capture_output=True, timeout=3600
    )
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"rebuild failed ({done.returncode}): {done.stderr.decode()[-3000:]}")
    summary = json.loads(done.stdout)
    images = summary["rebuilt"]
    return {
        "wall": wall,
        "images": images,
        "per_minute": images / wall * 60,
        "machine_s_per_image": summary["machine_seconds"] / images if images else 0.0,
        "machines": len(CREATED.findall(done.stderr.decode())),
        "failed": len(summary["failed"]),
    }


@contextmanager
def fly_simulator(root: Path) -> Iterator[tuple[FlyApiServer, dict[str, str]]]:
    with FlyApiServer(
        grpc_port=free_port(), process_factory=logged_worker_process(root / "fly-workers")
    ) as fly:
        yield fly, fly_env(fly, regions="")


def row(label: str, f: dict[str, float], extra: str = "") -> str:
    return (
        f"{label:<22} {f['images']:6.0f} {f['wall']:7.1f} {f['per_minute']:10.1f} "
        f"{f['machine_s_per_image']:12.2f} {f['machines']:8.0f} {f['failed']:6.0f} {extra}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rebuild", description=__doc__)
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--pools", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--fly", action="store_true", help="also --pool-max 2 on the simulator")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="uplodr-bench-rebuild-") as folder:
        root = Path(folder)
        presets = root / "presets.toml"
        presets.write_text(PRESETS)
        make_store(root / "template", args.count)
        print(
            f"{'run':<22} {'images':>6} {'wall s':>7} {'images/min':>10} "
            f"{'machine-s/img':>12} {'machines':>8} {'failed':>6}",
            flush=True,
        )
        for pool in args.pools:
            work = root / f"local-{pool}"
            f = rebuild(work, root / "template", presets, ["--pool-max", str(pool)], {})
            print(row(f"local --pool-max {pool}", f), flush=True)
        if args.fly:
            with fly_simulator(root / "fly") as (fly, env):
                work = root / "fly-2"
                fly_args = ["--provider", "fly", "--pool-max", "2"]
                f = rebuild(work, root / "template", presets, fly_args, env)
                print(row("fly-sim --pool-max 2", f, f"(simulator: {fly.created})"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
