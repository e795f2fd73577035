"""The gateway takes from a worker only outputs an encoder makes, under keys the gateway builds
(`uplodr.gateway.outputs`): a worker a crafted file took over cannot choose where its bytes go.
Real files and a real local store; nothing is written when anything is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from uplodr.answer import Quality, Skipped
from uplodr.dispatch.worker_client import BadOutput
from uplodr.gateway import answers, metrics
from uplodr.gateway.outputs import checked_blobs, publish_outputs
from uplodr.proto import uplodr_pb2
from uplodr.storage import LocalStore, Publisher
from uplodr.storage.catalog import ImageRef

WEBP = b"RIFF" + bytes(60)
DIGEST = "0123456789abcdef"


def variant(**fields: object) -> uplodr_pb2.Variant:
    honest: dict[str, object] = {
        "mime_type": "image/webp",
        "width": 8,
        "height": 8,
        "size_bytes": len(WEBP),
        "format": "webp",
        "role": "full",
        "key_suffix": "",
        "ext": "webp",
    }
    return uplodr_pb2.Variant(**{**honest, **fields})  # type: ignore[arg-type]


def spooled(folder: Path, *outputs: bytes) -> Path:
    for index, data in enumerate(outputs):
        (folder / str(index)).write_bytes(data)
    return folder


def test_honest_outputs_are_published_under_the_gateways_keys(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store", "http://files.test/{key}")
    response = uplodr_pb2.UploadResp(
        file_name="a.jpg",
        folder="blog",
        width=8,
        height=8,
        variants=[variant(), variant(role="width", key_suffix="-480w")],
    )
    outputs = spooled(tmp_path, WEBP, WEBP)
    published = asyncio.run(
        publish_outputs(
            Publisher([store]), response, outputs, "blog", "a", "0123456789abcdef", "{}"
        )
    )
    keys = sorted(v.key for v in published.variants)
    assert keys == ["blog/a-0123456789abcdef-480w.webp", "blog/a-0123456789abcdef.webp"]
    assert (tmp_path / "store" / "blog" / "a-0123456789abcdef.json").is_file()  # manifest last


@pytest.mark.parametrize(
    ("lie", "words"),
    [
        ({"key_suffix": "/../../someone-else/photo"}, "wrong key suffix"),
        ({"key_suffix": "-480w/../x"}, "wrong key suffix"),
        ({"ext": "webp/../../x"}, "typed as something else"),
        ({"ext": "html", "mime_type": "text/html"}, "typed as something else"),
        ({"format": "svg"}, "does not make"),
        ({"role": "manifest"}, "does not make"),
        ({"size_bytes": 1}, "size"),
    ],
)
def test_an_output_that_no_encoder_makes_is_refused_and_nothing_is_stored(
    tmp_path: Path, lie: dict[str, object], words: str
) -> None:
    store_root = tmp_path / "store"
    store = LocalStore(store_root, "http://files.test/{key}")
    response = uplodr_pb2.UploadResp(file_name="a.jpg", variants=[variant(), variant(**lie)])
    outputs = spooled(tmp_path, WEBP, WEBP)
    with pytest.raises(BadOutput, match=words):
        asyncio.run(
            publish_outputs(Publisher([store]), response, outputs, "blog", "a", "0" * 16, "{}")
        )
    assert not store_root.exists() or not any(p.is_file() for p in store_root.rglob("*"))


def test_two_outputs_for_one_key_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BadOutput, match="same key"):
        checked_blobs([variant(), variant()], spooled(tmp_path, WEBP, WEBP))


RECEIPT = uplodr_pb2.Quality(
    metric="ssimulacra2", score=75.43, setting=61, source="encoded", encodes=5, saved=0.2
)


def test_a_quality_receipt_and_the_skipped_formats_reach_the_answer_and_the_manifest(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path / "store", "http://files.test/{key}")
    response = uplodr_pb2.UploadResp(
        file_name="a.jpg",
        width=8,
        height=8,
        variants=[variant(quality=RECEIPT), variant(role="width", key_suffix="-480w")],
        skipped=[uplodr_pb2.Skipped(format="avif", reason="not 10 %\nbelow webp's")],
    )
    publisher = Publisher([store])
    published = asyncio.run(
        publish_outputs(publisher, response, spooled(tmp_path, WEBP, WEBP), "b", "a", DIGEST, "{}")
    )
    answer = answers.from_storage(published, "a.jpg", ImageRef("b", "a", DIGEST), "alt", {})
    full, width = answer.variants
    assert full.quality == Quality("ssimulacra2", 75.4, 61, "encoded", 5, 0.2)
    assert width.quality is None
    assert answer.skipped == (Skipped("avif", "not 10 % below webp's"),)
    # a repeated upload is answered from the manifest with the same receipt
    again = asyncio.run(publisher.lookup("b", "a", DIGEST))
    assert again is not None
    stored = answers.from_storage(again, "a.jpg", ImageRef("b", "a", DIGEST), "alt", {})
    assert stored.variants == answer.variants
    assert stored.skipped == answer.skipped


@pytest.mark.parametrize(
    "lie",
    [
        {"metric": "psnr"},
        {"source": "guess"},
        {"score": float("nan")},
        {"score": 1e9},
        {"setting": 1000},
    ],
)
def test_a_receipt_uplodr_does_not_write_is_refused(tmp_path: Path, lie: dict[str, object]) -> None:
    fields = {
        "metric": "ssimulacra2",
        "score": 75.0,
        "setting": 61,
        "source": "encoded",
        "encodes": 3,
        "saved": 0.1,
        **lie,
    }
    bogus = uplodr_pb2.Quality(**fields)  # type: ignore[arg-type]
    with pytest.raises(BadOutput, match="quality receipt"):
        checked_blobs([variant(quality=bogus)], spooled(tmp_path, WEBP))


def test_the_receipts_are_counted_in_the_metrics() -> None:
    labels = {"metric": "ssimulacra2", "format": "jpeg"}
    before = metrics.REGISTRY.get_sample_value("uplodr_variant_quality_score_count", labels) or 0
    saved_before = (
        metrics.REGISTRY.get_sample_value(
            "uplodr_variant_bytes_saved_ratio_bucket", {"format": "jpeg", "le": "0.3"}
        )
        or 0
    )
    metrics.observe_job({}, [("jpeg", Quality("ssimulacra2", 75.4, 61, "encoded", 4, 0.25))])
    assert metrics.REGISTRY.get_sample_value("uplodr_variant_quality_score_count", labels) == (
        before + 1
    )
    in_bucket = metrics.REGISTRY.get_sample_value(
        "uplodr_variant_quality_score_bucket", {**labels, "le": "76.0"}
    )
    assert in_bucket is not None and in_bucket >= 1
    assert metrics.REGISTRY.get_sample_value(
        "uplodr_variant_bytes_saved_ratio_bucket", {"format": "jpeg", "le": "0.3"}
    ) == (saved_before + 1)
