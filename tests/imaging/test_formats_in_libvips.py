"""The format registry against libvips and the encoders: every entry's loaders exist, every
input format's magic test recognises a real file of it whose header is then read (by libvips, or
by pillow-heif for HEIC), every encoder's output is sniffed and loaded back as its own format,
and a one-at-a-time format really waits for its slot (shared by all of them). An output-only
format (JPEG XL) is recognised by the sniffer only to be refused as an upload."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import imagecodecs
import pytest
import pyvips

from tests.support.paths import corpus_file
from uplodr import formats
from uplodr.errors import LimitExceeded
from uplodr.formats import FULL, VariantSpec
from uplodr.imaging import ImageLimits, configure_vips, probe
from uplodr.imaging import encode as encode_module
from uplodr.preset import DEFAULT_PRESET
from uplodr.sniff import sniff

# A real file of each input format that has no encoder of ours (a new input format adds one).
SAMPLES: dict[str, Callable[[], bytes]] = {
    "gif": lambda: corpus_file("iss634.gif").read_bytes(),
    "heif": lambda: corpus_file("IMG_2682.heic").read_bytes(),
}


def small_image() -> pyvips.Image:
    """A 48x32 RGBA gradient with partial transparency."""
    x = pyvips.Image.xyz(48, 32)
    rgb = (x[0] * 5).bandjoin([x[1] * 7, (x[0] + x[1]) * 3]).cast("uchar")
    return rgb.bandjoin((x[0] * 5).cast("uchar")).copy(interpretation="srgb")


def sample(fmt: formats.Format) -> bytes:
    if fmt.name in encode_module.ENCODERS:
        return encode_module.ENCODERS[fmt.name](small_image(), DEFAULT_PRESET)
    assert fmt.name in SAMPLES, f"add a sample file of {fmt.name} to SAMPLES"
    return SAMPLES[fmt.name]()


@pytest.mark.parametrize("fmt", formats.input_formats(), ids=lambda f: f.name)
def test_every_input_format_is_sniffed_and_its_header_read(
    fmt: formats.Format, tmp_path: Path
) -> None:
    for loader in fmt.loaders:
        for form in ("", "_buffer", "_source"):
            assert pyvips.type_find("VipsOperation", loader + form), loader + form
    data = sample(fmt)
    assert sniff(data) == fmt.name
    path = tmp_path / "upload"
    path.write_bytes(data)
    info = probe(path, ImageLimits())
    assert info.format == fmt.name
    assert (info.heif is not None) == (fmt.decoder == "pillow-heif")
    assert not info.animated or fmt.animated_input  # frames only where the format animates


@pytest.mark.parametrize("fmt", formats.output_formats(), ids=lambda f: f.name)
def test_every_encoder_writes_its_own_format(fmt: formats.Format) -> None:
    configure_vips()
    data = encode_module.ENCODERS[fmt.name](small_image(), DEFAULT_PRESET)
    if not fmt.is_input:  # written, never read (JPEG XL): recognised only to be refused
        assert sniff(data) is None and formats.refused_format(data) == fmt
        pixels = imagecodecs.jpegxl_decode(data)  # independently: tests/imaging/test_jxl.py
        assert pixels.shape == (32, 48, 4 if fmt.alpha else 3)
        return
    assert sniff(data) == fmt.name
    loaded = pyvips.Image.new_from_buffer(data, "")
    assert loaded.get("vips-loader") in {f"{loader}_buffer" for loader in fmt.loaders}
    assert (loaded.width, loaded.height) == (48, 32)
    assert loaded.hasalpha() == fmt.alpha


def test_an_output_format_without_an_encoder_stops_the_import(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(encode_module.ENCODERS, "png")
    monkeypatch.setitem(encode_module.ENCODERS, "gif", encode_module.ENCODERS["jpeg"])
    with pytest.raises(RuntimeError, match="missing png; not an output format: gif"):
        encode_module._check_encoders()


def test_a_one_at_a_time_format_waits_for_its_slot() -> None:
    avif, jxl = [f for f in formats.output_formats() if f.one_at_a_time]
    webp = formats.get("webp")
    image = small_image()
    slot = encode_module.SLOTS[avif.name]
    assert slot.acquire(timeout=5)  # as if another AVIF encode were running
    try:
        with pytest.raises(LimitExceeded, match="waiting for the AVIF encoder"):
            encode_module.encode(VariantSpec(avif, FULL), image, DEFAULT_PRESET, 1, slot_wait=0.2)
        # the heavy formats share the slot: a JPEG XL encode waits for the AVIF one
        with pytest.raises(LimitExceeded, match="waiting for the JPEG XL encoder"):
            encode_module.encode(VariantSpec(jxl, FULL), image, DEFAULT_PRESET, 1, slot_wait=0.2)
        # other formats do not wait
        encode_module.encode(VariantSpec(webp, FULL), image, DEFAULT_PRESET, 1, slot_wait=0)
    finally:
        slot.release()

    assert slot.acquire(timeout=5)
    releaser = threading.Timer(0.3, slot.release)  # the other encode ends a little later
    releaser.start()
    done = encode_module.encode(VariantSpec(avif, FULL), image, DEFAULT_PRESET, 1, slot_wait=30)
    releaser.join()
    assert done.format == "avif" and done.role == "full" and done.data
    assert slot.acquire(timeout=0)  # given back after the encode
    slot.release()
