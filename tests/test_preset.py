"""Presets users write: partial files merged over the defaults, every bad value refused when the
Preset is built with one line naming the setting, what it expects and what it got."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from uplodr import formats
from uplodr.preset import (
    DEFAULT_PRESET,
    ORIGINAL_MODES,
    Preset,
    PresetError,
    QualityTarget,
    load_preset_file,
    load_presets_file,
)

SETTINGS = [setting.name for setting in fields(Preset)]


def test_default_fingerprint_is_unchanged() -> None:
    # Every stored key embeds it: a new setting or a changed default moves every URL. Issue 11
    # moved it on purpose (widths, keep_original, avif_animation_effort; the set now carries a
    # placeholder, so sets made before must not answer a repeated upload). Issue 17 moved it on
    # purpose: the default became a quality target (and a format only where it wins); JPEG XL
    # settings, original_jxl, thumbnail_format, and the thumbnail's png_palette_effort and zlib 9
    # write other bytes; format_margin 10 became the default (WebP is stored only where it wins).
    assert DEFAULT_PRESET.fingerprint() == "1c06ced2719760f2"


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_a_partial_file_is_merged_over_the_defaults(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"fast{suffix}"
    path.write_text('{"avif_effort": 1}' if suffix == ".json" else "avif_effort = 1\n")
    preset = load_preset_file(path)
    assert preset.avif_effort == 1
    assert preset == Preset(avif_effort=1)
    assert preset.fingerprint() == DEFAULT_PRESET.with_changes(avif_effort=1).fingerprint()
    assert load_preset_file(write(tmp_path, "{}")) == DEFAULT_PRESET


def test_a_whole_toml_preset(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(
        'formats = ["avif", "jpeg"]\nthumbnail_width = 320\njpeg_background = "#102030"\n'
    )
    preset = load_preset_file(path)
    assert preset.formats == ("avif", "jpeg")
    assert preset.thumbnail_width == 320
    assert preset.jpeg_background == (16, 32, 48)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"avif_quality": "high"},
            'preset avif_quality: expected a whole number 1..100, got "high"',
        ),
        ({"jpeg_quality": "80"}, 'preset jpeg_quality: expected a whole number 1..100, got "80"'),
        ({"webp_effort": True}, "preset webp_effort: expected a whole number 0..6, got true"),
        ({"avif_effort": 2.5}, "preset avif_effort: expected a whole number 0..9, got 2.5"),
        ({"avif_effort": 10}, "preset avif_effort: expected a whole number 0..9, got 10"),
        ({"jxl_effort": 8}, "preset jxl_effort: expected a whole number 1..7, got 8"),
        (
            {"thumbnail_format": "avif"},
            'preset thumbnail_format: expected one of png, webp, got "avif"',
        ),
        ({"original_jxl": "yes"}, 'preset original_jxl: expected true or false, got "yes"'),
        ({"max_long_side": 0}, "preset max_long_side: expected a whole number 16..65535, got 0"),
        (
            {"thumbnail_width": -1},
            "preset thumbnail_width: expected a whole number 0..65535 (0 = no thumbnail), got -1",
        ),
        (
            {"formats": "webp"},
            'preset formats: expected a list of formats from jpeg, webp, avif, jxl, got "webp"',
        ),
        (
            {"formats": ["webp", "png"]},
            "preset formats: expected a list of formats from jpeg, webp, avif, jxl, "
            'got ["webp", "png"] ("png" is not one)',
        ),
        (
            {"formats": ["avif", "avif"]},
            "preset formats: expected a list of formats from jpeg, webp, avif, jxl, "
            'got ["avif", "avif"] (a format is named twice)',
        ),
        (
            {"formats": [], "thumbnail_width": 0},
            "preset formats: expected at least one format when thumbnail_width is 0 and "
            "keep_original is false, got []",
        ),
        (
            {"widths": 480},
            "preset widths: expected a list of at most 8 widths, whole numbers 16..65535, got 480",
        ),
        (
            {"widths": [480, 8]},
            "preset widths: expected a list of at most 8 widths, whole numbers 16..65535, "
            "got [480, 8] (8 is not one)",
        ),
        (
            {"widths": [480, 480]},
            "preset widths: expected a list of at most 8 widths, whole numbers 16..65535, "
            "got [480, 480] (a width is named twice)",
        ),
        ({"keep_original": 1}, "preset keep_original: expected true or false, got 1"),
        (
            {"avif_animation_effort": 10},
            "preset avif_animation_effort: expected a whole number 0..9, got 10",
        ),
        (
            {"jpeg_background": "white"},
            "preset jpeg_background: expected a colour: [r, g, b] of whole numbers 0..255, or "
            '"#rrggbb", got "white"',
        ),
        (
            {"jpeg_background": [255, 255, 256]},
            "preset jpeg_background: expected a colour: [r, g, b] of whole numbers 0..255, or "
            '"#rrggbb", got [255, 255, 256]',
        ),
        (
            {"avif_qualty": 50},
            "preset avif_qualty: unknown setting (did you mean avif_quality?); known settings: "
            + ", ".join(SETTINGS),
        ),
        ([1, 2], "preset: expected an object of settings, got [1, 2]"),
        (
            {"quality": {"metric": "psnr", "target": 40}},
            'preset quality: expected {"metric": "ssimulacra2", "target": 30..100} or "fixed", '
            'got {"metric": "psnr", "target": 40} ("psnr" is not a metric)',
        ),
        (
            {"quality": {"target": 101}},
            'preset quality: expected {"metric": "ssimulacra2", "target": 30..100} or "fixed", '
            'got {"target": 101} (target 101 is not 30..100)',
        ),
        (
            {"quality": 75},
            'preset quality: expected {"metric": "ssimulacra2", "target": 30..100} or "fixed", '
            "got 75",
        ),
        (
            {"format_margin": 95},
            "preset format_margin: expected a whole number 0..90 (percent; 0 = keep every "
            "format), got 95",
        ),
    ],
)
def test_each_bad_value_is_one_clear_line(settings: Any, message: str) -> None:
    with pytest.raises(PresetError) as caught:
        Preset.from_mapping(settings)
    assert str(caught.value) == message


def test_the_preset_is_checked_when_it_is_built() -> None:
    with pytest.raises(PresetError, match=r"^preset avif_quality: expected"):
        Preset(avif_quality=0)
    with pytest.raises(ValueError, match=r"^preset png_compression: expected"):
        DEFAULT_PRESET.with_changes(png_compression=12)
    with pytest.raises(PresetError, match=r"^preset bogus: unknown setting"):
        DEFAULT_PRESET.with_changes(bogus=1)


def test_lists_become_tuples_and_colours_one_form() -> None:
    preset = Preset.from_json('{"formats": ["jpeg"], "jpeg_background": "#FFFFFF"}')
    assert preset.formats == ("jpeg",)
    assert preset.jpeg_background == (255, 255, 255)
    assert Preset.from_json(preset.to_json()) == preset
    assert preset.fingerprint() == Preset(formats=("jpeg",)).fingerprint()


def test_every_full_size_format_of_the_registry_is_accepted() -> None:
    names = tuple(fmt.name for fmt in formats.formats_for("full"))
    assert Preset(formats=names).formats == names
    assert set(DEFAULT_PRESET.formats) <= set(names)


def write(folder: Path, text: str | bytes, name: str = "preset.json") -> Path:
    path = folder / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    cases = {
        write(tmp_path, '{"avif_quality": "high"}'): (
            'avif_quality: expected a whole number 1..100, got "high"'
        ),
        write(tmp_path, '{"avif_effort": 1', "cut.json"): (
            "not valid JSON (line 1, column 18: Expecting ',' delimiter)"
        ),
        write(tmp_path, "avif_effort = ", "cut.toml"): "not valid TOML (",
        write(tmp_path, "[1]", "list.json"): "expected an object of settings, got [1]",
        write(tmp_path, b"\xff\xfe{}", "binary.json"): "is not UTF-8 text",
        tmp_path / "missing.json": "cannot be read (No such file or directory)",
        tmp_path: "cannot be read (Is a directory)",
    }
    assert_file_errors(load_preset_file, cases)


def assert_file_errors(load: Callable[[Path], object], cases: dict[Path, str]) -> None:
    """Each file is refused with one line naming it, then the problem."""
    for path, problem in cases.items():
        with pytest.raises(PresetError) as caught:
            load(path)
        message = str(caught.value)
        assert message.startswith(f"preset file {path}: {problem}"), message
        assert "\n" not in message


SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-10, 70_000)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from([fmt.name for fmt in formats.REGISTRY])
)
JSON_VALUES = SCALARS | st.lists(SCALARS, max_size=4)


@given(st.dictionaries(st.sampled_from([*SETTINGS, "x"]), JSON_VALUES, max_size=4))
def test_any_settings_give_a_preset_or_one_line(settings: dict[str, Any]) -> None:
    try:
        preset = Preset.from_mapping(settings)
    except PresetError as error:
        message = str(error)
        assert "\n" not in message and len(message) < 400
        assert message.startswith(f"preset {error.key}: ")
        assert error.key in settings or error.key == "formats"
        return
    assert Preset.from_json(preset.to_json()) == preset
    assert json.loads(preset.to_json()).keys() == set(SETTINGS)


def test_widths_are_kept_sorted_and_only_the_original_is_a_preset() -> None:
    preset = Preset.from_json('{"widths": [1600, 480, 960]}')
    assert preset.widths == (480, 960, 1600)
    assert preset.fingerprint() == Preset(widths=(480, 960, 1600)).fingerprint()
    assert Preset.from_json(preset.to_json()) == preset
    only = Preset(formats=(), thumbnail_width=0, keep_original=True)
    assert not only.encodes and DEFAULT_PRESET.encodes


def test_a_request_folds_its_original_choice_into_the_preset() -> None:
    """The choice changes the output, so it changes the fingerprint (keys and dedupe)."""
    keep = DEFAULT_PRESET.for_original("keep")
    assert keep.keep_original and keep.formats == DEFAULT_PRESET.formats
    only = DEFAULT_PRESET.with_changes(widths=[480]).for_original("only")
    assert (only.formats, only.widths, only.thumbnail_width, only.keep_original) == (
        (),
        (),
        0,
        True,
    )
    assert not only.encodes
    assert DEFAULT_PRESET.for_original("preset") is DEFAULT_PRESET
    assert keep.for_original("drop") == DEFAULT_PRESET
    assert only.for_original("drop") == only  # nothing would be left: the original stays
    prints = {DEFAULT_PRESET.for_original(mode).fingerprint() for mode in ORIGINAL_MODES}
    assert len(prints) == 3  # preset = drop for the default preset; keep and only differ
    with pytest.raises(ValueError, match="unknown original mode 'maybe'"):
        DEFAULT_PRESET.for_original("maybe")  # type: ignore[arg-type]


def test_a_presets_file_names_presets_each_over_the_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        json.dumps(
            {
                "default": {"widths": [480, 960, 1600]},
                "thumbs": {"formats": ["webp"], "widths": [320]},
                "keep": {"keep_original": True},
            }
        ),
        "presets.json",
    )
    presets = load_presets_file(path)
    assert list(presets) == ["default", "thumbs", "keep"]
    assert presets["default"] == Preset(widths=(480, 960, 1600))
    assert presets["thumbs"] == Preset(formats=("webp",), widths=(320,))
    assert presets["keep"].keep_original and presets["keep"].widths == ()
    toml = write(tmp_path, '[thumbs]\nformats = ["webp"]\nwidths = [320]\n', "presets.toml")
    assert load_presets_file(toml) == {"thumbs": presets["thumbs"]}


def test_presets_file_errors_name_the_file_the_preset_and_the_setting(tmp_path: Path) -> None:
    cases = {
        write(tmp_path, '{"thumbs": {"widths": [0]}}', "a.json"): (
            "thumbs: widths: expected a list of at most 8 widths, whole numbers 16..65535, "
            "got [0] (0 is not one)"
        ),
        write(tmp_path, '{"thumbs": {"widht": [320]}}', "b.json"): (
            "thumbs: widht: unknown setting (did you mean widths?)"
        ),
        write(tmp_path, '{"thumbs": [1]}', "c.json"): (
            "thumbs: expected an object of settings, got [1]"
        ),
        write(tmp_path, '{"Thumbs!": {}}', "d.json"): "a preset name is 1-32 characters",
        write(tmp_path, "{}", "e.json"): "names no preset",
        write(tmp_path, "[]", "f.json"): "expected an object of named presets, got []",
        write(tmp_path, '{"a": {', "g.json"): "not valid JSON (",
        tmp_path / "missing.toml": "cannot be read (No such file or directory)",
    }
    assert_file_errors(load_presets_file, cases)


def test_the_default_is_a_quality_target_and_fixed_settings_stay_possible(tmp_path: Path) -> None:
    assert DEFAULT_PRESET.quality == QualityTarget("ssimulacra2", 75.0)
    fixed = load_preset_file(write(tmp_path, '{"quality": "fixed", "jpeg_quality": 70}'))
    assert fixed.quality is None
    assert fixed.jpeg_quality == 70
    toml = tmp_path / "q.toml"
    toml.write_text('quality = { metric = "ssimulacra2", target = 80 }\n')
    assert load_preset_file(toml).quality == QualityTarget("ssimulacra2", 80.0)
    # the target is in the fingerprint: a different look is a different set of keys
    assert fixed.fingerprint() != DEFAULT_PRESET.with_changes(jpeg_quality=70).fingerprint()
    assert (
        DEFAULT_PRESET.with_changes(quality={"target": 80}).fingerprint()
        != DEFAULT_PRESET.fingerprint()
    )
    # the JSON a worker is handed reads back to the same preset
    assert Preset.from_json(DEFAULT_PRESET.to_json()) == DEFAULT_PRESET
