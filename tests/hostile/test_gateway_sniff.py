"""The gateway sniffs uploads with the pure `uplodr.sniff` and never loads libvips; the worker's
imaging package re-exports the very same sniffer and gives the very same message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.hostile_corpus import HTML, PDF, SVG, TIFF
from uplodr import imaging, sniff
from uplodr.errors import UnsupportedImage


def test_the_gateway_never_imports_pyvips() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, uplodr.gateway.app, uplodr.gateway.run, uplodr.sniff\n"
            "print(sorted(m for m in sys.modules\n"
            "             if 'vips' in m or m.startswith('uplodr.imaging')))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.strip() == "[]"


def test_imaging_re_exports_the_pure_sniffer() -> None:
    assert imaging.sniff is sniff.sniff
    assert imaging.ALLOWED_FORMATS is sniff.ALLOWED_FORMATS


@pytest.mark.parametrize("data", [SVG, PDF, HTML, TIFF, b"\x00" * 64], ids=str)
def test_gateway_and_worker_refuse_with_the_same_message(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "upload.jpg"
    path.write_bytes(data)
    with pytest.raises(UnsupportedImage) as at_gateway:
        sniff.sniff_file(path)
    with pytest.raises(UnsupportedImage) as at_worker:
        imaging.probe(path, imaging.ImageLimits())
    assert str(at_gateway.value) == str(at_worker.value)


def test_an_allowed_format_passes(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(8))
    assert sniff.sniff_file(path) == "png"
