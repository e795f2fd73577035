"""The reference ThumbHash and BlurHash decoders (npm `thumbhash` by Evan Wallace, npm `blurhash`
by Wolt), run with node: third-party readers of the placeholders the worker writes; and a JPEG XL
decoder independent of the worker's encoder (npm `@jsquash/jxl`, Squoosh's libjxl built to
WebAssembly; the worker writes with the imagecodecs wheel's native libjxl)."""

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
    modules = FOLDER / "node_modules"
    if all((modules / name).is_dir() for name in ("thumbhash", "blurhash", "@jsquash/jxl")):
        return
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise RuntimeError(
            "node and npm are needed for the placeholder and JPEG XL tests (apt-get install npm)"
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


@dataclass(frozen=True)
class DecodedJxl:
    width: int
    height: int
    rgba: bytes  # 8-bit RGBA, row by row


def decode_jxl(data: bytes) -> DecodedJxl:
    """A JPEG XL file decoded by @jsquash/jxl (fails when it cannot read it)."""
    ensure_installed()
    done = subprocess.run(
        ["node", str(FOLDER / "decode-jxl.mjs")],
        input=data,
        capture_output=True,
        check=True,
        timeout=120,
    )
    answer = json.loads(done.stdout)
    return DecodedJxl(int(answer["width"]), int(answer["height"]), base64.b64decode(answer["rgba"]))
