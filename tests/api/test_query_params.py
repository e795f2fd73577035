"""A misspelt query parameter is refused (400, naming it and the known ones) before a byte of
the body is read — never ignored, which stored into the wrong folder with the wrong preset."""

from __future__ import annotations

import httpx

from tests.support.gateway import Gateway
from tests.support.paths import corpus_file

KNOWN = "known: name, folder, preset, original, alt"


def test_a_misspelt_parameter_is_refused_with_its_name_and_the_known_ones(
    gateway: Gateway,
) -> None:
    answer = httpx.post(
        f"{gateway.url}/v1/images",
        params={"name": "a.jpg", "foldr": "blog", "presett": "thumbs"},
        content=corpus_file("Landscape_6.jpg").read_bytes(),
    )
    assert answer.status_code == 400
    assert answer.json() == {
        "error": f"unknown query parameters 'foldr', 'presett' ({KNOWN})",
        "code": "invalid_request",
    }
    assert not list(gateway.store.rglob("a-*"))  # nothing stored, in no folder


def test_one_unknown_parameter_is_named_and_a_long_one_shortened(gateway: Gateway) -> None:
    answer = httpx.post(
        f"{gateway.url}/v1/images", params={"name": "a.jpg", "x" * 500: "1"}, content=b"x"
    )
    assert answer.status_code == 400
    message = answer.json()["error"]
    assert message == f"unknown query parameter '{'x' * 39}…' ({KNOWN})"
    assert len(message) < 200
