"""Property tests of the name and folder normaliser: whatever a client sends, the result is
either refused with InvalidRequest or safe to join under a store prefix."""

from __future__ import annotations

import posixpath
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from uplodr.errors import InvalidRequest
from uplodr.names import MAX_STEM_CHARS, safe_file_name, safe_folder

hostile_text = st.lists(
    st.one_of(
        st.characters(),
        st.sampled_from(["/", "\\", ".", "..", "\x00", "\n", "\u202e", " ", "~", "%2e", "é"]),
    ),
    max_size=120,
).map("".join)


def _inside_prefix(key: str) -> bool:
    joined = posixpath.normpath(posixpath.join("/store", key))
    return joined == "/store" or joined.startswith("/store/")


@given(hostile_text)
def test_folder_is_refused_or_stays_inside_the_store(folder: str) -> None:
    try:
        safe = safe_folder(folder)
    except InvalidRequest:
        return
    assert _inside_prefix(safe)
    assert ".." not in safe.split("/")
    assert not safe.startswith("/")
    assert all(unicodedata.category(ch)[0] != "C" for ch in safe)
    assert safe == unicodedata.normalize("NFC", safe)
    assert safe_folder(safe) == safe  # idempotent


@given(hostile_text)
def test_file_name_is_refused_or_gives_a_safe_stem(name: str) -> None:
    try:
        safe = safe_file_name(name)
    except InvalidRequest:
        return
    assert safe.stem
    assert len(safe.stem) <= MAX_STEM_CHARS
    assert "/" not in safe.stem and "\\" not in safe.stem
    assert not safe.stem.startswith(".")
    assert _inside_prefix(safe.stem)
    assert all(ch.isalnum() or ch in "-_." for ch in safe.stem)


@pytest.mark.parametrize(
    ("folder", "expected"),
    [("", ""), ("blog/2026", "blog/2026"), ("a/", "a"), ("cafe\u0301", "café")],
)
def test_folder_examples(folder: str, expected: str) -> None:
    assert safe_folder(folder) == expected


@pytest.mark.parametrize(
    "folder",
    ["..", "../etc", "a/../../b", "/etc", "a//b", "a\\b", "a\x00b", "a\nb", ".hidden", "x" * 201],
)
def test_folder_refusals(folder: str) -> None:
    with pytest.raises(InvalidRequest):
        safe_folder(folder)


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("photo.jpg", "photo"),
        ("My Holiday Photo.JPG", "My-Holiday-Photo"),
        ("été à Paris.png", "été-à-Paris"),
        ("archive.tar.gz", "archive.tar"),
        (".jpg", "jpg"),
        ("???.png", "image"),
    ],
)
def test_file_name_stems(name: str, stem: str) -> None:
    assert safe_file_name(name).stem == stem


@pytest.mark.parametrize(
    "name", ["", "  ", "../x.jpg", "/etc/passwd", "a\\b.png", "a\x00.png", "a\n.png", "x" * 5000]
)
def test_file_name_refusals(name: str) -> None:
    with pytest.raises(InvalidRequest):
        safe_file_name(name)
