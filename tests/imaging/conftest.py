from __future__ import annotations

import functools
import io
from pathlib import Path

import pytest
import pyvips
from PIL import Image

from tests.support.made import full_formats
from tests.support.paths import CORPUS, corpus_file
from uplodr.imaging import Conversion, EncodedVariant, ImageLimits, convert
from uplodr.preset import DEFAULT_PRESET


@functools.cache
def conversion(name: str) -> Conversion:
    """Each corpus file is converted once per test session with the default preset."""
    return convert(corpus_file(name), DEFAULT_PRESET, ImageLimits())


def converted(name: str) -> tuple[EncodedVariant, ...]:
    return tuple(conversion(name).variants)


def made(name: str) -> list[str]:
    """The full-size formats the default preset stored for corpus file `name`, checked against
    what it asked for (a format is stored only where it wins by `format_margin`)."""
    done = conversion(name)
    return full_formats(
        [(v.format, v.role) for v in done.variants],
        [(s.format, s.reason) for s in done.skipped],
    )


@pytest.fixture
def corpus() -> Path:
    return CORPUS


def avif_frames(data: bytes) -> list[Image.Image]:
    """Every frame of an AVIF sequence, decoded by Pillow's libavif (libvips reads no AVIF
    sequences)."""
    image = Image.open(io.BytesIO(data))
    assert image.format == "AVIF"
    frames = []
    for index in range(getattr(image, "n_frames", 1)):
        image.seek(index)
        frames.append(image.convert("RGBA" if image.mode == "RGBA" else "RGB"))
    return frames


def load_variant(variant: EncodedVariant) -> pyvips.Image:
    """A variant decoded as a client would: every frame of an animation, stacked with
    `page-height` like libvips does (AVIF sequences through Pillow)."""
    if variant.format == "avif" and variant.animated:
        frames = avif_frames(variant.data)
        bands = len(frames[0].mode)
        width, height = frames[0].size
        data = b"".join(frame.tobytes() for frame in frames)
        image = pyvips.Image.new_from_memory(data, width, height * len(frames), bands, "uchar")
        image = image.copy(interpretation="srgb")
        image.set_type(pyvips.GValue.gint_type, "page-height", height)
        image.set_type(pyvips.GValue.gint_type, "n-pages", len(frames))
        return image
    options = {"n": -1} if variant.animated else {}
    return pyvips.Image.new_from_buffer(variant.data, "", **options)
