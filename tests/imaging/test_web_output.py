"""Web-ready output from convert: responsive widths, the placeholder (checked by third-party
decoders), animated width variants, the AVIF chain, and a preset that keeps only the original."""

from __future__ import annotations

import base64
import itertools
import math
import threading
import time
from pathlib import Path

import pytest
import pyvips

from tests.hostile_corpus import CASES_BY_NAME
from tests.support.made import full_formats
from tests.support.paths import corpus_file
from uplodr import formats
from uplodr.errors import LimitExceeded, UnsupportedImage
from uplodr.formats import FULL, VariantSpec
from uplodr.imaging import ImageLimits, convert, pipeline, probe
from uplodr.imaging import encode as encode_module
from uplodr.imaging.convert import _chains
from uplodr.imaging.deadline import Deadline
from uplodr.preset import DEFAULT_PRESET

from . import js_decoders
from .conftest import avif_frames, load_variant


def test_every_format_at_every_width_smaller_than_the_full_size() -> None:
    preset = DEFAULT_PRESET.with_changes(max_long_side=2000, widths=[480, 960, 1500, 8000])
    conversion = convert(corpus_file("book-beside-flowers.jpg"), preset, ImageLimits())
    assert (conversion.width, conversion.height) == (1500, 2000)  # 3024x4032 capped
    names = [v.name for v in conversion.variants]
    made = full_formats(
        [(v.format, v.role) for v in conversion.variants],
        [(s.format, s.reason) for s in conversion.skipped],
    )  # the formats that won (format_margin); their widths follow them
    assert names == [
        *made,
        *(f"{name}-480w" for name in made),
        *(f"{name}-960w" for name in made),
        "thumbnail",
    ]  # 1500 is the full size itself and 8000 would be enlarged: neither is made
    for variant in conversion.variants:
        image = load_variant(variant)
        assert (image.width, image.height) == (variant.width, variant.height)
        if variant.role == "width":
            assert variant.suffix == f"-{variant.width}w"
            assert variant.height == round(variant.width * 4032 / 3024)
            assert image.format == "uchar" and not image.get_typeof("exif-data")
    # the width variants are the same picture, smaller (both JPEGs at SSIMULACRA2 75, each at
    # its own setting: ~4 levels apart on average; another picture would be tens)
    full = load_variant(conversion.variants[2]).thumbnail_image(480, height=10_000)
    small = load_variant(next(v for v in conversion.variants if v.name == "jpeg-480w"))
    assert (full - small).abs().avg() < 6


def test_an_animation_keeps_its_frames_at_every_width() -> None:
    preset = DEFAULT_PRESET.with_changes(widths=[100, 200, 300])
    conversion = convert(corpus_file("iss634.gif"), preset, ImageLimits())
    by_name = {v.name: v for v in conversion.variants}
    assert "webp-300w" not in by_name  # the animation is 245 px wide
    webp = load_variant(by_name["webp-100w"])
    assert (webp.width, webp.get("page-height"), webp.get("n-pages")) == (100, 100, 42)
    frames = avif_frames(by_name["avif-200w"].data)
    assert len(frames) == 42 and frames[0].size == (200, 200)
    jpeg = by_name["jpeg-100w"]
    assert not jpeg.animated and (jpeg.width, jpeg.height) == (100, 100)


def test_avif_encodes_run_one_at_a_time_in_one_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    """With widths there are several AVIF encodes: they run one after another in one thread
    (never two at once), full size first, while the other thread encodes the rest."""
    spans: list[tuple[float, float, int, str]] = []
    original = encode_module.ENCODERS["avif"]

    def timed(image: pyvips.Image, preset: object) -> bytes:
        started = time.monotonic()
        data = original(image, preset)  # type: ignore[arg-type]
        spans.append((started, time.monotonic(), image.width, threading.current_thread().name))
        return data

    monkeypatch.setitem(encode_module.ENCODERS, "avif", timed)
    preset = DEFAULT_PRESET.with_changes(max_long_side=1200, widths=[320, 640], quality="fixed")
    convert(corpus_file("xmp_test-adobergb.jpg"), preset, ImageLimits())
    assert [width for _, _, width, _ in spans] == [1200, 320, 640]
    assert len({thread for *_, thread in spans}) == 1
    for (_, end, _, _), (start, _, _, _) in itertools.pairwise(spans):
        assert end <= start
    # at a quality target the trial encodes (of a 512 px sample) stay in that one chain too
    spans.clear()
    convert(corpus_file("xmp_test-adobergb.jpg"), preset.with_changes(quality={}), ImageLimits())
    assert 1200 in [width for _, _, width, _ in spans] and len(spans) > 3
    assert len({thread for *_, thread in spans}) == 1
    for (_, end, _, _), (start, _, _, _) in itertools.pairwise(spans):
        assert end <= start
    jobs = [
        (VariantSpec(formats.get(name), FULL), pyvips.Image.black(1, 1))
        for name in ("webp", "avif", "jpeg")
    ]
    # the AVIF chain first, then the JPEG before the WebP (its fallback, known first: rivals)
    assert _chains(jobs) == [[1], [2], [0]]


def image_mean(image: pyvips.Image) -> tuple[float, float, float]:
    """The mean colour (0..1) a viewer sees of the visible pixels (alpha-weighted)."""
    rgb = image[0:3]
    if not image.hasalpha():
        return tuple(float(rgb[i].avg()) / 255 for i in range(3))  # type: ignore[return-value]
    alpha = image[3] / 255
    weight = float(alpha.avg())
    return tuple(float((rgb[i] * alpha).avg()) / 255 / weight for i in range(3))  # type: ignore[return-value]


@pytest.mark.parametrize(
    "name",
    ["book-beside-flowers.jpg", "alpha-premultiply-2048x1536-paper.png", "IMG_2682.heic"],
)
def test_the_placeholder_reads_back_in_the_reference_decoders(name: str) -> None:
    preset = DEFAULT_PRESET.with_changes(formats=["jpeg"], thumbnail_width=0, max_long_side=1024)
    conversion = convert(corpus_file(name), preset, ImageLimits())
    hint = conversion.placeholder
    assert hint is not None
    decoded_image = load_variant(conversion.variants[0])  # the JPEG: what the page will show
    path = corpus_file(name)  # the image the placeholder was made from (alpha and all):
    source = pipeline.prepare(path, probe(path, ImageLimits()), 1024, Deadline(60))
    decoded = js_decoders.decode(hint.thumbhash, hint.blurhash, 32, 32)

    ratio = conversion.width / conversion.height
    assert abs(math.log(decoded.aspect_ratio / ratio)) < math.log(1.2), decoded.aspect_ratio
    width, height = decoded.thumbhash_size
    assert (width > height) == (ratio > 1)
    mean = image_mean(source)
    assert max(abs(a - b) for a, b in zip(decoded.average[:3], mean, strict=True)) < 0.05
    assert decoded.average[3] == pytest.approx(1.0 if not source.hasalpha() else 0.07, abs=0.1)

    # BlurHash (no alpha: made from the image flattened on the JPEG background, white). Its
    # terms are averages in linear light, so its colour is compared there.
    assert decoded.blurhash_valid
    blur = pyvips.Image.new_from_memory(decoded.blurhash_rgba, 32, 32, 4, "uchar")
    blur = blur[0:3].copy(interpretation="srgb")

    def linear_mean(image: pyvips.Image) -> list[float]:
        linear = image.colourspace("scrgb")
        return [float(linear[i].avg()) for i in range(3)]

    got, want = linear_mean(blur), linear_mean(decoded_image)
    assert max(abs(g - w) for g, w in zip(got, want, strict=True)) < 0.05, (got, want)

    # the data URL is the ThumbHash rendered: exactly the reference decoder's rendering
    prefix = "data:image/png;base64,"
    assert hint.data_url.startswith(prefix)
    png = pyvips.Image.new_from_buffer(base64.b64decode(hint.data_url[len(prefix) :]), "")
    assert (png.width, png.height, png.bands) == (width, height, 4)
    reference = pyvips.Image.new_from_memory(decoded.thumbhash_rgba, width, height, 4, "uchar")
    assert (png - reference).abs().max() <= 1
    assert len(base64.b64decode(hint.thumbhash)) <= 30


def test_keeping_only_the_original_decodes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: object) -> None:
        raise AssertionError("decoded although only the original is kept")

    monkeypatch.setattr(pipeline, "prepare", never)
    only = DEFAULT_PRESET.for_original("only")
    conversion = convert(corpus_file("Landscape_6.jpg"), only, ImageLimits())
    assert conversion.variants == [] and conversion.placeholder is None
    assert (conversion.width, conversion.height) == (1800, 1200)  # as displayed
    assert conversion.source.format == "jpeg"


def test_keeping_only_the_original_still_sniffs_and_checks_limits(tmp_path: Path) -> None:
    only = DEFAULT_PRESET.for_original("only")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(CASES_BY_NAME["png-bomb-20000x20000"].data)
    with pytest.raises(LimitExceeded):
        convert(bomb, only, ImageLimits())
    text = tmp_path / "notes.png"
    text.write_bytes(b"not an image at all, whatever the name says")
    with pytest.raises(UnsupportedImage):
        convert(text, only, ImageLimits())
