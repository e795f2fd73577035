"""Web-ready output through a real worker process over gRPC: HEIC in, widths and markup, the
placeholder, the kept original, per-file options, dedupe answers, errors, and a client that only
knows the contract from before these fields (tests/e2e/old_contract)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import html5lib
import pytest
import pyvips

from tests.support.made import mime_types, of_proto
from tests.support.paths import REPO, corpus_file
from tests.support.worker import Worker, running_worker
from uplodr.markup import picture
from uplodr.preset import DEFAULT_PRESET
from uplodr.proto import uplodr_pb2, uplodr_pb2_grpc

CHUNK = 256 * 1024
OLD_CLIENT = REPO / "tests" / "e2e" / "old_contract" / "old_client.py"
NS = "{http://www.w3.org/1999/xhtml}"


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    with running_worker(tmp_path_factory.mktemp("worker")) as running:
        yield running
    assert running.process.returncode == 0, running.log.read_text()


@pytest.fixture
def stub(worker: Worker) -> Iterator[uplodr_pb2_grpc.ImageStub]:
    with grpc.insecure_channel(worker.address) as channel:
        yield uplodr_pb2_grpc.ImageStub(channel)


def messages(name: str, data: bytes, folder: str, **options: Any) -> list[uplodr_pb2.UploadReq]:
    out = [uplodr_pb2.UploadReq(data=data[i : i + CHUNK]) for i in range(0, len(data), CHUNK)]
    out[0].file_name, out[0].folder = name, folder
    for key, value in options.items():
        setattr(out[0], key, value)
    out.append(uplodr_pb2.UploadReq(done=True))
    return out


def send(
    worker: Worker, stub: uplodr_pb2_grpc.ImageStub, *files: list[uplodr_pb2.UploadReq]
) -> list[uplodr_pb2.UploadResp]:
    stream = [message for file in files for message in file]
    return worker.answers(stub.Stream(iter(stream), metadata=worker.metadata(), timeout=240))


def stored(worker: Worker, variant: uplodr_pb2.Variant) -> Path:
    return worker.store / variant.url.removeprefix("http://files.test/")


def load(worker: Worker, variant: uplodr_pb2.Variant) -> pyvips.Image:
    return pyvips.Image.new_from_file(str(stored(worker, variant)))


def answer_variants(answer: uplodr_pb2.UploadResp) -> list[dict[str, Any]]:
    """The answer's variants as the gateway will put them in its JSON."""
    return [
        {
            "url": v.url,
            "format": v.format,
            "role": v.role,
            "width": v.width,
            "height": v.height,
            "size_bytes": v.size_bytes,
        }
        for v in answer.variants
    ]


def test_an_iphone_heic_becomes_upright_bare_srgb_variants_and_a_placeholder(
    worker: Worker, stub: uplodr_pb2_grpc.ImageStub
) -> None:
    (answer,) = send(
        worker, stub, messages("IMG_2682.heic", corpus_file("IMG_2682.heic").read_bytes(), "heic")
    )
    assert (answer.width, answer.height) == (4032, 3024)
    full = of_proto(answer)  # the formats that won (format_margin), JPEG always
    assert [(v.format, v.role) for v in answer.variants] == [
        *((name, "full") for name in full),
        ("png", "thumbnail"),
    ]
    for variant in answer.variants:
        image = load(worker, variant)
        assert (image.width, image.height) == (variant.width, variant.height)
        assert image.width > image.height  # upright: the photo is landscape
        assert stored(worker, variant).stat().st_size == variant.size_bytes
        assert image.format == "uchar" and image.interpretation in ("srgb", "b-w")
        for field in ("icc-profile-data", "exif-data", "xmp-data", "orientation"):
            assert not image.get_typeof(field), (variant.format, field)
    assert answer.HasField("placeholder")
    assert 15 <= len(base64.b64decode(answer.placeholder.thumbhash)) <= 30
    assert len(answer.placeholder.blurhash) >= 20
    assert answer.placeholder.data_url.startswith("data:image/png;base64,")


def test_widths_and_markup_whose_every_url_is_a_published_variant(
    worker: Worker, stub: uplodr_pb2_grpc.ImageStub
) -> None:
    preset = DEFAULT_PRESET.with_changes(widths=[480, 960, 1600], thumbnail_width=0)
    data = corpus_file("Landscape_6.jpg").read_bytes()  # 1800x1200 once upright
    (answer,) = send(worker, stub, messages("land.jpg", data, "widths", preset=preset.to_json()))
    made = {(v.format, v.width): v for v in answer.variants}
    full = of_proto(answer)
    # width variants follow their format's full-size decision: none of a dropped format
    assert {v.format for v in answer.variants} == set(full)
    for fmt in full:
        for width in (480, 960, 1600, 1800):
            variant = made[(fmt, width)]
            assert variant.role == ("full" if width == 1800 else "width")
            image = load(worker, variant)
            assert (image.width, image.height) == (width, round(width * 2 / 3))
    published = {v.url: v for v in answer.variants}

    markup = picture(answer_variants(answer), alt="A landscape")
    parser = html5lib.HTMLParser(strict=True, namespaceHTMLElements=True)
    (element,) = list(parser.parseFragment(markup))
    assert element.tag == f"{NS}picture"
    img = element.find(f"{NS}img")
    assert img is not None
    assert (img.get("width"), img.get("height")) == ("1800", "1200")
    candidates: list[tuple[str, int | None]] = [(img.get("src", ""), None)]
    for child in element:
        for candidate in child.get("srcset", "").split(", "):
            url, descriptor = candidate.rsplit(" ", 1)
            candidates.append((url, int(descriptor.removesuffix("w"))))
    assert len(candidates) == 1 + len(full) * 4
    for url, declared in candidates:
        variant = published[url]  # every URL in the markup is a published variant...
        image = load(worker, variant)  # ...that is stored and decodes...
        assert image.width == (declared or 1800)  # ...at the width the markup declares
    child_types = [child.get("type") for child in element]
    # a <source> per format made but the JPEG (the <img>), smallest full size first
    size = {v.format: v.size_bytes for v in answer.variants if v.role == "full"}
    sources = sorted((name for name in full if name != "jpeg"), key=size.__getitem__)
    assert child_types == [*mime_types(sources), None]


def test_the_original_is_kept_byte_for_byte_and_alone_when_asked(
    worker: Worker, stub: uplodr_pb2_grpc.ImageStub
) -> None:
    jpeg = corpus_file("xmp_test-adobergb.jpg").read_bytes()  # with its XMP and ICC
    heic = corpus_file("IMG_2682.heic").read_bytes()
    kept, alone = send(
        worker,
        stub,
        messages("photo.jpg", jpeg, "orig", original=uplodr_pb2.ORIGINAL_KEEP),
        messages("phone.heic", heic, "orig", original=uplodr_pb2.ORIGINAL_ONLY),
    )
    roles = [v.role for v in kept.variants]
    full = of_proto(kept)  # the formats that won (format_margin), JPEG always
    assert roles == ["full"] * len(full) + ["thumbnail", "original"]
    original = kept.variants[-1]
    assert (original.format, original.mime_type) == ("jpeg", "image/jpeg")
    assert original.url.endswith("-original.jpg")
    assert stored(worker, original).read_bytes() == jpeg
    assert (original.width, original.height) == (2000, 1072)

    (only,) = alone.variants
    assert (only.format, only.role, only.mime_type) == ("heif", "original", "image/heic")
    assert only.url.endswith("-original.heic")
    assert stored(worker, only).read_bytes() == heic
    assert (alone.width, alone.height) == (4032, 3024)  # from the header
    assert not alone.HasField("placeholder")  # nothing was decoded


def test_a_repeated_upload_gets_the_same_outputs_and_keeping_the_original_adds_it(
    worker: Worker, stub: uplodr_pb2_grpc.ImageStub
) -> None:
    data = corpus_file("sample-16bit.png").read_bytes()
    first, again, keep = send(
        worker,
        stub,
        messages("s.png", data, "dedupe"),
        messages("s.png", data, "dedupe"),
        messages("s.png", data, "dedupe", original=uplodr_pb2.ORIGINAL_KEEP),
    )
    # a worker holds no store, so it cannot answer from one: the gateway dedupes (its tests)
    assert not (first.deduplicated or again.deduplicated or keep.deduplicated)
    assert list(again.variants) == list(first.variants)  # same kinds, sizes, suffixes
    assert again.placeholder == first.placeholder and again.HasField("placeholder")
    assert (again.width, again.height) == (first.width, first.height) == (290, 442)
    assert [v.role for v in keep.variants] == [*(v.role for v in first.variants), "original"]
    original = keep.variants[-1]
    assert stored(worker, original).read_bytes() == data


@pytest.mark.parametrize(
    ("options", "code", "words"),
    [
        ({"preset": '{"widths": [0]}'}, "INVALID_ARGUMENT", "the request's preset widths"),
        ({"preset": "not json"}, "INVALID_ARGUMENT", "the request's preset: not valid JSON"),
        ({"original": 9}, "INVALID_ARGUMENT", "original must be one of 0..3"),
    ],
)
def test_bad_per_file_options_are_refused(
    worker: Worker,
    stub: uplodr_pb2_grpc.ImageStub,
    options: dict[str, Any],
    code: str,
    words: str,
) -> None:
    data = corpus_file("sample-16bit.png").read_bytes()
    with pytest.raises(grpc.RpcError) as caught:
        send(worker, stub, messages("s.png", data, "bad", **options))
    assert caught.value.code() == grpc.StatusCode[code]
    assert words in (caught.value.details() or "")


def error_code(error: grpc.RpcError) -> str:
    trailing = dict(error.trailing_metadata() or ())
    return str(trailing.get("uplodr-error"))


def test_a_truncated_heic_is_corrupt_and_a_heic_bomb_over_the_limit(
    worker: Worker, stub: uplodr_pb2_grpc.ImageStub
) -> None:
    heic = corpus_file("IMG_2682.heic").read_bytes()
    with pytest.raises(grpc.RpcError) as caught:
        send(worker, stub, messages("cut.heic", heic[: len(heic) // 2], "bad"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_code(caught.value) == "corrupt_image"  # the gateway's 422
    bomb = bytearray(heic)
    at = bomb.find((4032).to_bytes(4, "big") + (3024).to_bytes(4, "big"))
    bomb[at : at + 8] = (20000).to_bytes(4, "big") + (15000).to_bytes(4, "big")
    with pytest.raises(grpc.RpcError) as caught:
        send(worker, stub, messages("bomb.heic", bytes(bomb), "bad"))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_code(caught.value) == "limit_exceeded"
    assert "20000x15000" in (caught.value.details() or "")


def test_an_animated_gif_gives_an_animated_avif(
    worker: Worker, stub: uplodr_pb2_grpc.ImageStub
) -> None:
    from PIL import Image

    (answer,) = send(worker, stub, messages("a.gif", corpus_file("iss634.gif").read_bytes(), "gif"))
    avif = next(v for v in answer.variants if v.format == "avif")
    with Image.open(stored(worker, avif)) as image:
        assert image.format == "AVIF" and getattr(image, "n_frames", 1) == 42


def test_a_client_of_the_old_contract_still_converts(worker: Worker, tmp_path: Path) -> None:
    """Compiled from the proto as it was before the new fields: it sends no options and parses
    the new answer, unknown fields skipped: the output chunks (field 9) read to it as empty
    answers, and its file's answer names the four variants with their sizes. Their bytes are
    in those chunks, no longer in a store the worker wrote (issue 16): an old gateway cannot
    publish through a new worker, but the contract it speaks still parses."""
    assert worker.token is not None
    done = subprocess.run(
        [
            sys.executable,
            str(OLD_CLIENT),
            worker.address,
            worker.token,
            str(corpus_file("Landscape_6.jpg")),
            "old.jpg",
            "old-client",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    (answer,) = [a for a in answers if a["file_name"]]
    assert all(not a["variants"] for a in answers if not a["file_name"])  # the output chunks
    assert (answer["file_name"], answer["folder"]) == ("old.jpg", "old-client")
    types = [v["mime_type"] for v in answer["variants"]]
    # the formats that won, in the preset's order; the JPEG fallback and the thumbnail always
    assert types[-2:] == ["image/jpeg", "image/png"]
    assert types[:-2] == [t for t in mime_types(DEFAULT_PRESET.formats[:-1]) if t in types]
    assert all(v["size_bytes"] > 0 and v["width"] > 0 for v in answer["variants"])
