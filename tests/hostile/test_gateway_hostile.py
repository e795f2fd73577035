"""The whole hostile corpus through one real `uplodr serve` whose machines are capped at 512 MB:
every case gets its specific 4xx (or, where legitimate, valid variants), never a 5xx or a hang;
non-images are refused before any machine exists; hostile names and folders get a 400 with a
message; nothing is written outside the store; memory stays bounded; and afterwards a normal
photo still converts and no machine is left."""

from __future__ import annotations

import os
import secrets
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pyvips

from tests.hostile.support import MachineMemory, machines_created, peak_rss_mb
from tests.hostile_corpus import CASES, HostileCase
from tests.support.gateway import Gateway, running_gateway
from tests.support.made import mime_types, of_json
from tests.support.paths import corpus_file
from uplodr.errors import STATUSES, UnsupportedImage
from uplodr.machines import cgroup

MACHINE_MEMORY_MB = 512
# A marker in every path-climbing name: after the run, no file anywhere may carry it. One per
# test run, the same in every test process (xdist's run id): test ids are made of it, and the
# processes must collect the same ids.
RUN_ID = os.environ.get("PYTEST_XDIST_TESTRUNUID") or secrets.token_hex(4)
MARK = f"uplodr-escape-{RUN_ID[:8]}"
LOADERS = {
    "image/webp": "webpload_buffer",
    "image/avif": "heifload_buffer",
    "image/jpeg": "jpegload_buffer",
    "image/png": "pngload_buffer",
}


@dataclass
class HostileRun:
    gateway: Gateway
    memory: MachineMemory
    spool: Path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileRun]:
    root = tmp_path_factory.mktemp("hostile")
    spool = root / "tmp"  # the gateway's TMPDIR: where uploads are spooled
    spool.mkdir()
    with (
        running_gateway(
            root, "--machine-memory", f"{MACHINE_MEMORY_MB}M", env={"TMPDIR": str(spool)}
        ) as gateway,
        MachineMemory(gateway) as memory,
    ):
        yield HostileRun(gateway, memory, spool)


def post(gateway: Gateway, data: bytes, **params: str) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/images", params=params, content=data, timeout=120)


def tiny_jpeg() -> bytes:
    data: bytes = pyvips.Image.black(16, 16).jpegsave_buffer()
    return data


def check_variants(answer: dict[str, Any]) -> None:
    """The formats that won and the thumbnail, each served at its URL as the type, size and
    dimensions it claims."""
    made = [*mime_types(of_json(answer)), "image/png"]
    assert sorted(v["mime_type"] for v in answer["variants"]) == sorted(made)
    for variant in answer["variants"]:
        fetched = httpx.get(variant["url"], timeout=30)
        assert fetched.status_code == 200
        assert len(fetched.content) == variant["size_bytes"]
        image = pyvips.Image.new_from_buffer(fetched.content, "")
        assert image.get("vips-loader") == LOADERS[variant["mime_type"]]
        assert (image.width, image.height) == (variant["width"], variant["height"])


def expected_code(case: HostileCase) -> str:
    assert case.expected != "ok"
    # Zero bytes is a malformed request at the HTTP level (no body), before any sniffing.
    return "invalid_request" if case.name == "empty" else case.expected.code


def assert_clean_error(run: HostileRun, response: httpx.Response, code: str) -> str:
    assert response.status_code == STATUSES[code].http, response.text
    body = response.json()
    assert body["code"] == code
    message: str = body["error"]
    assert message and len(message) < 300  # a sentence, not an echo of the input
    for leak in ("Traceback", "vips", str(run.gateway.root), str(run.spool)):
        assert leak not in response.text
    return message


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_hostile_case_gets_its_specific_answer(run: HostileRun, case: HostileCase) -> None:
    gateway = run.gateway
    before = len(machines_created(gateway))
    started = time.monotonic()
    response = post(gateway, case.data, name=case.filename, folder="hostile")
    assert time.monotonic() - started < 60, "no hang: every case is answered within a minute"
    assert response.status_code < 500, response.text
    if case.expected == "ok":
        assert response.status_code == 200, response.text
        check_variants(response.json())
    else:
        assert_clean_error(run, response, expected_code(case))
    created = len(machines_created(gateway)) - before
    if case.expected is UnsupportedImage or case.name == "empty":
        assert created == 0, "a non-image must be refused before a machine is created"
    else:
        assert created == 1
    # The machine is destroyed before the answer is sent.
    assert gateway.workers() == []
    assert gateway.machine_records() == []


@pytest.mark.parametrize(
    "params",
    [
        {"name": f"../../../{MARK}.jpg"},
        {"name": f"/tmp/{MARK}.jpg"},
        {"name": f"..\\..\\{MARK}.jpg"},
        {"name": ".."},
        {"name": f"{MARK}\x00.jpg"},
        {"name": f"{MARK}\n.jpg"},
        {"name": f"{MARK}\r\nSet-Cookie: x.jpg"},
        {"name": f"{MARK}\u202egpj.exe"},  # right-to-left override: shows as "exe.jpg"
        {"name": "a" * 5000 + ".jpg"},
        {"name": f"{MARK}.jpg", "folder": f"../../{MARK}"},
        {"name": f"{MARK}.jpg", "folder": f"/tmp/{MARK}"},
        {"name": f"{MARK}.jpg", "folder": f"ok/../../{MARK}"},
        {"name": f"{MARK}.jpg", "folder": f"..\\..\\{MARK}"},
        {"name": f"{MARK}.jpg", "folder": f"%2e%2e/{MARK}"},
        {"name": f"{MARK}.jpg", "folder": f"~/{MARK}"},
        {"name": f"{MARK}.jpg", "folder": f"a/./{MARK}"},
        {"name": f"{MARK}.jpg", "folder": f"a\x00/{MARK}"},
        {"name": f"{MARK}.jpg", "folder": f"a\n/{MARK}"},
        {"name": f"{MARK}.jpg", "folder": "a" * 5000},
        {"name": f"{MARK}.jpg", "folder": "/".join("d" * 9)},
    ],
    ids=lambda params: repr(params)[:60],
)
def test_hostile_names_and_folders_get_400_with_a_message(
    run: HostileRun, params: dict[str, str]
) -> None:
    before = len(machines_created(run.gateway))
    response = post(run.gateway, tiny_jpeg(), **params)
    message = assert_clean_error(run, response, "invalid_request")
    assert "name" in message or "folder" in message
    assert not any(unicodedata.category(ch)[0] == "C" for ch in message)
    assert len(machines_created(run.gateway)) == before


def test_multipart_file_name_cannot_climb(run: HostileRun) -> None:
    response = httpx.post(
        f"{run.gateway.url}/v1/images",
        files={"file": (f"../../{MARK}.jpg", tiny_jpeg(), "image/jpeg")},
        timeout=60,
    )
    assert_clean_error(run, response, "invalid_request")


def test_unicode_name_is_normalised_and_stored_inside_its_folder(run: HostileRun) -> None:
    response = post(
        run.gateway, tiny_jpeg(), name="Cafe\u0301 photo.jpg", folder="trips/2024/"
    )  # NFD é
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["file_name"] == "Caf\u00e9 photo.jpg"  # NFC
    assert answer["folder"] == "trips/2024"
    check_variants(answer)
    stored = sorted((run.gateway.store / "trips" / "2024").iterdir())
    assert stored and all(p.name.startswith("Caf\u00e9-photo-") for p in stored)


def _names_under(top: Path, depth: int) -> Iterator[Path]:
    if depth < 0:
        return
    try:
        entries = list(top.iterdir())
    except OSError:
        return
    for entry in entries:
        yield entry
        if entry.is_dir() and not entry.is_symlink():
            yield from _names_under(entry, depth - 1)


def test_after_the_hostile_run_a_photo_converts_and_nothing_is_left(
    run: HostileRun, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway = run.gateway
    # Before the normal photo below: the hostile cases alone.
    hostile_worker_peak, hostile_cgroup_peak = run.memory.worker_peak_mb, run.memory.cgroup_peak_mb
    photo = corpus_file("book-beside-flowers.jpg")
    response = post(gateway, photo.read_bytes(), name=photo.name, folder="after")
    assert response.status_code == 200, response.text
    check_variants(response.json())
    assert gateway.workers() == []
    assert gateway.machine_records() == []
    parent = cgroup.default_parent()
    created = machines_created(gateway)
    if parent is not None:
        assert not [m for m in created if (parent / m).exists()], "a machine's cgroup was left"

    # Nothing outside the store: every stored file is a regular file inside it; the gateway's
    # folder holds only what it should; the spool is empty; no path anywhere carries the marker.
    store = gateway.store.resolve()
    for path in store.rglob("*"):
        assert not path.is_symlink() and path.resolve().is_relative_to(store), path
    assert {p.name for p in gateway.root.iterdir()} <= {
        "cwd",
        "state",
        "store",
        "data",
        "tmp",
        "gateway.log",
    }
    assert list(gateway.cwd.rglob("*")) == []
    assert list(run.spool.iterdir()) == []
    places = [(gateway.root.parent, 6), (Path("/tmp"), 1), (Path("/etc"), 0), (Path("/"), 0)]
    for top, depth in places:
        escaped = [p for p in _names_under(top, depth) if MARK in p.name]
        assert escaped == [], f"written outside the store: {escaped}"

    # Memory: the gateway never loaded libvips and stayed small; machines stayed under the cap
    # (an overrun would have been OOM-killed and answered 422 "memory" instead of the above).
    maps = Path(f"/proc/{gateway.process.pid}/maps").read_text()
    assert "libvips" not in maps
    gateway_peak = peak_rss_mb(gateway.process.pid)
    memory = run.memory
    assert memory.workers_seen >= len(created) - 1  # the sampler saw (nearly) every machine
    assert gateway_peak < 150, f"gateway peak RSS {gateway_peak:.0f} MB"
    assert memory.worker_peak_mb < MACHINE_MEMORY_MB
    # Bombs are refused from their headers: no hostile case costs more than a worker's start-up
    # footprint plus a small image (the imaging tests bound them all together under 200 MB).
    assert hostile_worker_peak < 256, f"worker peak {hostile_worker_peak:.0f} MB"
    with capsys.disabled():
        print(
            f"\nhostile run: {len(created)} machines; peak RSS gateway {gateway_peak:.0f} MB, "
            f"worker {hostile_worker_peak:.0f} MB VmHWM / {hostile_cgroup_peak:.0f} MB cgroup "
            f"over the hostile cases; {memory.worker_peak_mb:.0f} MB VmHWM / "
            f"{memory.cgroup_peak_mb:.0f} MB cgroup with the 12 MP photo after"
        )
