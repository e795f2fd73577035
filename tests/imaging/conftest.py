from __future__ import annotations

import functools
from pathlib import Path

import pytest

from uplodr.imaging import EncodedVariant, ImageLimits, convert
from uplodr.preset import DEFAULT_PRESET

# The shared corpus lives next to the repository: <repo>/../shared/corpus
CORPUS = (Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus").resolve()


def corpus_file(name: str) -> Path:
    path = CORPUS / name
    if not path.is_file():
        pytest.skip(f"test corpus not found: {path} (see ../shared/corpus/SOURCES.md)")
    return path


@functools.cache
def converted(name: str) -> tuple[EncodedVariant, ...]:
    """Each corpus file is converted once per test session with the default preset."""
    return tuple(convert(corpus_file(name), DEFAULT_PRESET, ImageLimits()))


@pytest.fixture
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"test corpus not found: {CORPUS} (see ../shared/corpus/SOURCES.md)")
    return CORPUS
