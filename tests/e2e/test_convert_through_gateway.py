"""The whole path through `uplodr serve`: HTTP → local machine → gRPC Stream → conversion →
local store → URLs that the gateway serves. Every URL is fetched and its bytes decoded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import pyvips

from tests.support.gateway import Gateway
from tests.support.made import mime_types, of_json
from tests.support.paths import corpus_file
from uplodr import formats

LOADERS = {
    "image/webp": "webpload_buffer",
    "image/avif": "heifload_buffer",
    "image/jpeg": "jpegload_buffer",
    "image/png": "pngload_buffer",
}


def post(gateway: Gateway, path: Path, folder: str = "tests", **params: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/images",
        params={"name": path.name, "folder": folder, **params},
        content=path.read_bytes(),
        timeout=120,
    )


def fetch_and_check(variant: dict[str, Any]) -> pyvips.Image:
    """The URL serves bytes that decode as the claimed type, dimensions and size."""
    response = httpx.get(variant["url"], timeout=30)
    assert response.status_code == 200
    assert len(response.content) == variant["size_bytes"]
    assert response.headers["content-type"].startswith(variant["mime_type"])
    image = pyvips.Image.new_from_buffer(response.content, "")
    assert image.get("vips-loader") == LOADERS[variant["mime_type"]]
    assert (image.width, image.height) == (variant["width"], variant["height"])
    return image


def by_type(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["mime_type"]: v for v in answer["variants"]}


def test_photo_gives_four_fetchable_variants(gateway: Gateway) -> None:
    photo = corpus_file("book-beside-flowers.jpg")
    response = post(gateway, photo)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["file_name"] == "book-beside-flowers.jpg"
    assert answer["folder"] == "tests"
    variants = by_type(answer)
    full = of_json(answer)  # the formats that won (format_margin), JPEG always
    assert sorted(variants) == sorted([*mime_types(full), "image/png"])
    for variant in answer["variants"]:
        fetch_and_check(variant)
        assert "/files/tests/book-beside-flowers-" in variant["url"]
    # 3024x4032 capped at a 4096 long side stays full size; the thumbnail is 800 wide.
    for mime in mime_types(full):
        assert (variants[mime]["width"], variants[mime]["height"]) == (3024, 4032)
    assert variants["image/png"]["width"] == 800
    timings = answer["timings"]
    for phase in ("create", "boot", "transfer", "convert", "store", "total"):
        assert timings[phase] >= 0
    assert timings["convert"] > 0


def test_orientation_is_applied_and_removed(gateway: Gateway) -> None:
    response = post(gateway, corpus_file("Landscape_6.jpg"))
    assert response.status_code == 200, response.text
    for variant in response.json()["variants"]:
        image = fetch_and_check(variant)
        assert image.width > image.height
        assert "orientation" not in image.get_fields()
    full = by_type(response.json())["image/jpeg"]
    assert (full["width"], full["height"]) == (1800, 1200)


def test_alpha_survives_and_jpeg_is_flattened(gateway: Gateway) -> None:
    response = post(gateway, corpus_file("alpha-premultiply-2048x1536-paper.png"))
    assert response.status_code == 200, response.text
    variants = by_type(response.json())
    # every format made that carries alpha (WebP and AVIF where they won, the PNG thumbnail)
    with_alpha = [name for name in of_json(response.json()) if formats.get(name).alpha]
    assert with_alpha  # AVIF or WebP, lossy with alpha, always beats the flattened JPEG here
    for mime in [*mime_types(with_alpha), "image/png"]:
        image = fetch_and_check(variants[mime])
        assert image.hasalpha(), mime
        alpha = image[image.bands - 1]
        assert alpha.min() < 255 and alpha.max() > 0, mime
    jpeg = fetch_and_check(variants["image/jpeg"])
    assert not jpeg.hasalpha()


def test_animated_gif_stays_animated_in_webp(gateway: Gateway) -> None:
    response = post(gateway, corpus_file("iss634.gif"))
    assert response.status_code == 200, response.text
    webp = by_type(response.json())["image/webp"]
    data = httpx.get(webp["url"]).content
    animated = pyvips.Image.new_from_buffer(data, "", n=-1)
    assert animated.get("n-pages") > 1


@pytest.mark.parametrize("name", ["Channel_digital_image_CMYK_color.jpg", "xmp_test-adobergb.jpg"])
def test_colour_managed_inputs_come_out_srgb(gateway: Gateway, name: str) -> None:
    source_path = corpus_file(name)
    response = post(gateway, source_path)
    assert response.status_code == 200, response.text
    # Reference: libvips' own ICC transform of the source to sRGB.
    reference = pyvips.Image.new_from_file(str(source_path)).icc_transform("srgb")
    for variant in response.json()["variants"]:
        image = fetch_and_check(variant)
        assert image.interpretation == "srgb"
        rgb = image.extract_band(0, n=3) if image.bands >= 3 else image
        # Mean colour within a few levels of the reference: not inverted, not washed out.
        for band in range(3):
            assert abs(rgb[band].avg() - reference[band].avg()) < 8, (variant["mime_type"], band)


def test_sixteen_bit_png_becomes_eight_bit(gateway: Gateway) -> None:
    source_path = corpus_file("sample-16bit.png")
    response = post(gateway, source_path)
    assert response.status_code == 200, response.text
    source = pyvips.Image.new_from_file(str(source_path))
    for variant in response.json()["variants"]:
        image = fetch_and_check(variant)
        assert image.format == "uchar"
        assert abs(image[0].avg() - source[0].avg() / 257) < 6


def test_corrupt_image_is_refused_and_leaves_nothing(gateway: Gateway, tmp_path: Path) -> None:
    truncated = tmp_path / "broken.jpg"
    truncated.write_bytes(corpus_file("Landscape_6.jpg").read_bytes()[:2000])
    response = post(gateway, truncated)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "corrupt_image"
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_bytes(b"<html><body>hello</body></html>")
    response = post(gateway, not_an_image)
    assert response.status_code == 415
    assert "error" in response.json()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "uplodr", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_convert_prints_json_and_lines(gateway: Gateway, tmp_path: Path) -> None:
    gif, png = corpus_file("iss634.gif"), corpus_file("sample-16bit.png")
    result = run_cli(
        "convert", str(gif), str(png), "--folder", "cli", "--server", gateway.url, "--json"
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    answers = sorted((r["conversion"] for r in records), key=lambda a: a["file_name"])
    assert [a["file_name"] for a in answers] == ["iss634.gif", "sample-16bit.png"]
    # the formats that won and the thumbnail (the GIF's animated WebP and AVIF always: no target)
    assert all(len(a["variants"]) == len(of_json(a)) + 1 for a in answers)
    assert len(answers[0]["variants"]) == 4
    # The same file again, as a line: answered from storage this time.
    result = run_cli("convert", str(gif), "--folder", "cli", "--server", gateway.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"deduplicated {gif}  4 variants  http")
    assert ".webp" in result.stdout
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    result = run_cli("convert", str(broken), "--server", gateway.url)
    assert result.returncode == 1
    assert result.stdout.startswith(f"failed       {broken}  corrupt_image: ")
    assert "Traceback" not in result.stdout + result.stderr


def test_local_files_carry_the_cache_control_of_their_objects(gateway: Gateway) -> None:
    """As docs/storage.md says of every store: variants are immutable (their URL names their
    bytes), a manifest is revalidated, and a missing file is not cached."""
    response = post(gateway, corpus_file("sample-16bit.png"), folder="cached")
    assert response.status_code == 200, response.text
    for variant in response.json()["variants"]:
        served = httpx.get(variant["url"])
        assert served.headers["cache-control"] == "public, max-age=31536000, immutable"
    jpeg = by_type(response.json())["image/jpeg"]["url"]  # the one format always made
    manifest = httpx.get(jpeg.removesuffix(".jpg") + ".json")
    assert manifest.status_code == 200 and manifest.json()
    assert manifest.headers["cache-control"] == "no-cache"
    missing = httpx.get(jpeg.removesuffix(".jpg") + "-gone.jpg")
    assert missing.status_code == 404 and "cache-control" not in missing.headers
