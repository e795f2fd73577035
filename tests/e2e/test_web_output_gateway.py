"""Web-ready output through `uplodr serve --presets FILE`, over HTTP as a site would use it: the
phone's HEIC in; variants fetched from their URLs and decoded; the `<picture>` markup parsed by
a real HTML parser and every URL in it fetched at the width it declares; the placeholder; the
original kept byte for byte, or alone; `?alt=` escaped; named presets and the original choice
in the dedupe key, with a repeat answered from storage exactly as the first was answered."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import html5lib
import httpx
import pytest
import pyvips

from tests.support.gateway import Gateway, running_gateway
from tests.support.made import mime_types, of_json
from tests.support.paths import corpus_file

NS = "{http://www.w3.org/1999/xhtml}"
PRESETS = {
    "responsive": {"widths": [480, 960, 1600]},
    "thumbs": {"formats": ["webp"], "widths": [160], "thumbnail_width": 64},
}
METADATA = ("icc-profile-data", "exif-data", "xmp-data", "iptc-data", "orientation")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("web-output")
    presets = root / "presets.json"
    presets.write_text(json.dumps(PRESETS))
    with running_gateway(root / "gateway", "--presets", str(presets)) as running:
        yield running
        assert running.workers() == [] and running.machine_records() == []


def post(gateway: Gateway, path: Path, folder: str, **params: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/images",
        params={"name": path.name, "folder": folder, **params},
        content=path.read_bytes(),
        timeout=240,
    )


def convert(gateway: Gateway, path: Path, folder: str, **params: str) -> dict[str, Any]:
    response = post(gateway, path, folder, **params)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def fetch(url: str) -> bytes:
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200, url
    return response.content


def decode(url: str) -> pyvips.Image:
    return pyvips.Image.new_from_buffer(fetch(url), "")


def machines_created(gateway: Gateway) -> float:
    for line in httpx.get(f"{gateway.url}/metrics").text.splitlines():
        if line.startswith("uplodr_machines_created_total "):
            return float(line.split()[-1])
    raise AssertionError("no uplodr_machines_created_total in /metrics")


def parse_picture(markup: str) -> Any:
    """The one <picture> element of `markup`, parsed by html5lib in strict mode (a parse
    error raises)."""
    parser = html5lib.HTMLParser(strict=True, namespaceHTMLElements=True)
    (element,) = list(parser.parseFragment(markup))
    assert element.tag == f"{NS}picture"
    return element


def test_a_phone_heic_becomes_upright_bare_srgb_variants(gateway: Gateway) -> None:
    answer = convert(gateway, corpus_file("IMG_2682.heic"), "heic")
    assert (answer["width"], answer["height"]) == (4032, 3024)
    full = of_json(answer)  # the formats that won (format_margin), JPEG always
    assert [(v["format"], v["role"]) for v in answer["variants"]] == [
        *((name, "full") for name in full),
        ("png", "thumbnail"),
    ]
    for variant in answer["variants"]:
        data = fetch(variant["url"])
        assert len(data) == variant["size_bytes"]
        image = pyvips.Image.new_from_buffer(data, "")
        assert (image.width, image.height) == (variant["width"], variant["height"])
        assert image.width > image.height  # upright: the photo is landscape once rotated
        assert image.format == "uchar" and image.interpretation == "srgb", variant["format"]
        for field in METADATA:
            assert not image.get_typeof(field), (variant["format"], field)
    placeholder = answer["placeholder"]
    assert placeholder["data_url"].startswith("data:image/png;base64,")
    assert placeholder["thumbhash"] and placeholder["blurhash"]
    img = parse_picture(answer["html"]).find(f"{NS}img")
    assert (img.get("width"), img.get("height"), img.get("alt")) == ("4032", "3024", "")
    assert answer["job"]["machine"].startswith("uplodr-")


def test_responsive_markup_whose_every_url_fetches_at_its_declared_width(
    gateway: Gateway,
) -> None:
    answer = convert(gateway, corpus_file("IMG_2682.heic"), "responsive", preset="responsive")
    roles = {(v["format"], v["width"]): v["role"] for v in answer["variants"]}
    full = of_json(answer, ("webp", "avif", "jpeg"))
    # width variants follow their format's full-size decision: none of a dropped format
    assert {v["format"] for v in answer["variants"] if v["role"] != "thumbnail"} == set(full)
    for fmt in full:
        for width in (480, 960, 1600, 4032):
            assert roles[(fmt, width)] == ("full" if width == 4032 else "width")

    element = parse_picture(answer["html"])
    # a <source> per format made but the JPEG (the <img>), smallest full size first
    size = {v["format"]: v["size_bytes"] for v in answer["variants"] if v["role"] == "full"}
    sources = sorted((name for name in full if name != "jpeg"), key=size.__getitem__)
    assert [child.get("type") for child in element] == [*mime_types(sources), None]
    img = element.find(f"{NS}img")
    assert (img.get("width"), img.get("height")) == ("4032", "3024")
    assert (img.get("loading"), img.get("decoding")) == ("lazy", "async")
    candidates: list[tuple[str, int]] = [(img.get("src"), 4032)]
    for child in element:
        assert child.get("sizes") == "(max-width: 4032px) 100vw, 4032px"
        for candidate in child.get("srcset").split(", "):
            url, descriptor = candidate.rsplit(" ", 1)
            candidates.append((url, int(descriptor.removesuffix("w"))))
    assert len(candidates) == 1 + len(full) * 4
    for url, declared in candidates:
        image = decode(url)  # fetched over HTTP from the gateway's /files
        assert image.width == declared, url
        assert image.height == round(declared * 3 / 4), url
    # The markup names every full-size and width variant, and nothing else.
    marked = {url for url, _ in candidates}
    assert marked == {v["url"] for v in answer["variants"] if v["role"] in ("full", "width")}


def test_the_original_is_kept_byte_for_byte_or_alone(gateway: Gateway) -> None:
    heic = corpus_file("IMG_2682.heic")
    kept = convert(gateway, heic, "originals", original="keep")
    original = kept["variants"][-1]
    assert (original["format"], original["role"], original["mime_type"]) == (
        "heif",
        "original",
        "image/heic",  # HEVC-coded HEIF (brand heic): IANA's image/heic, not generic image/heif
    )
    assert fetch(original["url"]) == heic.read_bytes()
    assert httpx.get(original["url"]).headers["content-type"] == "image/heic"
    full = of_json(kept)
    assert [v["role"] for v in kept["variants"][:-1]] == ["full"] * len(full) + ["thumbnail"]
    assert original["url"] not in kept["html"]  # the original is no candidate of the markup

    alone = convert(gateway, heic, "originals", original="only")
    (only,) = alone["variants"]
    assert only["role"] == "original" and fetch(only["url"]) == heic.read_bytes()
    assert (alone["width"], alone["height"]) == (4032, 3024)  # from the header
    assert alone["html"] is None and alone["placeholder"] is None


def test_alt_is_escaped_and_each_request_gets_its_own(gateway: Gateway) -> None:
    photo = corpus_file("sample-16bit.png")
    text = '<script>alert("x")</script> & a "quoted" cat'
    first = convert(gateway, photo, "alt", alt=text)
    assert "<script>" not in first["html"]
    element = parse_picture(first["html"])
    assert element.find(f".//{NS}script") is None
    assert element.find(f"{NS}img").get("alt") == text  # what a browser reads back
    again = convert(gateway, photo, "alt", alt="A cat on a sofa")
    assert again["deduplicated"]  # the alt is not part of the stored set...
    assert parse_picture(again["html"]).find(f"{NS}img").get("alt") == "A cat on a sofa"
    assert again["html"].replace("A cat on a sofa", "") == first["html"].replace(
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; a &quot;quoted&quot; cat", ""
    )  # ...only of the markup


def without_run(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer without what only says how it was made (timings, job, deduplicated) and the
    delete token (only the upload that stored the set gets it)."""
    skip = ("timings", "job", "deduplicated", "delete_token")
    return {k: v for k, v in answer.items() if k not in skip}


def test_a_repeat_is_answered_from_storage_with_the_same_answer_per_preset_and_original(
    gateway: Gateway,
) -> None:
    photo = corpus_file("sample-16bit.png")  # 290x442
    first = convert(gateway, photo, "dedupe", preset="thumbs")
    assert [(v["format"], v["role"], v["width"]) for v in first["variants"]] == [
        ("webp", "full", 290),
        ("webp", "width", 160),
        ("png", "thumbnail", 64),
    ]
    created = machines_created(gateway)
    again = convert(gateway, photo, "dedupe", preset="thumbs")
    assert again["deduplicated"] and "job" not in again
    assert machines_created(gateway) == created  # no machine for a repeat
    # From the manifest, the same answer the worker gave: variants, size, placeholder, html.
    assert without_run(again) == without_run(first)
    assert first["placeholder"] and first["html"]
    assert first["delete_token"] and again["delete_token"] is None

    # Another preset, or another choice about the original: another set, made by a machine.
    for params in ({"preset": "default"}, {"preset": "thumbs", "original": "keep"}):
        other = convert(gateway, photo, "dedupe", **params)
        assert not other["deduplicated"], params
        assert {v["url"] for v in other["variants"]}.isdisjoint(
            {v["url"] for v in first["variants"]}
        )
    assert machines_created(gateway) == created + 2


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"preset": "thumbnails"}, "unknown preset 'thumbnails'; known presets: default, "),
        ({"original": "1"}, "original must be one of keep, only, drop, not '1'"),
        ({"original": ""}, "original must be one of keep, only, drop, not ''"),
        ({"alt": "x" * 1001}, "alt is 1001 characters; at most 1000"),
    ],
)
def test_bad_options_are_refused_before_any_machine(
    gateway: Gateway, params: dict[str, str], says: str
) -> None:
    created = machines_created(gateway)
    response = post(gateway, corpus_file("sample-16bit.png"), "bad", **params)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_request" and body["error"].startswith(says), body
    assert "\n" not in body["error"]
    assert machines_created(gateway) == created


def test_the_presets_are_listed_default_first(gateway: Gateway) -> None:
    response = httpx.get(f"{gateway.url}/v1/presets")
    assert response.status_code == 200
    presets = {p["name"]: p for p in response.json()["presets"]}
    assert list(presets) == ["default", "responsive", "thumbs"]
    assert presets["responsive"]["widths"] == [480, 960, 1600]
    assert presets["thumbs"] == {
        "name": "thumbs",
        "formats": ["webp"],
        "widths": [160],
        "max_long_side": 4096,
        "thumbnail_width": 64,
        "keep_original": False,
        # the look it is made at (issue 17): the default target, a format only where it wins
        "quality_metric": "ssimulacra2",
        "quality_target": 75.0,
        "format_margin": 10,
    }
    assert presets["default"]["formats"] == ["webp", "avif", "jpeg"]
    documented = httpx.get(f"{gateway.url}/openapi.json").json()
    (preset,) = [
        p for p in documented["paths"]["/v1/images"]["post"]["parameters"] if p["name"] == "preset"
    ]
    assert preset["schema"]["enum"] == ["default", "responsive", "thumbs"]
