"""sharp, the Node image library, with its documented default encoder settings (WebP q80, AVIF
q50, JPEG q80, each at the same longest side as uplodr's output): the peer bench/quality.py sets
uplodr's bytes and scores beside. Pinned by bench/sharp-peer/package-lock.json and installed
with `npm ci` on first use (sharp ships its own libvips build, so nothing else is needed).

One thread (`sharp.concurrency(1)`), so its CPU-seconds compare with a worker's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

FOLDER = Path(__file__).resolve().parent / "sharp-peer"


@dataclass(frozen=True)
class PeerOutput:
    format: str  # "webp", "avif", "jpeg"
    path: Path
    bytes: int
    width: int
    height: int
    cpu_s: float


def ensure_installed() -> None:
    """`npm ci` sharp if it is not there yet; one line when node or npm is missing."""
    if (FOLDER / "node_modules" / "sharp").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise SystemExit("the sharp peer needs node and npm (apt-get install npm)")
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=FOLDER,
        check=True,
        timeout=300,
    )


def sharp_defaults(source: Path, long_side: int, out_dir: Path) -> dict[str, PeerOutput]:
    """Encode `source` (oriented, fitted inside `long_side`, sRGB) with sharp's defaults."""
    ensure_installed()
    out_dir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["node", str(FOLDER / "encode.mjs"), str(source), str(long_side), str(out_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return {
        name: PeerOutput(
            name, Path(o["path"]), int(o["bytes"]), int(o["width"]), int(o["height"]), o["cpu_s"]
        )
        for name, o in json.loads(done.stdout).items()
    }


if __name__ == "__main__":
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name, out in sharp_defaults(Path(sys.argv[1]), int(sys.argv[2]), Path(tmp)).items():
            print(f"{name:5} {out.width}x{out.height} {out.bytes:>9,} B  {out.cpu_s:.2f} CPU-s")
