"""`uplodr serve --machine-memory 512M`: a job that needs more memory than its machine has fails
with a clear 422 that says so, and the machine is destroyed; the default preset keeps the same
24 MP photo inside 512 MB, and so do responsive widths for it and for a 12 MP HEIC, and JPEG XL
(issue 17): beside the other formats at the default size (~400-430 MB), and alone at the full
24 MP (~455-465 MB)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.hostile.support import MachineMemory, machines_created
from tests.support.gateway import Gateway, running_gateway
from tests.support.made import of_json
from tests.support.paths import corpus_file
from uplodr.machines import cgroup
from uplodr.preset import DEFAULT_PRESET

MEMORY = "512M"
PHOTO = "craft-beer.jpg"  # 6000 x 4000: a full-resolution AVIF of it peaks at ~600-670 MB


def post_photo(gateway: Gateway, photo: str = PHOTO) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/images",
        params={"name": photo, "folder": "cap"},
        content=corpus_file(photo).read_bytes(),
        timeout=240,
    )


def assert_nothing_left(gateway: Gateway) -> None:
    assert gateway.workers() == []
    assert gateway.machine_records() == []
    parent = cgroup.default_parent()
    if parent is not None:
        assert not [m for m in machines_created(gateway) if (parent / m).exists()]


@pytest.fixture
def full_size_preset(tmp_path: Path) -> Path:
    settings = json.loads(DEFAULT_PRESET.to_json())
    settings["max_long_side"] = 8000  # no downscale: every variant at 24 MP
    path = tmp_path / "full-size.json"
    path.write_text(json.dumps(settings))
    return path


def test_a_job_beyond_the_machine_memory_fails_clearly(
    tmp_path: Path, full_size_preset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_gateway(
        tmp_path / "gw", "--machine-memory", MEMORY, "--preset", str(full_size_preset)
    ) as gateway:
        with MachineMemory(gateway) as memory:
            response = post_photo(gateway)
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["code"] == "limit_exceeded"
        assert "memory" in body["error"] and "512 MB" in body["error"]
        assert "Traceback" not in response.text
        assert len(machines_created(gateway)) == 1
        assert_nothing_left(gateway)
        # The gateway is fine and the next job gets a fresh machine.
        assert httpx.get(f"{gateway.url}/healthz", timeout=10).status_code == 200
    with capsys.disabled():
        print(
            f"\nfull-size preset under {MEMORY}: {response.status_code} {body['error']!r}; "
            f"cgroup peak {memory.cgroup_peak_mb:.0f} MB"
        )


def test_the_default_preset_fits_the_photo_in_512_mb(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_gateway(tmp_path / "gw", "--machine-memory", MEMORY) as gateway:
        with MachineMemory(gateway) as memory:
            response = post_photo(gateway)
        assert response.status_code == 200, response.text
        variants = response.json()["variants"]
        assert max(max(v["width"], v["height"]) for v in variants) == DEFAULT_PRESET.max_long_side
        assert_nothing_left(gateway)
    assert 0 < memory.worker_peak_mb < 512
    with capsys.disabled():
        print(
            f"\ndefault preset under {MEMORY}: worker peak {memory.worker_peak_mb:.0f} MB "
            f"(VmHWM), cgroup peak {memory.cgroup_peak_mb:.0f} MB"
        )


@pytest.mark.parametrize("photo", [PHOTO, "IMG_2682.heic"])
def test_responsive_widths_fit_the_photo_and_a_heic_in_512_mb(
    tmp_path: Path, photo: str, capsys: pytest.CaptureFixture[str]
) -> None:
    widths = tmp_path / "widths.json"
    widths.write_text(json.dumps({"widths": [480, 960, 1600]}))
    with running_gateway(
        tmp_path / "gw", "--machine-memory", MEMORY, "--preset", str(widths)
    ) as gateway:
        with MachineMemory(gateway) as memory:
            response = post_photo(gateway, photo)
        assert response.status_code == 200, response.text
        # each format that won at full size and its 3 widths, the thumbnail (every format was
        # encoded: format_margin drops after the encodes, so the memory is the same)
        full = of_json(response.json())
        assert len(response.json()["variants"]) == len(full) * 4 + 1
        assert_nothing_left(gateway)
    assert 0 < memory.worker_peak_mb < 512
    with capsys.disabled():
        print(
            f"\n{photo} with widths under {MEMORY}: worker peak {memory.worker_peak_mb:.0f} MB "
            f"(VmHWM), cgroup peak {memory.cgroup_peak_mb:.0f} MB"
        )


@pytest.mark.parametrize(
    ("settings", "longest"),
    [
        # every format encoded (format_margin 0 stores them all, so the JXL's size is checked;
        # the default margin drops formats after their encodes: the same memory)
        (
            {"formats": ["jxl", "avif", "webp", "jpeg"], "format_margin": 0},
            DEFAULT_PRESET.max_long_side,
        ),
        # libjxl at the photo's full 24 MP (no AVIF beside it: that alone would not fit)
        ({"formats": ["jxl"], "max_long_side": 8000}, 6000),
    ],
    ids=["jxl-first-default-size", "jxl-alone-24mp"],
)
def test_jpeg_xl_fits_the_photo_in_512_mb(
    tmp_path: Path, settings: dict[str, object], longest: int, capsys: pytest.CaptureFixture[str]
) -> None:
    preset = tmp_path / "jxl.json"
    preset.write_text(json.dumps(settings))
    with running_gateway(
        tmp_path / "gw", "--machine-memory", MEMORY, "--preset", str(preset)
    ) as gateway:
        with MachineMemory(gateway) as memory:
            response = post_photo(gateway)
        assert response.status_code == 200, response.text
        variants = response.json()["variants"]
        jxl = [v for v in variants if v["mime_type"] == "image/jxl"]
        assert len(jxl) == 1 and max(jxl[0]["width"], jxl[0]["height"]) == longest
        assert_nothing_left(gateway)
    assert 0 < memory.worker_peak_mb < 512
    with capsys.disabled():
        print(
            f"\n{settings} under {MEMORY}: worker peak {memory.worker_peak_mb:.0f} MB "
            f"(VmHWM), cgroup peak {memory.cgroup_peak_mb:.0f} MB"
        )
