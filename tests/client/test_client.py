"""The Python client against a real `uplodr serve`: each kind of source converts, errors come
back typed, a busy gateway is waited out, the async client runs uploads side by side, and the
body is streamed (never read whole)."""

from __future__ import annotations

import asyncio
import io
import threading
import tracemalloc
from pathlib import Path

import httpx
import pytest

import uplodr
from tests.support.gateway import Gateway, running_gateway
from tests.support.made import full_formats, mime_types
from tests.support.paths import corpus_file
from tests.support.waiting import busy_worker, wait_for
from uplodr.client import (
    AsyncClient,
    Busy,
    Client,
    Conversion,
    CorruptImage,
    Job,
    NotFound,
    TransportError,
    Unauthenticated,
    UnsupportedImage,
    Variant,
)
from uplodr.client._upload import CHUNK


def metric(gateway: Gateway, line_start: str) -> float:
    for line in httpx.get(f"{gateway.url}/metrics").text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return 0.0


def test_the_package_re_exports_the_clients() -> None:
    assert uplodr.Client is Client
    assert uplodr.AsyncClient is AsyncClient


def test_a_path_bytes_and_an_open_file_each_convert(gateway: Gateway) -> None:
    photo = corpus_file("Landscape_6.jpg")
    with Client(gateway.url) as client:
        from_path = client.convert(photo, folder="client")
        from_bytes = client.convert(photo.read_bytes(), name=photo.name, folder="client")
        with photo.open("rb") as file:
            from_file = client.convert(file, folder="client")
    assert isinstance(from_path, Conversion)
    assert from_path.file_name == "Landscape_6.jpg" and from_path.folder == "client"
    assert not from_path.deduplicated
    assert isinstance(from_path.job, Job) and from_path.job.machine_seconds > 0
    assert all(isinstance(v, Variant) for v in from_path.variants)
    made = full_formats(
        [(v.format, v.role) for v in from_path.variants],
        [(s.format, s.reason) for s in from_path.skipped],
    )  # the formats that won (format_margin), JPEG always
    assert {v.mime_type for v in from_path.variants} == {*mime_types(made), "image/png"}
    for variant in from_path.variants:
        fetched = httpx.get(variant.url)
        assert fetched.status_code == 200 and len(fetched.content) == variant.size_bytes
    # The same bytes, sent as bytes and as a file object, arrive whole: the gateway finds the
    # same digest and answers from storage, without a machine.
    for again in (from_bytes, from_file):
        assert again.deduplicated and again.job is None
        assert again.variants == from_path.variants


class OnlyInChunks(io.RawIOBase):
    """A readable file that fails the test if anyone asks for more than one chunk at once."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.name = "guarded.jpg"
        self.largest_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._data.seek(offset, whence)

    def tell(self) -> int:
        return self._data.tell()

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > CHUNK:
            raise AssertionError(f"read({size}) asks for the whole file")
        self.largest_read = max(self.largest_read, size)
        return self._data.read(size)


def test_a_file_object_is_read_in_chunks(gateway: Gateway) -> None:
    data = corpus_file("Landscape_6.jpg").read_bytes()
    guarded = OnlyInChunks(data)
    with Client(gateway.url) as client:
        conversion = client.convert(guarded, folder="client")  # type: ignore[arg-type]
    assert conversion.file_name == "guarded.jpg"
    assert guarded.largest_read == CHUNK


def test_a_large_file_streams_in_little_memory(gateway: Gateway, tmp_path: Path) -> None:
    """40 MB go through the client with a traced peak of a few chunks: the body is streamed.
    (Not an image, so the gateway refuses it after spooling, without a machine.)"""
    big = tmp_path / "big.bin"
    with big.open("wb") as out:
        for _ in range(40):
            out.write(b"\0" * (1 << 20))
    with Client(gateway.url) as client:
        tracemalloc.start()
        try:
            with pytest.raises(UnsupportedImage):
                client.convert(big)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB for a 40 MB upload"


def test_errors_are_typed_with_code_and_status(gateway: Gateway, tmp_path: Path) -> None:
    truncated = corpus_file("Landscape_6.jpg").read_bytes()[:2000]
    with Client(gateway.url) as client:
        with pytest.raises(CorruptImage) as corrupt:
            client.convert(truncated, name="broken.jpg")
        with pytest.raises(UnsupportedImage) as unsupported:
            client.convert(b"hello, not an image", name="notes.png")
    assert corrupt.value.code == "corrupt_image" and corrupt.value.status == 422
    assert unsupported.value.code == "unsupported_image" and unsupported.value.status == 415
    assert "not an allowed image format" in unsupported.value.message


def test_a_base_url_that_is_not_the_gateways_root_is_not_found(gateway: Gateway) -> None:
    with Client(f"{gateway.url}/v1") as client, pytest.raises(NotFound) as missing:
        client.convert(b"GIF89a", name="a.gif")
    assert missing.value.status == 404 and missing.value.code == "not_found"
    assert missing.value.message == "nothing at '/v1/v1/images'"
    wrong = httpx.put(f"{gateway.url}/v1/images")  # the route exists, for POST and GET
    assert wrong.status_code == 405
    assert wrong.json() == {
        "error": "PUT is not allowed on '/v1/images'",
        "code": "method_not_allowed",
    }
    assert set(wrong.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}
    missing_file = httpx.get(f"{gateway.url}/files/nothing-here.webp")
    assert missing_file.status_code == 404 and missing_file.json()["code"] == "not_found"


def test_a_missing_token_is_unauthenticated(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "tokens", env={"UPLODR_TOKENS": "s3cret"}) as gw:
        with Client(gw.url) as client, pytest.raises(Unauthenticated) as refused:
            client.convert(b"GIF89a", name="a.gif")
        assert refused.value.status == 401 and refused.value.code == "unauthenticated"
        # With the token the request gets past authentication (and is judged on its bytes).
        with Client(gw.url, token="s3cret") as client, pytest.raises(UnsupportedImage):
            client.convert(b"plain text", name="a.gif")


def test_an_unreachable_server_is_a_transport_error(tmp_path: Path) -> None:
    from tests.support.procs import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with Client(url) as client, pytest.raises(TransportError) as failed:
        client.convert(b"GIF89a", name="a.gif")
    assert isinstance(failed.value, ConnectionError)


def test_a_busy_gateway_is_retried_until_it_succeeds(tmp_path: Path) -> None:
    """One machine and no queue: while a large photo converts, a second upload is answered 503
    busy with Retry-After; the client waits as told and tries again until it is converted.
    Room for one more upload in flight (`--max-in-flight 2`; the default, slots + queue, is 1
    here and would refuse every other upload before its body) lets a non-image be read and
    refused 415 meanwhile, and the second image be refused by the service's queue."""
    args = ("--max-machines", "1", "--max-queue", "0", "--max-in-flight", "2")
    with running_gateway(tmp_path / "busy", *args) as gw:
        first: dict[str, Conversion] = {}

        def convert_large() -> None:
            with Client(gw.url) as client:
                first["answer"] = client.convert(corpus_file("book-beside-flowers.jpg"))

        thread = threading.Thread(target=convert_large)
        thread.start()
        busy_worker(gw)  # the one machine is converting
        small = corpus_file("sample-16bit.png")
        raw = httpx.post(f"{gw.url}/v1/images", params={"name": "s.png"}, content=b"plain")
        refused = httpx.post(
            f"{gw.url}/v1/images", params={"name": small.name}, content=small.read_bytes()
        )
        assert raw.status_code == 415  # refused before a machine is needed: never busy
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "busy"
        assert int(refused.headers["retry-after"]) >= 1
        with Client(gw.url, busy_timeout=120) as client:
            conversion = client.convert(small)
        thread.join(120)
        assert not conversion.deduplicated and conversion.job is not None
        assert not first["answer"].deduplicated
        # The client's own tries were refused busy at least once before it got through.
        assert metric(gw, 'uplodr_errors_total{code="busy"}') >= 2
        wait_for(lambda: gw.workers() == [], "no machine left")


def test_a_one_shot_stream_is_not_retried(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "one-shot", "--max-machines", "1", "--max-queue", "0") as gw:

        def convert_large() -> None:
            with Client(gw.url) as client:
                client.convert(corpus_file("book-beside-flowers.jpg"))

        thread = threading.Thread(target=convert_large)
        thread.start()
        busy_worker(gw)
        small = corpus_file("sample-16bit.png").read_bytes()

        class Pipe(io.BytesIO):
            def seekable(self) -> bool:
                return False

        with Client(gw.url) as client, pytest.raises(Busy) as busy:
            client.convert(Pipe(small), name="piped.png")
        assert busy.value.retry_after is not None and busy.value.status == 503
        thread.join(120)
        assert metric(gw, 'uplodr_errors_total{code="busy"}') == 1


async def test_the_async_client_converts_five_files_at_once(gateway: Gateway) -> None:
    names = [
        "sample-16bit.png",
        "Channel_digital_image_CMYK_color.jpg",
        "iss634.gif",
        "xmp_test-adobergb.jpg",
        "alpha-premultiply-2048x1536-paper.png",
    ]
    files = [corpus_file(n) for n in names]
    in_flight: list[float] = []

    async def watch() -> None:
        async with httpx.AsyncClient() as http:
            while True:
                text = (await http.get(f"{gateway.url}/metrics")).text
                values = [
                    float(line.split()[-1])
                    for line in text.splitlines()
                    if line.startswith(("uplodr_jobs_waiting ", "uplodr_jobs_running "))
                ]
                in_flight.append(sum(values))
                await asyncio.sleep(0.05)  # sampling the gauges, not waiting for a state

    watcher = asyncio.create_task(watch())
    try:
        async with AsyncClient(gateway.url) as client:
            conversions = await asyncio.gather(*(client.convert(f, folder="async") for f in files))
    finally:
        watcher.cancel()
    assert [c.file_name for c in conversions] == names
    for c in conversions:  # the formats that won (format_margin; JPEG always), the thumbnail
        made = full_formats(
            [(v.format, v.role) for v in c.variants], [(s.format, s.reason) for s in c.skipped]
        )
        assert len(c.variants) == len(made) + 1 and not c.deduplicated
    # All five were at the gateway together (running on its machines or waiting for one).
    assert max(in_flight) == 5
