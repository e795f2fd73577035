"""`uplodr serve --presets FILE`: named presets for `?preset=NAME`, which preset is the default
(the file's `default`, unless `--preset` is given: it wins), and a bad file said in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cli.test_errors import one_line_error, uplodr
from tests.support.gateway import running_gateway


def listed(url: str) -> dict[str, dict[str, Any]]:
    response = httpx.get(f"{url}/v1/presets", timeout=10)
    assert response.status_code == 200
    return {p["name"]: p for p in response.json()["presets"]}


def test_the_files_default_is_the_default_unless_preset_is_given(tmp_path: Path) -> None:
    presets = tmp_path / "presets.toml"
    presets.write_text(
        '[default]\nthumbnail_width = 64\n\n[wide]\nwidths = [480, 960]\nformats = ["avif"]\n'
    )
    own = tmp_path / "own.json"
    own.write_text('{"thumbnail_width": 32}')

    env = {"UPLODR_PRESETS_FILE": str(presets)}  # the variable works as the option does
    with running_gateway(tmp_path / "file-default", env=env) as gateway:
        found = listed(gateway.url)
    assert list(found) == ["default", "wide"]
    assert found["default"]["thumbnail_width"] == 64
    assert found["wide"]["formats"] == ["avif"] and found["wide"]["widths"] == [480, 960]
    assert "is not used" not in gateway.log_text()

    with running_gateway(
        tmp_path / "both", "--presets", str(presets), "--preset", str(own)
    ) as gateway:
        found = listed(gateway.url)
    assert found["default"]["thumbnail_width"] == 32  # --preset wins
    assert list(found) == ["default", "wide"]
    assert f"--preset {own} is the default preset; the presets file's `default` is not used" in (
        gateway.log_text()
    )


@pytest.mark.parametrize(
    ("document", "says"),
    [
        ('{"thumbs": {"widths": [0]}}', "thumbs: widths: expected a list of at most 8 widths"),
        ('{"thumbs": {"avif_qualty": 50}}', "thumbs: avif_qualty: unknown setting (did you mean"),
        ('{"Thumbs!": {}}', "a preset name is 1-32 characters of a-z, 0-9, _ and -"),
        ("[1, 2]", "expected an object of named presets, got [1, 2]"),
        ("{}", "names no preset"),
        ('{"avif_quality": 50}', "holds one preset's settings, not named presets"),
        ('{"a": {}', "not valid JSON (line 1, column 9"),
    ],
)
def test_a_bad_presets_file_stops_serve_with_one_line(
    tmp_path: Path, document: str, says: str
) -> None:
    presets = tmp_path / "presets.json"
    presets.write_text(document)
    args = ["--state-dir", str(tmp_path / "state"), "--store", str(tmp_path / "store")]
    line = one_line_error(uplodr("serve", "--presets", str(presets), *args, cwd=tmp_path))
    assert line.startswith(f"uplodr serve: preset file {presets}: "), line
    assert says in line, line
    assert "--help" not in line


def test_a_missing_presets_file_is_a_usage_error(tmp_path: Path) -> None:
    line = one_line_error(uplodr("serve", "--presets", "missing.json", cwd=tmp_path))
    assert "'missing.json' does not exist" in line, line
