"""The answer of POST /v1/images: real answers hold to the schema the gateway publishes, and
the one builder (`gateway/service.py`) gives the same answer from a worker's reply and from a
manifest — also when either comes from before the web-ready fields, which are then null."""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema
import msgspec
import pytest

from tests.support.gateway import Gateway
from tests.support.paths import corpus_file
from uplodr.answer import Conversion
from uplodr.dispatch.job import JobResult, JobTimings
from uplodr.gateway.answers import answer_json, from_job, from_storage
from uplodr.proto import uplodr_pb2
from uplodr.storage import Published, SetInfo
from uplodr.storage.catalog import ImageRef
from uplodr.storage.publish import StoredVariant

REF = ImageRef("f", "photo", "0123456789abcdef")

PLACEHOLDER = {"thumbhash": "3OcRJYB4d3h/iIeHeEh3eIhw+j2w", "blurhash": "LEHV6n", "data_url": "d"}
VARIANTS = [
    ("webp", "full", 1800, 1200),
    ("jpeg", "full", 1800, 1200),
    ("webp", "width", 480, 320),
    ("jpeg", "width", 480, 320),
    ("png", "thumbnail", 800, 533),
    ("jpeg", "original", 1800, 1200),
]


def validator(document: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """A validator of the document's Conversion schema, its $refs resolved in the document (the
    document itself is the root: its other members are no JSON Schema keywords)."""
    return jsonschema.Draft202012Validator({**document, "$ref": "#/components/schemas/Conversion"})


@pytest.mark.parametrize("params", [{"alt": "A man in a field"}, {"original": "only"}])
def test_real_answers_hold_to_the_published_schema(
    gateway: Gateway, params: dict[str, str]
) -> None:
    document = httpx.get(f"{gateway.url}/openapi.json").json()
    photo = corpus_file("sample-16bit.png")
    for _ in ("converted", "deduplicated"):
        response = httpx.post(
            f"{gateway.url}/v1/images",
            params={"name": photo.name, "folder": "schema", **params},
            content=photo.read_bytes(),
            timeout=120,
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        validator(document).validate(answer)
        assert msgspec.convert(answer, Conversion).width == 290
    assert answer["deduplicated"] and "job" not in answer


def url(fmt: str, role: str, width: int) -> str:
    return f"http://files.test/f/photo-abc-{role}-{width}.{fmt}"


def worker_reply(*, new_fields: bool) -> JobResult:
    response = uplodr_pb2.UploadResp(file_name="photo.jpg", folder="f")
    for fmt, role, width, height in VARIANTS:
        response.variants.append(
            uplodr_pb2.Variant(
                url=url(fmt, role, width),
                mime_type=f"image/{fmt}",
                width=width,
                height=height,
                size_bytes=1000 + width,
                format=fmt if new_fields else "",
                role=role if new_fields else "",
            )
        )
    if new_fields:
        response.placeholder.CopyFrom(uplodr_pb2.Placeholder(**PLACEHOLDER))
        response.width, response.height = 1800, 1200
    return JobResult("job1", "uplodr-m1", [response], JobTimings(total=2.0, machine_seconds=2.0))


def manifest_set(*, new_fields: bool) -> Published:
    variants = [
        StoredVariant(
            url=url(fmt, role, width),
            key=f"f/{role}-{width}.{fmt}",
            mime_type=f"image/{fmt}",
            width=width,
            height=height,
            size_bytes=1000 + width,
            format=fmt if new_fields else "",
            role=role if new_fields else "",
        )
        for fmt, role, width, height in VARIANTS
    ]
    info = SetInfo(1800, 1200, PLACEHOLDER) if new_fields else None
    return Published(variants, deduplicated=True, info=info)


def test_a_job_and_a_manifest_give_the_same_answer() -> None:
    made = answer_json(
        from_job(worker_reply(new_fields=True), manifest_set(new_fields=True), alt="Falls", ref=REF)
    )
    found = answer_json(from_storage(manifest_set(new_fields=True), "photo.jpg", REF, "Falls", {}))
    assert made.pop("job") == {
        "id": "job1",
        "machine": "uplodr-m1",
        "machine_seconds": 2.0,
        "cost": 0.0,
    }
    for answer in (made, found):
        answer.pop("timings"), answer.pop("deduplicated")
    assert made == found
    assert made["id"] == REF.id and ImageRef.from_id(made["id"]) == REF
    assert (made["width"], made["height"], made["placeholder"]) == (1800, 1200, PLACEHOLDER)
    assert made["variants"][-1]["role"] == "original"
    html = made["html"]
    assert html.startswith("<picture>") and 'alt="Falls"' in html
    assert url("jpeg", "width", 480) + " 480w" in html
    assert url("jpeg", "original", 1800) not in html and url("png", "thumbnail", 800) not in html


def test_answers_from_before_the_web_fields_say_null() -> None:
    """A set published or a manifest of before: no format, role, size or placeholder — and so no
    markup (which needs to know each variant's format and role), rather than a guess."""
    made = answer_json(
        from_job(worker_reply(new_fields=False), manifest_set(new_fields=False), alt="", ref=REF)
    )
    found = answer_json(from_storage(manifest_set(new_fields=False), "photo.jpg", REF, "", {}))
    for answer in (made, found):
        assert (answer["width"], answer["height"], answer["placeholder"], answer["html"]) == (
            None,
            None,
            None,
            None,
        )
        assert {(v["format"], v["role"]) for v in answer["variants"]} == {(None, None)}
    assert "job" in made and "job" not in found
