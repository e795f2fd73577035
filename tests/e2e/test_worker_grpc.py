"""The worker's gRPC contract over real sockets: Stream past gRPC's 4 MiB default, several
files on one stream, the malformed-stream rules, tokens, health, and a client we did not write
(buf curl, with server reflection)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import pyvips
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.made import mime_types, of_proto
from tests.support.paths import REPO, corpus_file
from tests.support.worker import Worker, running_worker
from uplodr.proto import uplodr_pb2, uplodr_pb2_grpc

CHUNK = 256 * 1024
BUF = REPO / "tests" / "grpc-client" / "node_modules" / ".bin" / "buf"


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    with running_worker(tmp_path_factory.mktemp("worker")) as running:
        yield running
    assert running.process.returncode == 0, running.log.read_text()


@pytest.fixture
def stub(worker: Worker) -> Iterator[uplodr_pb2_grpc.ImageStub]:
    with grpc.insecure_channel(worker.address) as channel:
        yield uplodr_pb2_grpc.ImageStub(channel)


def chunks(name: str, data: bytes, folder: str = "grpc") -> list[uplodr_pb2.UploadReq]:
    messages = [uplodr_pb2.UploadReq(data=data[i : i + CHUNK]) for i in range(0, len(data), CHUNK)]
    messages[0].file_name, messages[0].folder = name, folder
    messages.append(uplodr_pb2.UploadReq(done=True))
    return messages


@pytest.fixture(scope="module")
def big_png(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A losslessly compressed noise image: > 4 MiB however well PNG tries."""
    noise = pyvips.Image.gaussnoise(1600, 1200, mean=128, sigma=60).cast("uchar")
    data: bytes = noise.bandjoin([noise, noise]).pngsave_buffer(compression=1)
    assert len(data) > 4 * 1024 * 1024
    return data


def test_a_file_above_4_mib_and_a_second_file_on_one_stream(
    worker: Worker, stub: uplodr_pb2_grpc.ImageStub, big_png: bytes
) -> None:
    small = corpus_file("sample-16bit.png").read_bytes()
    messages = chunks("noise.png", big_png) + chunks("sample.png", small, folder="other")
    answers = worker.answers(stub.Stream(iter(messages), metadata=worker.metadata(), timeout=120))
    assert [(a.file_name, a.folder) for a in answers] == [
        ("noise.png", "grpc"),
        ("sample.png", "other"),
    ]
    for answer in answers:
        # the formats that won (format_margin; JPEG always) and the thumbnail
        assert len(answer.variants) == len(of_proto(answer)) + 1
        for variant in answer.variants:
            key = variant.url.removeprefix("http://files.test/")
            stored = worker.store / key
            assert stored.stat().st_size == variant.size_bytes
            image = pyvips.Image.new_from_file(str(stored))
            assert (image.width, image.height) == (variant.width, variant.height)


def test_upload_in_one_message(worker: Worker, stub: uplodr_pb2_grpc.ImageStub) -> None:
    data = corpus_file("Landscape_6.jpg").read_bytes()
    answer = stub.Upload(
        uplodr_pb2.UploadReq(file_name="landscape.jpg", folder="one", data=data),
        metadata=worker.metadata(),
        timeout=60,
    )
    # the formats that won (format_margin; JPEG always) and the thumbnail
    assert [v.mime_type for v in answer.variants] == [*mime_types(of_proto(answer)), "image/png"]
    # one message: each output's bytes inline, the size it says
    assert all(len(v.data) == v.size_bytes > 0 for v in answer.variants)


@pytest.mark.parametrize(
    ("messages", "code", "words"),
    [
        ([uplodr_pb2.UploadReq(data=b"x", done=True)], "INVALID_ARGUMENT", "file_name"),
        ([uplodr_pb2.UploadReq(file_name="a.png", done=True)], "INVALID_ARGUMENT", "empty"),
        (
            [uplodr_pb2.UploadReq(file_name="a.png", data=b"abc")],
            "INVALID_ARGUMENT",
            "ended before 'done'",
        ),
        (
            [uplodr_pb2.UploadReq(file_name="a.png"), uplodr_pb2.UploadReq(data=b"x")],
            "INVALID_ARGUMENT",
            "empty chunk",
        ),
        (
            [uplodr_pb2.UploadReq(file_name="a" * 5000 + ".png", data=b"x", done=True)],
            "INVALID_ARGUMENT",
            "longer than",
        ),
        (
            [uplodr_pb2.UploadReq(file_name="../../etc/x.png", data=b"x", done=True)],
            "INVALID_ARGUMENT",
            "must not contain",
        ),
        ([], "INVALID_ARGUMENT", "no file"),
    ],
)
def test_malformed_streams_get_specific_statuses(
    worker: Worker,
    stub: uplodr_pb2_grpc.ImageStub,
    messages: list[uplodr_pb2.UploadReq],
    code: str,
    words: str,
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Stream(iter(messages), metadata=worker.metadata(), timeout=30))
    assert caught.value.code() == grpc.StatusCode[code]
    assert words in caught.value.details()
    # The worker stays healthy: the next call works.
    assert stub.Ping(uplodr_pb2.Echo(nonce="n"), metadata=worker.metadata()).nonce == "n"


def test_data_after_done_without_a_name_is_refused(
    worker: Worker, stub: uplodr_pb2_grpc.ImageStub
) -> None:
    good = chunks("s.png", corpus_file("sample-16bit.png").read_bytes())
    stray = [uplodr_pb2.UploadReq(data=b"more")]
    call = stub.Stream(iter(good + stray), metadata=worker.metadata(), timeout=60)
    first = next(r for r in call if not r.HasField("output"))  # its outputs come first
    assert first.file_name == "s.png"
    with pytest.raises(grpc.RpcError) as caught:
        next(call)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "after 'done'" in caught.value.details()


def test_token_is_required_but_health_is_open(worker: Worker) -> None:
    with grpc.insecure_channel(worker.address) as channel:
        stub = uplodr_pb2_grpc.ImageStub(channel)
        for metadata in ((), (("authorization", "Bearer wrong"),)):
            with pytest.raises(grpc.RpcError) as caught:
                stub.Ping(uplodr_pb2.Echo(nonce="x"), metadata=metadata, timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "test-token" not in (caught.value.details() or "")
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(service="uplodr.v1.Image"))
        assert status.status == health_pb2.HealthCheckResponse.SERVING


def buf_curl(worker: Worker, method: str, body: dict[str, object]) -> dict[str, object]:
    if not BUF.exists():
        pytest.fail(f"{BUF} missing: the test command installs it (npm ci in tests/grpc-client)")
    result = subprocess.run(
        [
            str(BUF),
            "curl",
            "--protocol",
            "grpc",
            "--http2-prior-knowledge",
            "-H",
            f"authorization: Bearer {worker.token}",
            # Reflection is behind the token too, and buf sends -H only with the call itself.
            "--reflect-header",
            f"authorization: Bearer {worker.token}",
            "-d",
            "@-",  # the request body from stdin: an image is too long for an argument
            f"http://{worker.address}/uplodr.v1.Image/{method}",
        ],
        input=json.dumps(body),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, object] = json.loads(result.stdout)
    return answer


def test_buf_curl_pings_and_uploads_with_reflection(worker: Worker) -> None:
    assert buf_curl(worker, "Ping", {"nonce": "from-buf"}) == {"nonce": "from-buf"}
    data = corpus_file("iss634.gif").read_bytes()
    answer = buf_curl(
        worker,
        "Upload",
        {"fileName": "anim.gif", "folder": "buf", "data": base64.b64encode(data).decode()},
    )
    variants = answer["variants"]
    # an animation: its WebP and AVIF keep every frame at fixed settings, so none is dropped
    assert isinstance(variants, list) and len(variants) == 4
    assert {v["mimeType"] for v in variants} == {
        "image/webp",
        "image/avif",
        "image/jpeg",
        "image/png",
    }
    # the outputs come back in the answer (base64 in JSON), none stored by the worker
    assert all(len(base64.b64decode(v["data"])) == int(v["sizeBytes"]) for v in variants)


def test_a_second_worker_on_a_taken_port_refuses_to_start(worker: Worker, tmp_path: Path) -> None:
    """gRPC would share a port between two servers (SO_REUSEPORT) and split the calls between
    them; a worker started on a port another worker holds must exit with one clear line."""
    result = subprocess.run(
        [sys.executable, "-m", "uplodr", "worker", "--grpc-addr", worker.address],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert f"cannot listen on {worker.address}" in result.stderr
    assert "Traceback" not in result.stderr
