"""Hostile input through probe and convert: a specific error (or success), bounded memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.hostile_corpus import CASES, HostileCase
from tests.support.made import full_formats
from tests.support.paths import corpus_file
from uplodr.errors import UplodrError
from uplodr.imaging import ImageLimits, convert, probe
from uplodr.preset import DEFAULT_PRESET

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_hostile_case_gets_its_specific_answer(case: HostileCase, tmp_path: Path) -> None:
    path = tmp_path / case.filename
    path.write_bytes(case.data)
    if case.expected == "ok":
        conversion = convert(path, DEFAULT_PRESET, ImageLimits())
        made = full_formats(
            [(v.format, v.role) for v in conversion.variants],
            [(s.format, s.reason) for s in conversion.skipped],
        )  # the formats that won (format_margin), JPEG always
        assert [v.name for v in conversion.variants] == [*made, "thumbnail"]
        return
    with pytest.raises(UplodrError) as caught:
        convert(path, DEFAULT_PRESET, ImageLimits())
    assert type(caught.value) is case.expected, str(caught.value)
    message = str(caught.value)
    assert str(tmp_path) not in message and "vips" not in message.lower()


def test_bombs_are_refused_by_probe_without_decoding(tmp_path: Path) -> None:
    for case in CASES:
        if case.bomb and case.expected != "ok":
            path = tmp_path / case.filename
            path.write_bytes(case.data)
            started = time.perf_counter()
            with pytest.raises(case.expected):
                probe(path, ImageLimits())
            assert time.perf_counter() - started < 1.0, case.name


def test_limit_messages_give_numbers(tmp_path: Path) -> None:
    from tests.hostile_corpus import CASES_BY_NAME
    from uplodr.errors import LimitExceeded

    path = tmp_path / "bomb.png"
    path.write_bytes(CASES_BY_NAME["png-bomb-20000x20000"].data)
    with pytest.raises(LimitExceeded, match=r"20000x20000 px = 400\.0 MP; the limit is 100 MP"):
        probe(path, ImageLimits())
    path.write_bytes(CASES_BY_NAME["gif-20000-frames"].data)
    with pytest.raises(LimitExceeded, match="20000 frames; at most 500"):
        probe(path, ImageLimits())


def test_blocked_loaders_cannot_load_even_past_the_sniffer() -> None:
    import pyvips

    from tests.hostile_corpus import SVG
    from uplodr.imaging import configure_vips

    configure_vips()
    with pytest.raises(pyvips.Error, match="not in a known format"):
        pyvips.Image.new_from_buffer(SVG, "")
    with pytest.raises(pyvips.Error, match="svgload_buffer: operation is blocked"):
        pyvips.Image.svgload_buffer(SVG)
    pyvips.Image.jpegload_buffer(pyvips.Image.black(8, 8).jpegsave_buffer())  # still allowed


def test_time_limit_raises_limit_exceeded() -> None:
    from uplodr.errors import LimitExceeded

    photo = corpus_file("book-beside-flowers.jpg")
    started = time.perf_counter()
    with pytest.raises(LimitExceeded, match=r"longer than the 0\.3 s limit"):
        convert(photo, DEFAULT_PRESET, ImageLimits(max_seconds=0.3))
    # the decode is killed at the deadline; an AVIF encode already running cannot be
    assert time.perf_counter() - started < 15


def _peak_rss_mb(script: str, *args: str) -> tuple[float, str]:
    """Run `script` in a fresh interpreter with MALLOC_ARENA_MAX=2; its peak RSS in MB."""
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "PYTHONPATH": f"{REPO / 'src'}:{REPO}"}
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return float(report["peak_mb"]), done.stdout


# VmHWM, not ru_maxrss: on Linux ru_maxrss survives fork+exec, so a child started from a big
# pytest process would report the parent's high-water mark.
PEAK = """
def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""

BOMBS_SCRIPT = (
    PEAK
    + """
import json, sys, tempfile
from pathlib import Path
from tests.hostile_corpus import CASES
from uplodr.errors import UplodrError
from uplodr.imaging import ImageLimits, convert
from uplodr.preset import DEFAULT_PRESET
folder = Path(tempfile.mkdtemp())
for case in CASES:
    if case.bomb:
        path = folder / case.filename
        path.write_bytes(case.data)
        del path
        try:
            convert(folder / case.filename, DEFAULT_PRESET, ImageLimits())
        except UplodrError:
            pass
print(json.dumps({"peak_mb": peak_mb()}))
"""
)


def test_bombs_keep_peak_memory_small() -> None:
    peak, _ = _peak_rss_mb(BOMBS_SCRIPT)
    # the zTXt/iTXt generators themselves hold ~1 MB; libvips must not inflate 300 MB of text
    assert peak < 200, f"peak RSS {peak:.0f} MB"


PHOTO_SCRIPT = (
    PEAK
    + """
import json, sys, time
from pathlib import Path
from uplodr.imaging import ImageLimits, configure_vips, convert
from uplodr.preset import DEFAULT_PRESET
configure_vips()
started = time.perf_counter()
variants = convert(Path(sys.argv[1]), DEFAULT_PRESET, ImageLimits()).variants
wall = time.perf_counter() - started
print(json.dumps({"peak_mb": peak_mb(), "wall_s": round(wall, 2),
                  "encode_s": {v.name: round(v.encode_seconds, 2) for v in variants},
                  "bytes": {v.name: len(v.data) for v in variants}}))
"""
)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["craft-beer.jpg", "book-beside-flowers.jpg"])
def test_large_photo_fits_in_512_mb(name: str) -> None:
    peak, report = _peak_rss_mb(PHOTO_SCRIPT, str(corpus_file(name)))
    print(name, report)
    assert peak < 512, f"{name}: peak RSS {peak:.0f} MB"
