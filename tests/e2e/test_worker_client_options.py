"""The gateway's gRPC client (`uplodr.dispatch.worker_client`) puts each file's options — the
preset it is converted with and what happens to the original — on the file's first message,
and a real worker process honours them: also for an empty file, whose first message is its
only one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.made import of_proto
from tests.support.paths import corpus_file
from tests.support.worker import Worker, running_worker
from uplodr.dispatch.worker_client import UploadSource, WorkerClient
from uplodr.preset import DEFAULT_PRESET
from uplodr.proto import uplodr_pb2

MSG_SIZE = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    with running_worker(tmp_path_factory.mktemp("worker")) as running:
        yield running


async def stream(worker: Worker, *files: UploadSource) -> list[uplodr_pb2.UploadResp]:
    client = WorkerClient(worker.address, worker.token, MSG_SIZE, 64 * 1024)
    try:
        await client.wait_ready(30)
        return await client.stream(files, timeout=240)
    finally:
        await client.close()


def test_each_file_is_converted_with_its_own_preset_and_original_choice(
    worker: Worker, tmp_path: Path
) -> None:
    photo = corpus_file("sample-16bit.png")  # 290x442
    webp_only = DEFAULT_PRESET.with_changes(formats=["webp"], thumbnail_width=0).to_json()
    folders = [tmp_path / name for name in ("plain", "chosen", "alone")]
    for folder in folders:
        folder.mkdir()
    plain, chosen, alone = asyncio.run(
        stream(
            worker,
            UploadSource(photo, "s.png", "opts", outputs=folders[0]),
            UploadSource(
                photo, "s.png", "opts", preset=webp_only, original="keep", outputs=folders[1]
            ),
            UploadSource(photo, "s.png", "opts", original="only", outputs=folders[2]),
        )
    )
    made = of_proto(plain)  # the default preset: the formats that won (JPEG always)
    assert [(v.format, v.role) for v in plain.variants] == [
        *[(name, "full") for name in made],
        ("png", "thumbnail"),
    ]
    assert [(v.format, v.role) for v in chosen.variants] == [("webp", "full"), ("png", "original")]
    assert [(v.format, v.role) for v in alone.variants] == [("png", "original")]
    # each file's outputs in its own folder, in the order its answer names them
    assert (folders[1] / "1").read_bytes() == photo.read_bytes()  # the kept original
    assert (folders[2] / "0").read_bytes() == photo.read_bytes()
    assert sorted(p.name for p in folders[0].iterdir()) == [str(n) for n in range(len(made) + 1)]


async def sent(*files: UploadSource) -> list[uplodr_pb2.UploadReq]:
    """The messages the client streams for these files (no worker needed to see them)."""
    client = WorkerClient("127.0.0.1:1", None, MSG_SIZE, 64 * 1024)
    try:
        return [message async for message in client._messages(files)]
    finally:
        await client.close()


def test_an_empty_file_carries_its_options_too(tmp_path: Path) -> None:
    """The worker refuses an empty file before it reads any option, so what an empty file
    carries is checked on the messages themselves: the same first message as any file's."""
    empty, small = tmp_path / "empty.png", tmp_path / "small.png"
    empty.write_bytes(b"")
    small.write_bytes(b"x" * 100_000)  # two chunks of 64 KiB
    preset = DEFAULT_PRESET.with_changes(widths=[320]).to_json()
    messages = asyncio.run(
        sent(
            UploadSource(empty, "e.png", "f", preset=preset, original="only"),
            UploadSource(small, "s.png", "g", preset=preset, original="drop"),
        )
    )
    firsts = [m for m in messages if m.file_name]
    assert [(m.file_name, m.folder, m.preset, m.original) for m in firsts] == [
        ("e.png", "f", preset, uplodr_pb2.ORIGINAL_ONLY),
        ("s.png", "g", preset, uplodr_pb2.ORIGINAL_DROP),
    ]
    assert messages[0].done and not messages[0].data
    assert [len(m.data) for m in messages[1:]] == [64 * 1024, 100_000 - 64 * 1024, 0]
    # Only a file's first message names it and carries its options.
    assert all(not m.preset and not m.original for m in messages[2:])
