"""JPEG XL (issue 17): a preset that asks for it gets a JPEG XL file that a decoder independent of
the worker's encoder reads at the declared size and with the right pixels; a kept JPEG original
repacked as JPEG XL (`original_jxl`) restores byte for byte; a JPEG XL upload is refused by name.

The independent decoder is npm @jsquash/jxl (Squoosh's libjxl, built to WebAssembly, run by
node); the worker encodes with the imagecodecs wheel's native libjxl. The byte-exact restore is
checked with libjxl's own JPEG reconstruction (imagecodecs `jpegxl_decode_jpeg`, what `djxl
photo.jxl photo.jpg` does)."""

from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import pyvips

from tests.support.paths import corpus_file
from uplodr import formats
from uplodr.errors import UnsupportedImage
from uplodr.imaging import ImageLimits, convert, probe
from uplodr.imaging.original import repack
from uplodr.preset import DEFAULT_PRESET
from uplodr.worker.file_job import _original

from . import js_decoders

# Every format stored (format_margin 0): these tests read the JPEG XL against the others.
JXL_FIRST = DEFAULT_PRESET.with_changes(
    formats=["jxl", "avif", "webp", "jpeg"], widths=[480], format_margin=0
)


def rgba(image: pyvips.Image) -> np.ndarray:
    if not image.hasalpha():
        image = image.bandjoin(255)
    return np.ndarray(
        buffer=image.write_to_memory(), dtype=np.uint8, shape=(image.height, image.width, 4)
    )


def test_a_jxl_preset_gives_a_jpeg_xl_an_independent_decoder_reads_at_its_size() -> None:
    variants = convert(corpus_file("Landscape_6.jpg"), JXL_FIRST, ImageLimits()).variants
    by_name = {v.name: v for v in variants}
    assert [v.name for v in variants[:4]] == ["jxl", "avif", "webp", "jpeg"]
    for name, reference_name in (("jxl", "jpeg"), ("jxl-480w", "jpeg-480w")):
        variant = by_name[name]
        assert (variant.ext, variant.mime_type, variant.format) == ("jxl", "image/jxl", "jxl")
        assert formats.output_kind(variant.role, "jxl", variant.suffix, "jxl", "image/jxl")
        decoded = js_decoders.decode_jxl(variant.data)
        assert (decoded.width, decoded.height) == (variant.width, variant.height)
        pixels = np.frombuffer(decoded.rgba, dtype=np.uint8).reshape(decoded.height, -1, 4)
        # the same picture as the JPEG of the same size, decoded by libvips
        reference = rgba(pyvips.Image.new_from_buffer(by_name[reference_name].data, ""))
        difference = np.abs(pixels[..., :3].astype(int) - reference[..., :3].astype(int))
        assert float(difference.mean()) < 4, name
        assert (pixels[..., 3] == 255).all()
    # JPEG XL has no fewer bytes than it should for what it is: a lossy photo, not a PNG
    assert len(by_name["jxl"].data) < len(by_name["jpeg"].data)


def test_a_jpeg_xl_keeps_transparency() -> None:
    preset = DEFAULT_PRESET.with_changes(formats=["jxl"], thumbnail_width=0)
    path = corpus_file("alpha-premultiply-2048x1536-paper.png")
    (variant,) = convert(path, preset, ImageLimits()).variants
    decoded = js_decoders.decode_jxl(variant.data)
    assert (decoded.width, decoded.height) == (variant.width, variant.height)
    alpha = np.frombuffer(decoded.rgba, dtype=np.uint8)[3::4]
    source = rgba(pyvips.Image.new_from_file(str(path)).thumbnail_image(variant.width))
    assert alpha.min() < 255  # not flattened
    assert float(np.abs(alpha.astype(int) - source[..., 3].ravel().astype(int)).mean()) < 2


@pytest.mark.parametrize(
    ("name", "least_saved"),
    [("book-beside-flowers.jpg", 0.08), ("Landscape_6.jpg", 0.15), ("xmp_test-adobergb.jpg", 0.12)],
)
def test_a_kept_jpeg_is_repacked_as_jpeg_xl_and_restores_byte_for_byte(
    name: str, least_saved: float
) -> None:
    path = corpus_file(name)
    conversion = convert(path, DEFAULT_PRESET.for_original("only"), ImageLimits())
    output = _original(path, conversion, repack=True)
    assert (output.format, output.ext, output.mime_type) == ("jxl", "jxl", "image/jxl")
    assert output.path is None and output.data
    # what the gateway accepts from a worker as an original
    assert formats.output_kind("original", "jxl", output.suffix, "jxl", "image/jxl")
    assert (output.width, output.height) == conversion.source.display_size
    original = path.read_bytes()
    assert len(output.data) <= (1 - least_saved) * len(original)
    assert bytes(imagecodecs.jpegxl_decode_jpeg(output.data, numthreads=1)) == original


def test_a_jpeg_libjxl_cannot_repack_is_kept_as_it_came() -> None:
    # CMYK: JPEG XL's JPEG recompression carries YCbCr and grey JPEGs only
    path = corpus_file("Channel_digital_image_CMYK_color.jpg")
    assert repack(path, "jpeg") is None
    conversion = convert(path, DEFAULT_PRESET.for_original("only"), ImageLimits())
    output = _original(path, conversion, repack=True)
    assert (output.format, output.ext, output.path) == ("jpeg", "jpg", path)
    # other formats are never repacked, whatever the preset says
    assert repack(corpus_file("sample-16bit.png"), "png") is None


def test_original_jxl_off_keeps_the_jpeg() -> None:
    path = corpus_file("Landscape_6.jpg")
    conversion = convert(path, DEFAULT_PRESET.for_original("only"), ImageLimits())
    output = _original(path, conversion, repack=False)
    assert (output.format, output.path) == ("jpeg", path)


def test_a_jpeg_xl_upload_is_refused_by_name(tmp_path: Path) -> None:
    upload = tmp_path / "photo.jxl"
    upload.write_bytes(imagecodecs.jpegxl_encode(np.zeros((8, 8, 3), np.uint8), level=90))
    with pytest.raises(UnsupportedImage, match=r"^JPEG XL is an output format only; allowed"):
        probe(upload, ImageLimits())


@pytest.mark.parametrize("bands", [1, 2])
def test_a_grey_image_gives_a_jpeg_xl_of_its_size(tmp_path: Path, bands: int) -> None:
    grey = pyvips.Image.xyz(64, 48)[0].cast("uchar")
    image = (grey if bands == 1 else grey.bandjoin(200)).copy(interpretation="b-w")
    path = tmp_path / "grey.png"
    image.write_to_file(str(path))
    preset = DEFAULT_PRESET.with_changes(formats=["jxl"], thumbnail_width=0)
    (variant,) = convert(path, preset, ImageLimits()).variants
    decoded = js_decoders.decode_jxl(variant.data)
    assert (decoded.width, decoded.height) == (variant.width, variant.height) == (64, 48)
    pixels = np.frombuffer(decoded.rgba, dtype=np.uint8).reshape(48, 64, 4)
    assert np.abs(pixels[0, :, 0].astype(int) - np.arange(64)).max() <= 3  # the ramp
    assert (pixels[..., 3] == (255 if bands == 1 else 200)).all()
