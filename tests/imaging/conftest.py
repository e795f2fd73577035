from __future__ import annotations

import functools
import io
from pathlib import Path

import pytest
import pyvips
from PIL import Image

from tests.support.paths import CORPUS, corpus_file
from uplodr.imaging import EncodedVariant, ImageLimits, convert
from uplodr.preset import DEFAULT_PRESET


@functools.cache
def converted(name: str) -> tuple[EncodedVariant, ...]:
    """Each corpus file is converted once per test session with the default preset."""
    return tuple(convert(corpus_file(name), DEFAULT_PRESET, ImageLimits()).variants)


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
