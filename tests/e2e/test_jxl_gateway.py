"""JPEG XL through `uplodr serve` (issue 17), over HTTP as a site would use it: a preset with
`"formats": ["jxl", ...]` answers a JPEG XL that an independent decoder reads at its declared
size, offered first in `<picture>`; with `original_jxl` the kept JPEG is stored as JPEG XL and
restores byte for byte; a JPEG XL upload is refused by name before any machine is paid for."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import imagecodecs
import numpy as np

from tests.imaging import js_decoders
from tests.support.gateway import running_gateway
from tests.support.made import of_json
from tests.support.paths import corpus_file

PRESET = {"formats": ["jxl", "webp", "jpeg"], "keep_original": True, "original_jxl": True}


def fetch(url: str) -> httpx.Response:
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200, url
    return response


def test_jpeg_xl_variants_and_a_repacked_original_through_the_gateway(tmp_path: Path) -> None:
    preset = tmp_path / "jxl.json"
    preset.write_text(json.dumps(PRESET))
    photo = corpus_file("Landscape_6.jpg")
    with running_gateway(tmp_path / "gateway", "--preset", str(preset)) as gateway:
        response = httpx.post(
            f"{gateway.url}/v1/images",
            params={"name": photo.name, "folder": "jxl"},
            content=photo.read_bytes(),
            timeout=240,
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        variants = answer["variants"]
        made = of_json(answer, ("jxl", "webp", "jpeg"))  # the formats that won (format_margin)
        assert made[0] == "jxl"  # ~22 % below the JPEG at the target on this photo
        assert [(v["format"], v["role"]) for v in variants] == [
            *((name, "full") for name in made),
            ("png", "thumbnail"),
            ("jxl", "original"),
        ]
        full, original = variants[0], variants[-1]

        served = fetch(full["url"])
        assert served.headers["content-type"] == "image/jxl" and full["url"].endswith(".jxl")
        decoded = js_decoders.decode_jxl(served.content)
        assert (decoded.width, decoded.height) == (full["width"], full["height"]) == (1800, 1200)
        first_source = answer["html"].split("<source", 2)[1]
        assert first_source.lstrip().startswith('type="image/jxl"'), answer["html"]

        assert original["url"].endswith("-original.jxl") and original["mime_type"] == "image/jxl"
        stored = fetch(original["url"])
        assert stored.headers["content-type"] == "image/jxl"
        assert len(stored.content) < 0.85 * photo.stat().st_size
        restored = imagecodecs.jpegxl_decode_jpeg(stored.content, numthreads=1)
        assert bytes(restored) == photo.read_bytes()
        assert original["url"] not in answer["html"]

        # A JPEG XL upload: refused by name, no machine made for it.
        upload = imagecodecs.jpegxl_encode(np.zeros((16, 16, 3), np.uint8), level=90)
        refused = httpx.post(
            f"{gateway.url}/v1/images",
            params={"name": "photo.jxl", "folder": "jxl"},
            content=bytes(upload),
            timeout=60,
        )
        assert refused.status_code == 415, refused.text
        assert refused.json()["error"].startswith("JPEG XL is an output format only; allowed")
    assert gateway.workers() == [] and gateway.machine_records() == []
