"""`uplodr serve --preset partial.json`: a file with only the settings it changes works, merged
over the defaults, end to end through a real gateway and worker."""

from __future__ import annotations

from pathlib import Path

import httpx
import pyvips

from tests.support.gateway import running_gateway
from tests.support.made import mime_types, of_json
from tests.support.paths import corpus_file
from uplodr.preset import DEFAULT_PRESET


def test_serve_with_a_partial_preset(tmp_path: Path) -> None:
    preset = tmp_path / "partial.json"
    preset.write_text('{"thumbnail_width": 64}')
    photo = corpus_file("book-beside-flowers.jpg")
    with running_gateway(tmp_path / "gateway", "--preset", str(preset)) as gateway:
        response = httpx.post(
            f"{gateway.url}/v1/images",
            params={"name": photo.name, "folder": "partial"},
            content=photo.read_bytes(),
            timeout=120,
        )
        assert response.status_code == 200, response.text
        variants = {v["mime_type"]: v for v in response.json()["variants"]}
        # the defaults: every full-size format that won (format_margin), capped at the
        # default long side
        made = mime_types(of_json(response.json()))
        assert sorted(variants) == sorted([*made, "image/png"])
        for mime in made:
            full = variants[mime]
            assert max(full["width"], full["height"]) <= DEFAULT_PRESET.max_long_side
        # the one changed setting
        thumb = variants["image/png"]
        assert thumb["width"] == 64
        image = pyvips.Image.new_from_buffer(httpx.get(thumb["url"], timeout=30).content, "")
        assert image.width == 64
    assert gateway.workers() == [] and gateway.machine_records() == []
