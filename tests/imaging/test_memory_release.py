"""A conversion frees its images by reference counting alone.

A worker that stays up for many jobs (the elastic pool) must not keep a job's decoded images
until Python's cycle collector happens to run: measured, a reference cycle through the time
limit's handlers grew a worker ~100 MB per 24 MP job.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
import pyvips

from tests.support.paths import corpus_file
from uplodr.imaging import ImageLimits, configure_vips, convert
from uplodr.preset import Preset


@pytest.fixture
def cycles_saved() -> Iterator[None]:
    """Automatic collection off; what the next explicit collection finds is kept in gc.garbage."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


@pytest.mark.parametrize("name", ["Landscape_6.jpg", "iss634.gif"])
def test_a_conversion_leaves_no_image_in_a_reference_cycle(name: str, cycles_saved: None) -> None:
    configure_vips()
    variants = convert(corpus_file(name), Preset(thumbnail_width=64), ImageLimits())
    assert variants
    gc.collect()
    # a count, not the objects: an image found in a cycle is half torn down and unsafe to print
    stuck = sum(isinstance(o, pyvips.Image) for o in gc.garbage)
    assert stuck == 0, f"{stuck} images were kept alive by reference cycles"
