"""What variants to make and how: plain configuration shared by the gateway, worker and imaging.

The defaults follow the settings of the best image servers (the README's preset table says
which) and keep a 24 MP photo within a 512 MB worker: the long side is capped at 4096 px,
because the AVIF encoder needs ~18-27 MB per output megapixel and a full-resolution 24 MP AVIF
peaks near 600-670 MB.

A preset file (JSON, or TOML for a `.toml` file) holds only the settings it changes; they are
merged over the defaults. A `Preset` checks every setting when it is built, so a bad one is
refused at start-up with one line that names the setting, what it expects and what it got:
`preset avif_quality: expected a whole number 1..100, got "high"`.

A presets file names several presets (`{"default": {...}, "thumbs": {...}}`, each merged over the
defaults); `load_presets_file` reads it. A request picks one by name, and may ask to keep the
original beside the variants, or only the original (`Preset.for_original`): the preset a file is
converted with, and so its fingerprint and its keys, always include that choice.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Final, Literal

from uplodr import formats

# Full-size formats in the order they are answered: what every browser can show, best first.
DEFAULT_FORMATS: Final[tuple[str, ...]] = ("webp", "avif", "jpeg")

# What a request asks for the uploaded bytes themselves: what its preset says (`keep_original`),
# no original, the original beside the variants, or only the original (nothing encoded).
OriginalMode = Literal["preset", "drop", "keep", "only"]
ORIGINAL_MODES: Final[tuple[OriginalMode, ...]] = ("preset", "drop", "keep", "only")

# Responsive widths per preset: each costs one encode of every full-size format.
MAX_WIDTHS: Final = 8

# A preset's name in a presets file, and in `?preset=NAME`.
PRESET_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


class PresetError(ValueError):
    """A preset setting, or a preset file, that cannot be used. `str()` is one line."""

    def __init__(self, problem: str, key: str | None = None, source: str = "preset") -> None:
        self.problem = problem
        self.key = key
        self.source = source
        if source == "preset":
            where = f"preset {key}" if key else "preset"
        else:
            where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}")

    def in_file(self, path: Path) -> PresetError:
        """The same error, said of the preset file at `path`."""
        return PresetError(self.problem, self.key, f"preset file {path}")


# Quality metrics a preset's target can name (scored by the worker's `imaging.quality`).
QUALITY_METRICS: Final[tuple[str, ...]] = ("ssimulacra2",)


@dataclass(frozen=True)
class QualityTarget:
    """Encode each variant at the fewest bytes whose `metric` score is at least `target`.

    SSIMULACRA2 75 by default: today's fixed settings scored 73-87 on the corpus (WebP q80 the
    lowest, JPEG q82 the highest; bench/quality_study.py, docs/benchmarks.md), so 75 is a little
    above the lowest look anything was served at, for fewer bytes in every format."""

    metric: str = "ssimulacra2"
    target: float = 75.0


@dataclass(frozen=True)
class Preset:
    # Full-size formats, in the order they are answered (any format with the `full` role in
    # uplodr.formats). The PNG thumbnail comes last.
    formats: tuple[str, ...] = DEFAULT_FORMATS
    # Longest side of the full-size variants; larger images are shrunk, smaller ones never enlarged.
    max_long_side: int = 4096
    # Responsive widths in px: every full-size format is also made at each width smaller than
    # the full-size variant (never enlarged), e.g. [480, 960, 1600]. Kept sorted.
    widths: tuple[int, ...] = ()
    # Width of the PNG thumbnail (0 = no thumbnail); never enlarged.
    thumbnail_width: int = 800
    # The thumbnail's format: "png" (lossless palette or quantised), or "webp" (lossy at
    # `webp_quality`: ~1/10 of the PNG's bytes for a photo, for clients that take any key).
    thumbnail_format: str = "png"
    # A perceptual quality target (`{"metric": "ssimulacra2", "target": 75}`): WebP, AVIF and
    # JPEG are each encoded at the fewest bytes that meet it, their `*_quality` below being only
    # the baseline that the bytes saved are counted against. "fixed" (or null) encodes at the
    # `*_quality` settings as they are.
    quality: QualityTarget | None = QualityTarget()
    # With a quality target, a format is only stored when its full-size variant is at least
    # this many percent smaller than the next more widely decoded format kept (AVIF against
    # WebP, WebP against JPEG); JPEG, the last fallback, is always stored. 10, as issue 17
    # proposes: at SSIMULACRA2 75 WebP is about JPEG's size or larger (docs/benchmarks.md), so on
    # most photos the answer is AVIF then JPEG (JPEG XL first where asked for and winning); a
    # browser without AVIF gets the JPEG at the same look for a few % more bytes than a WebP.
    # 0 stores every format asked for.
    format_margin: int = 10
    jpeg_quality: int = 82  # progressive + optimize_coding
    webp_quality: int = 80
    webp_effort: int = 4
    # AVIF: libvips effort 0-9 (aom speed = 9 - effort). Chosen by measurement
    # (bench/avif_effort.py, docs/benchmarks.md): at the SSIM of the old default (effort 3,
    # q60) effort 0 needs q62-65 and writes +12 % bytes for 0.20x the CPU-seconds; effort 1
    # writes the same bytes for twice effort 0's CPU, effort 4 saves 9 % bytes for 4.9x. For a
    # service that bills its compute, the AVIF encode being most of a job's CPU: effort 0, q63.
    avif_quality: int = 63
    avif_effort: int = 0
    # The same scale for animated AVIF (written by Pillow's libavif, speed = 9 - effort).
    # Measured on iss634.gif (42 frames of 245x245) at q63: effort 1 (speed 8) writes the
    # smallest file, 36 KB in 0.24 CPU-s; effort 3 (speed 6) 39 KB in 1.9 CPU-s.
    avif_animation_effort: int = 1
    # JPEG XL (libjxl through imagecodecs): quality 1-100 (libjxl's JPEG-like scale, mapped to
    # a butteraugli distance) and effort 1-7. Effort 4, measured (docs/formats.md "JPEG XL"):
    # the bytes of effort 7 at the same SSIMULACRA2 score for ~1/9 of its CPU and ~1/3 of its
    # memory (24 MP: +230 MB instead of +340 MB).
    jxl_quality: int = 75
    jxl_effort: int = 4
    # zlib level of the PNG thumbnail: 9 writes a photo's palette thumbnail ~4 % smaller than 6
    # for no measurable CPU (bench/thumbnail.py).
    png_compression: int = 9
    # libimagequant's effort (1-10) when a thumbnail is quantised: 1 is 4-8x cheaper than
    # libvips' default 7 at the same SSIMULACRA2 score (with the encoder's dither 0.5), for
    # ~1 % more bytes (bench/thumbnail.py, docs/benchmarks.md "Thumbnail").
    png_palette_effort: int = 1
    # PNG thumbnails of photos are quantised to a 256-colour palette at this quality (1-100),
    # ~3.5x smaller than full colour; 0 keeps full colour. Images with <= 256 colours always
    # get a lossless palette.
    png_palette_quality: int = 90
    # Background used to flatten transparency for formats without alpha (JPEG): white, what a
    # page usually shows. In a file: [r, g, b] or "#rrggbb".
    jpeg_background: tuple[int, int, int] = (255, 255, 255)
    # Store the upload as it came (after sniffing and the limits) beside the variants, under
    # `{stem}-{digest}-original.{ext}`. It keeps the original's metadata: EXIF location too.
    keep_original: bool = False
    # A kept JPEG original is stored as JPEG XL, recompressed losslessly (~20 % smaller; the
    # JPEG's bytes are restorable exactly, `djxl photo.jxl photo.jpg`). Other originals, and a
    # JPEG libjxl cannot repack (CMYK), stay as they came.
    original_jxl: bool = False

    def __post_init__(self) -> None:
        for setting in fields(self):
            value = getattr(self, setting.name)
            checked = _RULES[setting.name].check(setting.name, value)
            if checked is not value:
                object.__setattr__(self, setting.name, checked)
        if not self.formats and not self.thumbnail_width and not self.keep_original:
            raise PresetError(
                "expected at least one format when thumbnail_width is 0 and keep_original is "
                "false, got []",
                "formats",
            )

    @property
    def encodes(self) -> bool:
        """True when the image is decoded and variants are made (not only the original kept)."""
        return bool(self.formats or self.thumbnail_width)

    def for_original(self, mode: OriginalMode) -> Preset:
        """This preset as one request asks for it: its own `keep_original` ("preset"), without
        the original ("drop"), with it ("keep"), or the original alone ("only": no variant)."""
        if mode == "preset":
            return self
        if mode == "drop":
            return replace(self, keep_original=False) if self.encodes else self
        if mode == "keep":
            return replace(self, keep_original=True)
        if mode == "only":
            return replace(self, formats=(), widths=(), thumbnail_width=0, keep_original=True)
        raise ValueError(f"unknown original mode {mode!r}; known: {', '.join(ORIGINAL_MODES)}")

    @classmethod
    def from_mapping(cls, settings: object, base: Preset | None = None) -> Preset:
        """`settings` (as read from JSON or TOML) merged over `base` (the defaults)."""
        if not isinstance(settings, Mapping):
            raise PresetError(f"expected an object of settings, got {_show(settings)}")
        known = [setting.name for setting in fields(cls)]
        for key in settings:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise PresetError(
                    f"unknown setting{hint}; known settings: {', '.join(known)}", str(key)
                )
        return replace(base or cls(), **dict(settings))

    @classmethod
    def from_json(cls, text: str) -> Preset:
        """A preset from JSON text (settings merged over the defaults)."""
        return cls.from_mapping(_parse_json(text))

    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    def fingerprint(self) -> str:
        """A short, stable hash of every setting that changes the output bytes."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def with_changes(self, **changes: Any) -> Preset:
        return Preset.from_mapping(changes, base=self)


def load_preset_file(path: Path) -> Preset:
    """The preset in the JSON (or, for `.toml`, TOML) file at `path`, merged over the defaults.

    Raises PresetError, one line naming the file, when it cannot be read or parsed or when a
    setting is bad."""
    try:
        return Preset.from_mapping(_read_document(path))
    except PresetError as error:
        raise error.in_file(path) from None


def load_presets_file(path: Path) -> dict[str, Preset]:
    """The named presets in the JSON (or, for `.toml`, TOML) file at `path`: an object of
    `{name: {settings}}`, each merged over the defaults, in the file's order.

    Raises PresetError, one line naming the file, the preset and the setting, e.g.
    `preset file presets.json: thumbs: widths: expected ..., got [0]`."""
    source = f"preset file {path}"
    try:
        document = _read_document(path)
    except PresetError as error:
        raise error.in_file(path) from None
    if not isinstance(document, Mapping):
        raise PresetError(
            f"expected an object of named presets, got {_show(document)}", None, source
        )
    if not document:
        raise PresetError("names no preset; expected {name: {settings}, ...}", None, source)
    known = {setting.name for setting in fields(Preset)}
    if all(not isinstance(v, Mapping) for v in document.values()) and set(document) <= known:
        raise PresetError(
            "holds one preset's settings, not named presets {name: {settings}, ...}; give it "
            "with --preset instead",
            None,
            source,
        )
    presets: dict[str, Preset] = {}
    for name, settings in document.items():
        if not PRESET_NAME.fullmatch(str(name)):
            raise PresetError(
                "a preset name is 1-32 characters of a-z, 0-9, _ and - (starting with a letter "
                f"or digit), got {_show(name)}",
                None,
                source,
            )
        try:
            presets[str(name)] = Preset.from_mapping(settings)
        except PresetError as error:
            key = f"{name}: {error.key}" if error.key else str(name)
            raise PresetError(error.problem, key, source) from None
    return presets


def _read_document(path: Path) -> object:
    """The JSON (or, for `.toml`, TOML) document in the file at `path` (PresetError if not)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise PresetError(f"cannot be read ({error.strerror or error})") from None
    except UnicodeDecodeError:
        raise PresetError("is not UTF-8 text") from None
    if path.suffix.lower() == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise PresetError(f"not valid TOML ({error})") from None
    return _parse_json(text)


def _parse_json(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise PresetError(
            f"not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})"
        ) from None
    except RecursionError:
        raise PresetError("not valid JSON (nested too deeply)") from None


# -- what each setting accepts ------------------------------------------------------------------


class _Invalid(Exception):
    """A value a rule refuses; the argument, if any, says which part of it is wrong."""


@dataclass(frozen=True)
class _Rule:
    expected: str
    convert: Callable[[object], object]  # the value as the Preset keeps it, or _Invalid

    def check(self, key: str, value: object) -> object:
        try:
            return self.convert(value)
        except _Invalid as invalid:
            detail = f" ({invalid.args[0]})" if invalid.args else ""
            got = f"{_show(value)}{detail}"
            raise PresetError(f"expected {self.expected}, got {got}", key) from None


def _whole(low: int, high: int, note: str = "") -> _Rule:
    def convert(value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _Invalid
        return value

    return _Rule(f"a whole number {low}..{high}{note}", convert)


def _one_of(allowed: list[str]) -> _Rule:
    def convert(value: object) -> object:
        if value not in allowed:
            raise _Invalid
        return value

    return _Rule(f"one of {', '.join(allowed)}", convert)


def _flag() -> _Rule:
    def convert(value: object) -> object:
        if not isinstance(value, bool):
            raise _Invalid
        return value

    return _Rule("true or false", convert)


def _widths() -> _Rule:
    def convert(value: object) -> object:
        if not isinstance(value, list | tuple) or len(value) > MAX_WIDTHS:
            raise _Invalid
        for width in value:
            if isinstance(width, bool) or not isinstance(width, int) or not 16 <= width <= 65535:
                raise _Invalid(f"{_show(width)} is not one")
        if len(set(value)) != len(value):
            raise _Invalid("a width is named twice")
        ordered = tuple(sorted(value))
        return value if ordered == value else ordered

    return _Rule(f"a list of at most {MAX_WIDTHS} widths, whole numbers 16..65535", convert)


def _formats() -> _Rule:
    allowed = [fmt.name for fmt in formats.formats_for("full")]

    def convert(value: object) -> object:
        if not isinstance(value, list | tuple):
            raise _Invalid
        for name in value:
            if name not in allowed:
                raise _Invalid(f"{_show(name)} is not one")
        if len(set(value)) != len(value):
            raise _Invalid("a format is named twice")
        return value if isinstance(value, tuple) else tuple(value)

    return _Rule(f"a list of formats from {', '.join(allowed)}", convert)


_HEX_COLOUR = re.compile(r"#([0-9a-fA-F]{2})([0-9a-fA-F]{2})([0-9a-fA-F]{2})")


def _colour() -> _Rule:
    def convert(value: object) -> object:
        if isinstance(value, str) and (match := _HEX_COLOUR.fullmatch(value)):
            return tuple(int(part, 16) for part in match.groups())
        if not isinstance(value, list | tuple) or len(value) != 3:
            raise _Invalid
        for part in value:
            if isinstance(part, bool) or not isinstance(part, int) or not 0 <= part <= 255:
                raise _Invalid
        return value if isinstance(value, tuple) else tuple(value)

    return _Rule('a colour: [r, g, b] of whole numbers 0..255, or "#rrggbb"', convert)


def _quality() -> _Rule:
    def convert(value: object) -> object:
        if value is None or value == "fixed":
            return None
        if isinstance(value, QualityTarget):
            return value
        if not isinstance(value, Mapping) or set(value) - {"metric", "target"}:
            raise _Invalid
        metric = value.get("metric", QualityTarget.metric)
        target = value.get("target", QualityTarget.target)
        if metric not in QUALITY_METRICS:
            raise _Invalid(f"{_show(metric)} is not a metric")
        if isinstance(target, bool) or not isinstance(target, int | float):
            raise _Invalid(f"{_show(target)} is not a target")
        if not 30 <= target <= 100:
            raise _Invalid(f"target {_show(target)} is not 30..100")
        return QualityTarget(str(metric), float(target))

    metrics = "|".join(QUALITY_METRICS)
    return _Rule(f'{{"metric": "{metrics}", "target": 30..100}} or "fixed"', convert)


_RULES: Final[dict[str, _Rule]] = {
    "formats": _formats(),
    "quality": _quality(),
    "format_margin": _whole(0, 90, " (percent; 0 = keep every format)"),
    "max_long_side": _whole(16, 65535),
    "widths": _widths(),
    "thumbnail_width": _whole(0, 65535, " (0 = no thumbnail)"),
    "thumbnail_format": _one_of([fmt.name for fmt in formats.thumbnail_formats()]),
    "jpeg_quality": _whole(1, 100),
    "webp_quality": _whole(1, 100),
    "webp_effort": _whole(0, 6),
    "avif_quality": _whole(1, 100),
    "avif_effort": _whole(0, 9),
    "avif_animation_effort": _whole(0, 9),
    "jxl_quality": _whole(1, 100),
    # 8-9: minutes for a large photo and more memory than a 512 MB machine has (libjxl cannot be
    # interrupted by the time limit).
    "jxl_effort": _whole(1, 7),
    "png_compression": _whole(0, 9),
    "png_palette_effort": _whole(1, 10),
    "png_palette_quality": _whole(0, 100, " (0 = full colour)"),
    "jpeg_background": _colour(),
    "keep_original": _flag(),
    "original_jxl": _flag(),
}

SHOWN_CHARS: Final = 60


def _show(value: object) -> str:
    """A value as the user wrote it (JSON), cut short so the message stays one short line."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


DEFAULT_PRESET = Preset()
