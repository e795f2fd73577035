"""The reference ThumbHash and BlurHash decoders (npm `thumbhash` by Evan Wallace, npm `blurhash`
by Wolt), run with node: third-party readers of the placeholders the worker writes."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

FOLDER = Path(__file__).resolve().parents[1] / "js-decoders"


def ensure_installed() -> None:
    """`npm ci` the decoders (pinned by tests/js-decoders/package-lock.json) if they are not
    there yet; fails with one line when node or npm is missing."""
    if (FOLDER / "node_modules" / "thumbhash").is_dir() and (
        FOLDER / "node_modules" / "blurhash"
    ).is_dir():
        return
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise RuntimeError(
            "node and npm are needed for the placeholder tests (apt-get install npm)"
        )
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=FOLDER,
        check=True,
        timeout=300,
    )


@dataclass(frozen=True)
class Decoded:
    aspect_ratio: float  # ThumbHash's approximate width / height
    average: tuple[float, float, float, float]  # ThumbHash's average RGBA, 0..1
    thumbhash_size: tuple[int, int]
    thumbhash_rgba: bytes  # the reference rendering of the ThumbHash
    blurhash_valid: bool
    blurhash_rgba: bytes  # the BlurHash decoded at the requested size


def decode(thumbhash: str, blurhash: str, width: int, height: int) -> Decoded:
    ensure_installed()
    done = subprocess.run(
        ["node", str(FOLDER / "decode.mjs")],
        input=json.dumps(
            {"thumbhash": thumbhash, "blurhash": blurhash, "width": width, "height": height}
        ),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    answer = json.loads(done.stdout)
    thumb, blur = answer["thumbhash"], answer["blurhash"]
    average = thumb["average"]
    return Decoded(
        aspect_ratio=float(thumb["aspect_ratio"]),
        average=(average["r"], average["g"], average["b"], average["a"]),
        thumbhash_size=(thumb["width"], thumb["height"]),
        thumbhash_rgba=base64.b64decode(thumb["rgba"]),
        blurhash_valid=bool(blur["valid"]),
        blurhash_rgba=base64.b64decode(blur.get("rgba", "")),
    )
