"""What variants to make and how: plain configuration shared by the gateway, worker and imaging.

The defaults follow the settings of the best image servers (see DESIGN.md) and keep a 24 MP photo
within a 512 MB worker: the long side is capped at 4096 px, because the AVIF encoder needs
~18-27 MB per output megapixel and a full-resolution 24 MP AVIF peaks near 600-670 MB.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

Format = Literal["webp", "avif", "jpeg"]
FORMATS: tuple[Format, ...] = ("webp", "avif", "jpeg")


@dataclass(frozen=True)
class Preset:
    # Full-size formats, in the order they are answered. The PNG thumbnail comes last.
    formats: tuple[Format, ...] = FORMATS
    # Longest side of the full-size variants; larger images are shrunk, smaller ones never enlarged.
    max_long_side: int = 4096
    # Width of the PNG thumbnail (0 = no thumbnail); never enlarged.
    thumbnail_width: int = 800
    jpeg_quality: int = 82  # progressive + optimize_coding
    webp_quality: int = 80
    webp_effort: int = 4
    avif_quality: int = 60
    # libvips effort 0-9 (aom speed = 9 - effort). 3 ~ aom speed 6: 2.4 s for a 12 MP photo.
    avif_effort: int = 3
    png_compression: int = 6
    # PNG thumbnails of photos are quantised to a 256-colour palette at this quality (1-100),
    # ~3.5x smaller than full colour; 0 keeps full colour. Images with <= 256 colours always
    # get a lossless palette.
    png_palette_quality: int = 90
    # Background used to flatten transparency for JPEG (white: what a page usually shows).
    jpeg_background: tuple[int, int, int] = (255, 255, 255)

    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Preset:
        data = json.loads(text)
        data["formats"] = tuple(data["formats"])
        data["jpeg_background"] = tuple(data["jpeg_background"])
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown preset settings: {', '.join(sorted(unknown))}")
        preset = cls(**data)
        preset.validate()
        return preset

    def fingerprint(self) -> str:
        """A short, stable hash of every setting that changes the output bytes."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def validate(self) -> None:
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or (not self.formats and not self.thumbnail_width):
            raise ValueError(f"preset formats must be among {', '.join(FORMATS)}")
        for name, low, high in (
            ("jpeg_quality", 1, 100),
            ("webp_quality", 1, 100),
            ("avif_quality", 1, 100),
            ("webp_effort", 0, 6),
            ("avif_effort", 0, 9),
            ("png_compression", 0, 9),
            ("png_palette_quality", 0, 100),
            ("max_long_side", 16, 65535),
            ("thumbnail_width", 0, 65535),
        ):
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"preset {name} must be within {low}..{high}, not {value}")

    def with_changes(self, **changes: Any) -> Preset:
        preset = replace(self, **changes)
        preset.validate()
        return preset


DEFAULT_PRESET = Preset()


def load_preset_file(path: str | os.PathLike[str]) -> Preset:
    """The preset in a JSON file (minimal version; i8-formats' validating one replaces it)."""
    try:
        with open(path) as file:
            return Preset.from_json(file.read())
    except (OSError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"preset file {os.fspath(path)}: {error}") from None
