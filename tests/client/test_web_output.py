"""The client's web-ready options and answer against a real `uplodr serve`: `preset`, `alt` and
`original` reach the gateway, and the answer's size, placeholder, markup and each variant's
format and role decode into the typed dataclasses."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx
import msgspec
import pytest

from tests.support.gateway import Gateway
from tests.support.made import full_formats, of_json
from tests.support.paths import corpus_file
from uplodr.client import (
    AsyncClient,
    Client,
    InvalidRequest,
    Placeholder,
    PresetInfo,
    Presets,
    Quality,
    Skipped,
)


def test_the_answer_carries_size_placeholder_markup_and_roles(gateway: Gateway) -> None:
    photo = corpus_file("Landscape_6.jpg")  # 1800x1200 once upright
    with Client(gateway.url) as client:
        conversion = client.convert(photo, folder="client-web", alt="Hills & a lake")
    assert (conversion.width, conversion.height) == (1800, 1200)
    made = full_formats(
        [(v.format, v.role) for v in conversion.variants],
        [(s.format, s.reason) for s in conversion.skipped],
    )  # the formats that won (format_margin), JPEG always
    assert [(v.format, v.role) for v in conversion.variants] == [
        *((name, "full") for name in made),
        ("png", "thumbnail"),
    ]
    assert isinstance(conversion.placeholder, Placeholder)
    assert conversion.placeholder.data_url.startswith("data:image/png;base64,")
    assert conversion.html is not None and conversion.html.startswith("<picture>")
    assert 'alt="Hills &amp; a lake"' in conversion.html
    jpeg = next(v for v in conversion.variants if v.format == "jpeg")
    assert f'src="{jpeg.url}"' in conversion.html and 'width="1800" height="1200"' in (
        conversion.html
    )
    # the quality receipt (issue 17): each full-size variant at the default target, 75
    for variant in conversion.variants[: len(made)]:
        assert isinstance(variant.quality, Quality)
        assert variant.quality.metric == "ssimulacra2"
        assert 73 <= variant.quality.score <= 79, variant
        assert variant.quality.setting is not None and 1 <= variant.quality.setting <= 100
    assert conversion.variants[-1].quality is None  # the thumbnail: fixed settings
    # what was not stored says why, in one line (checked by full_formats above)
    assert all(isinstance(s, Skipped) and s.reason for s in conversion.skipped)


@dataclass(frozen=True)
class OldVariant:
    """A variant as a client from before issue 17 knew it."""

    url: str
    mime_type: str
    width: int
    height: int
    size_bytes: int
    format: str | None = None
    role: str | None = None


@dataclass(frozen=True)
class OldConversion:
    file_name: str
    folder: str
    variants: tuple[OldVariant, ...]
    deduplicated: bool
    timings: dict[str, float]
    width: int | None = None
    height: int | None = None
    html: str | None = None


def test_a_client_that_knows_only_the_old_fields_decodes_the_new_answer(gateway: Gateway) -> None:
    photo = corpus_file("sample-16bit.png")
    response = httpx.post(
        f"{gateway.url}/v1/images",
        params={"name": photo.name, "folder": "client-old"},
        content=photo.read_bytes(),
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert "quality" in response.json()["variants"][0]
    old = msgspec.json.decode(response.content, type=OldConversion)
    names = [v.format for v in old.variants]
    # the formats that won, in the preset's order; the JPEG fallback and the thumbnail always
    assert names[-2:] == ["jpeg", "png"]
    assert names == [*of_json(response.json()), "png"]
    assert httpx.get(old.variants[0].url).status_code == 200


def test_original_and_preset_reach_the_gateway(gateway: Gateway) -> None:
    photo = corpus_file("sample-16bit.png")
    with Client(gateway.url) as client:
        kept = client.convert(photo, folder="client-orig", original="keep", preset="default")
        alone = client.convert(photo, folder="client-orig", original="only")
        with pytest.raises(InvalidRequest) as unknown:
            client.convert(photo, folder="client-orig", preset="responsive")
    original = kept.variants[-1]
    assert (original.role, original.format) == ("original", "png")
    assert httpx.get(original.url).content == photo.read_bytes()
    assert [v.role for v in alone.variants] == ["original"]
    assert alone.html is None and alone.placeholder is None
    assert (alone.width, alone.height) == (290, 442)
    assert unknown.value.status == 400 and unknown.value.code == "invalid_request"
    assert unknown.value.message == "unknown preset 'responsive'; known presets: default"


def test_the_async_client_sends_the_options_too(gateway: Gateway) -> None:
    photo = corpus_file("sample-16bit.png")

    async def run() -> tuple[str | None, str | None]:
        async with AsyncClient(gateway.url) as client:
            plain, only = await asyncio.gather(
                client.convert(photo, folder="client-async-web", alt="A 16-bit PNG"),
                client.convert(photo, folder="client-async-web", original="only"),
            )
        return plain.html, only.html

    plain_html, only_html = asyncio.run(run())
    assert plain_html is not None and 'alt="A 16-bit PNG"' in plain_html
    assert only_html is None


def test_the_presets_are_listed(gateway: Gateway) -> None:
    with Client(gateway.url) as client:
        listed = client.presets()

    async def listed_async() -> Presets:
        async with AsyncClient(gateway.url) as client:
            return await client.presets()

    assert asyncio.run(listed_async()) == listed
    (default,) = listed.presets
    assert isinstance(default, PresetInfo)
    assert default.name == "default" and default.formats == ("webp", "avif", "jpeg")
    assert default.widths == () and default.thumbnail_width == 800
    # the look it is made at (issue 17): SSIMULACRA2 75, a format only where it wins by 10 %
    assert (default.quality_metric, default.quality_target) == ("ssimulacra2", 75.0)
    assert default.format_margin == 10
