"""The `<picture>` markup: parsed by a real HTML5 parser (html5lib, the WHATWG algorithm) and
checked for structure, every candidate, escaping and the fallback rules."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree

import html5lib
import pytest
from hypothesis import given
from hypothesis import strategies as st

from uplodr.markup import MarkupError, default_sizes, picture, plain_text

NS = "{http://www.w3.org/1999/xhtml}"
URL = "https://cdn.example/blog/cat-0123456789abcdef"
# Full-size bytes per format at one quality target, in the usual order of sizes.
SIZES = {"jxl": 200_000, "avif": 250_000, "webp": 400_000, "jpeg": 450_000, "png": 900_000}


def variants(
    formats: tuple[str, ...] = ("webp", "avif", "jpeg"),
    widths: tuple[int, ...] = (480, 960, 1600),
    full: tuple[int, int] = (4032, 3024),
    sizes: dict[str, int] | None = None,
) -> list[dict[str, Any]]:
    """An answer's variants, in the order the worker gives them."""
    ext = {"jpeg": "jpg", "webp": "webp", "avif": "avif", "png": "png", "jxl": "jxl"}
    size = SIZES if sizes is None else sizes
    out = [
        {
            "url": f"{URL}.{ext[f]}",
            "format": f,
            "role": "full",
            "width": full[0],
            "height": full[1],
            "size_bytes": size[f],
        }
        for f in formats
    ]
    for w in widths:
        h = round(w * full[1] / full[0])
        out += [
            {"url": f"{URL}-{w}w.{ext[f]}", "format": f, "role": "width", "width": w, "height": h}
            for f in formats
        ]
    out.append(
        {
            "url": f"{URL}-thumb.png",
            "format": "png",
            "role": "thumbnail",
            "width": 800,
            "height": 600,
        }
    )
    out.append(
        {
            "url": f"{URL}-original.heic",
            "format": "heif",
            "role": "original",
            "width": 4032,
            "height": 3024,
        }
    )
    return out


def parse(markup: str) -> ElementTree.Element:
    """The <picture> element as an HTML5 parser builds it (strict: a parse error fails)."""
    parser = html5lib.HTMLParser(strict=True, namespaceHTMLElements=True)
    fragment = parser.parseFragment(markup)
    elements = list(fragment)
    assert len(elements) == 1 and elements[0].tag == f"{NS}picture", markup
    element: ElementTree.Element = elements[0]
    return element


def srcset(value: str) -> list[tuple[str, int]]:
    candidates = []
    for candidate in value.split(", "):
        url, descriptor = candidate.rsplit(" ", 1)
        assert descriptor.endswith("w")
        candidates.append((url, int(descriptor[:-1])))
    return candidates


def test_jpeg_xl_is_the_first_source_when_the_preset_makes_it() -> None:
    element = parse(picture(variants(("webp", "avif", "jpeg", "jxl"), widths=(480,))))
    children = list(element)
    assert [child.get("type") for child in children[:3]] == [
        "image/jxl",
        "image/avif",
        "image/webp",
    ]
    assert srcset(children[0].get("srcset", "")) == [(f"{URL}-480w.jxl", 480), (f"{URL}.jxl", 4032)]
    assert children[3].tag == f"{NS}img" and children[3].get("src") == f"{URL}.jpg"


def test_sources_are_the_formats_made_smallest_full_size_first() -> None:
    """A browser takes the first type it decodes: the smallest first gives it the fewest bytes
    it can show. The JPEG <img> stays last, whatever its size."""
    webp_smaller = {"jxl": 300_000, "avif": 280_000, "webp": 260_000, "jpeg": 100_000}
    element = parse(picture(variants(("webp", "avif", "jpeg", "jxl"), sizes=webp_smaller)))
    types = [child.get("type") for child in element]
    assert types == ["image/webp", "image/avif", "image/jxl", None]
    assert element[-1].get("src") == f"{URL}.jpg"
    # only what was made: WebP dropped (it did not win), no <source> names it
    made = parse(picture(variants(("avif", "jpeg"), sizes=webp_smaller)))
    assert [child.get("type") for child in made] == ["image/avif", None]
    # sizes not said (an older answer): the usual order
    unsized = [
        {k: v for k, v in variant.items() if k != "size_bytes"}
        for variant in variants(("webp", "avif", "jpeg", "jxl"))
    ]
    assert [c.get("type") for c in parse(picture(unsized))][:3] == [
        "image/jxl",
        "image/avif",
        "image/webp",
    ]


def test_a_picture_with_avif_and_webp_sources_and_a_jpeg_img() -> None:
    element = parse(picture(variants(), alt="A cat on a mat"))
    children = list(element)
    assert [child.tag for child in children] == [f"{NS}source", f"{NS}source", f"{NS}img"]
    avif, webp, img = children
    assert avif.get("type") == "image/avif" and webp.get("type") == "image/webp"
    widths = [480, 960, 1600, 4032]
    assert srcset(avif.get("srcset", "")) == [
        (f"{URL}-{w}w.avif" if w != 4032 else f"{URL}.avif", w) for w in widths
    ]
    assert srcset(webp.get("srcset", "")) == [
        (f"{URL}-{w}w.webp" if w != 4032 else f"{URL}.webp", w) for w in widths
    ]
    assert srcset(img.get("srcset", "")) == [
        (f"{URL}-{w}w.jpg" if w != 4032 else f"{URL}.jpg", w) for w in widths
    ]
    assert img.get("src") == f"{URL}.jpg"
    assert (img.get("width"), img.get("height")) == ("4032", "3024")
    assert img.get("alt") == "A cat on a mat"
    assert (img.get("loading"), img.get("decoding")) == ("lazy", "async")
    sizes = "(max-width: 4032px) 100vw, 4032px"
    assert default_sizes(4032) == sizes
    assert {avif.get("sizes"), webp.get("sizes"), img.get("sizes")} == {sizes}
    # neither the thumbnail nor the original is a candidate
    markup = picture(variants(), alt="")
    assert "-thumb.png" not in markup and "-original" not in markup


def test_alt_is_one_line_of_text_html_accepts() -> None:
    assert plain_text("a\tb\nc\r\nd") == "a b c  d"
    assert plain_text("bell\x07 del\x7f c1\x85 lone\ud800 non\ufdd0\uffff") == (
        "bell del c1 lone non"
    )
    assert plain_text("Zoë 🐈 ünïcode") == "Zoë 🐈 ünïcode"


def test_alt_and_sizes_are_escaped() -> None:
    alt = "Tom & \"Jerry\" <script>alert(1)</script> 'x'"
    markup = picture(variants(), alt=alt, sizes='(min-width: 40em) 50vw, "100vw"')
    assert "<script>" not in markup
    img = parse(markup).find(f"{NS}img")
    assert img is not None
    assert img.get("alt") == alt
    assert img.get("sizes") == '(min-width: 40em) 50vw, "100vw"'


def test_urls_with_spaces_or_commas_stay_one_candidate_each() -> None:
    odd = [dict(v, url=v["url"].replace("cat-", "my cat,v2-")) for v in variants(widths=(480,))]
    img = parse(picture(odd)).find(f"{NS}img")
    assert img is not None
    assert srcset(img.get("srcset", "")) == [
        (f"{URL.replace('cat-', 'my%20cat%2Cv2-')}-480w.jpg", 480),
        (f"{URL.replace('cat-', 'my%20cat%2Cv2-')}.jpg", 4032),
    ]


def test_without_widths_each_srcset_holds_the_full_size() -> None:
    element = parse(picture(variants(widths=())))
    for child in element:
        assert len(srcset(child.get("srcset", ""))) == 1


def test_without_jpeg_the_img_falls_back_to_webp_and_webp_gets_no_source() -> None:
    element = parse(picture(variants(formats=("webp", "avif"))))
    children = list(element)
    assert [child.get("type") for child in children] == ["image/avif", None]
    assert children[-1].get("src") == f"{URL}.webp"
    only_webp = parse(picture(variants(formats=("webp",))))
    assert [child.tag for child in only_webp] == [f"{NS}img"]


def test_nothing_to_show_is_an_error() -> None:
    only_original = [v for v in variants() if v["role"] == "original"]
    with pytest.raises(MarkupError):
        picture(only_original)
    with pytest.raises(MarkupError):
        picture([])


@given(
    st.lists(st.sampled_from(["webp", "avif", "jpeg"]), min_size=1, max_size=3, unique=True),
    st.lists(st.integers(16, 4000), max_size=5, unique=True),
    st.text(max_size=40),
)
def test_any_variants_and_alt_give_valid_markup(
    formats: list[str], widths: list[int], alt: str
) -> None:
    element = parse(picture(variants(tuple(formats), tuple(sorted(widths))), alt=alt))
    img = element.find(f"{NS}img")
    assert img is not None and img.get("alt") == plain_text(alt)
    assert all(char in img.get("alt", "") for char in alt if char.isalnum())
    urls = {v["url"] for v in variants(tuple(formats), tuple(sorted(widths)))}
    for child in element:
        for url, _ in srcset(child.get("srcset", "")):
            assert url in urls
