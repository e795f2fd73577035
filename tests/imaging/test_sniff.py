from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from uplodr.imaging import ALLOWED_FORMATS, SNIFF_BYTES, sniff

SIGNATURES = {
    "jpeg": b"\xff\xd8\xff\xe0",
    "png": b"\x89PNG\r\n\x1a\n",
    "gif": b"GIF89a",
    "webp": b"RIFF\x10\x00\x00\x00WEBPVP8 ",
    "avif": b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00mif1miaf",
    "heif": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1",
}


@given(st.binary(max_size=SNIFF_BYTES * 2))
def test_any_bytes_give_an_allowed_format_or_none(head: bytes) -> None:
    assert sniff(head) in (*ALLOWED_FORMATS, None)


@given(st.binary(min_size=SNIFF_BYTES, max_size=SNIFF_BYTES), st.binary(max_size=256))
def test_only_the_first_sniff_bytes_matter(head: bytes, tail: bytes) -> None:
    assert sniff(head + tail) == sniff(head)


@given(st.sampled_from(sorted(SIGNATURES)), st.binary(max_size=SNIFF_BYTES))
def test_signature_decides_whatever_follows(fmt: str, tail: bytes) -> None:
    assert sniff(SIGNATURES[fmt] + tail) == fmt


@given(st.binary(max_size=SNIFF_BYTES))
def test_text_formats_are_not_images(tail: bytes) -> None:
    for prefix in (b"<svg", b"<?xml", b"%PDF-", b"<!doctype html", b"II*\x00", b"MM\x00*"):
        assert sniff(prefix + tail) is None


def test_cases() -> None:
    assert sniff(b"") is None
    assert sniff(b"\xff\xd8") is None  # too short for JPEG
    assert sniff(b"GIF87a") == "gif"
    assert sniff(b"RIFF\x00\x00\x00\x00WAVE") is None
    # mif1 major brand: AVIF if an avif brand is listed, else plain HEIF
    assert sniff(b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00avif") == "avif"
    assert sniff(b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00heic") == "heif"
    assert sniff(b"\x00\x00\x00\x18ftypisom\x00\x00\x00\x00mp41") is None  # MP4 video
