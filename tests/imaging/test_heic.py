"""HEIC (HEVC) through convert: the iPhone photo of the corpus, and HEICs made here with
pillow-heif's encoder for what the corpus lacks (a rotation with an EXIF orientation beside it,
a burst, alpha, a bomb, truncation)."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pillow_heif
import pytest
import pyvips
from PIL import Image, ImageCms

from tests.support.paths import corpus_file
from uplodr.errors import CorruptImage, LimitExceeded
from uplodr.imaging import ImageLimits, convert, heif, probe
from uplodr.preset import DEFAULT_PRESET

from .conftest import load_variant

PHOTO = "IMG_2682.heic"  # iPhone 7, 4032x3024, Display P3 ICC profile, 8-bit


def heic(pixels: pyvips.Image, **save: object) -> bytes:
    """`pixels` (8-bit RGB or RGBA) as a HEIC written by libheif's x265 encoder."""
    mode = "RGBA" if pixels.bands == 4 else "RGB"
    file = pillow_heif.from_bytes(mode, (pixels.width, pixels.height), pixels.write_to_memory())
    out = io.BytesIO()
    file.save(out, quality=save.pop("quality", 92), **save)
    return out.getvalue()


def write(tmp_path: Path, data: bytes, name: str = "upload") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_the_iphone_photo_converts_upright_srgb_and_bare() -> None:
    path = corpus_file(PHOTO)
    info = probe(path, ImageLimits())
    assert (info.format, info.width, info.height, info.has_icc_profile) == (
        "heif",
        4032,
        3024,
        True,
    )
    conversion = convert(path, DEFAULT_PRESET, ImageLimits())
    assert (conversion.width, conversion.height) == (4032, 3024)
    assert conversion.source.format == "heif" and conversion.placeholder is not None
    assert [v.name for v in conversion.variants] == [*DEFAULT_PRESET.formats, "thumbnail"]
    for variant in conversion.variants:
        image = load_variant(variant)
        expected = (800, 600) if variant.role == "thumbnail" else (4032, 3024)
        assert (image.width, image.height) == expected == (variant.width, variant.height)
        assert image.format == "uchar"
        for field in ("icc-profile-data", "exif-data", "xmp-data", "orientation"):
            assert not image.get_typeof(field), (variant.name, field)
    # Colours: the Display P3 pixels converted to sRGB. The reference is littleCMS through
    # Pillow's ImageCms (not libvips) on pillow-heif's own decode of the file.
    source = pillow_heif.open_heif(path)
    raw = source.to_pillow().convert("RGB")
    srgb = ImageCms.profileToProfile(
        raw,
        ImageCms.ImageCmsProfile(io.BytesIO(source.info["icc_profile"])),
        ImageCms.createProfile("sRGB"),
        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
    )
    assert srgb is not None
    reference = pyvips.Image.new_from_memory(srgb.tobytes(), 4032, 3024, 3, "uchar")
    raw_image = pyvips.Image.new_from_memory(raw.tobytes(), 4032, 3024, 3, "uchar")
    # every full-size format made (lossy, but close)
    full = [load_variant(v) for v in conversion.variants if v.role == "full"]
    jpeg = load_variant(next(v for v in conversion.variants if v.format == "jpeg"))
    for variant in full:
        to_reference = (variant - reference).abs().avg()
        to_raw = (variant - raw_image).abs().avg()
        assert to_reference < 3.0, to_reference
    # where it matters (the saturated blue of the sky behind the bars) P3 read as sRGB is off
    # by far more than the encoders' error
    blue_sky = (reference[2] > 200) & (reference[0] < 120)
    assert blue_sky.avg() / 255 > 0.02  # there is sky
    off_raw = ((jpeg - raw_image).abs()[0] * (blue_sky / 255)).avg() / (blue_sky.avg() / 255)
    off_ref = ((jpeg - reference).abs()[0] * (blue_sky / 255)).avg() / (blue_sky.avg() / 255)
    assert off_ref < off_raw / 2, (off_ref, off_raw)
    assert to_raw > to_reference


def test_heif_rotation_is_applied_once_though_exif_says_it_too(tmp_path: Path) -> None:
    """Landscape_6.jpg's stored pixels (1200x1800, labelled edges) as a HEIC whose `irot` box
    turns them upright and whose EXIF still says orientation 6, as iPhones write both. libheif
    applies the box; the EXIF tag must not turn the picture a second time."""
    jpeg = pyvips.Image.new_from_file(str(corpus_file("Landscape_6.jpg")))
    stored = jpeg.copy()
    stored.remove("orientation")
    data = heic(stored, exif=jpeg.get("exif-data"))
    assert b"irot" in data
    opened = pillow_heif.open_heif(io.BytesIO(data))
    exif = Image.Exif()
    exif.load(opened.info["exif"])
    assert exif.get(0x0112) == 6  # the file says 6 in EXIF as well
    path = write(tmp_path, data)
    assert probe(path, ImageLimits()).display_size == (1800, 1200)
    conversion = convert(path, DEFAULT_PRESET, ImageLimits())
    upright = jpeg.autorot()  # libvips' reading of the JPEG: the right way up
    for variant in conversion.variants:
        image = load_variant(variant)
        assert (image.width, image.height) == (
            (1800, 1200) if variant.role == "full" else (800, 533)
        )
        assert not image.get_typeof("orientation") and not image.get_typeof("exif-data")
    jpeg_variant = next(v for v in conversion.variants if v.format == "jpeg")
    full = load_variant(jpeg_variant)[0:3]
    assert (full - upright).abs().avg() < 6  # the same picture, not turned twice
    assert (full - upright.rot180()).abs().avg() > 30


def test_a_burst_gives_its_primary_image(tmp_path: Path) -> None:
    burst = pillow_heif.from_bytes("RGB", (64, 48), bytes(64 * 48 * 3))
    burst.add_frombytes("RGB", (40, 80), bytes([200]) * 40 * 80 * 3)
    out = io.BytesIO()
    burst.save(out, quality=90, primary_index=1)
    path = write(tmp_path, out.getvalue())
    assert heif.read_header(path).images == 2
    conversion = convert(path, DEFAULT_PRESET, ImageLimits())
    assert (conversion.width, conversion.height) == (40, 80)
    jpeg = load_variant(conversion.variants[2])
    assert jpeg.avg() > 180  # the bright primary, not the black first image


def test_alpha_is_kept_where_the_format_has_it(tmp_path: Path) -> None:
    x = pyvips.Image.xyz(64, 64)
    rgba = (x[0] * 4).bandjoin([x[1] * 4, x[0] + x[1], (x[0] > 31).ifthenelse(255, 0)])
    path = write(tmp_path, heic(rgba.cast("uchar").copy(interpretation="srgb")))
    assert probe(path, ImageLimits()).has_alpha
    for variant in convert(path, DEFAULT_PRESET, ImageLimits()).variants:
        image = load_variant(variant)
        # the transparent left half's first 20/64 (the thumbnail may be narrower: never more
        # bytes than the full-size WebP)
        left = image.crop(0, 0, max(1, image.width * 20 // 64), image.height)
        if variant.format == "jpeg":
            assert image.bands == 3 and left.min() > 240  # white behind
        else:
            assert image.hasalpha(), variant.name
            assert left[image.bands - 1].max() < 16


@pytest.mark.parametrize(
    ("size", "words"),
    [
        ((20000, 15000), "20000x15000 px = 300.0 MP; the limit is 100 MP"),
        ((60000, 60000), "the longest side may be at most 30000 px"),
    ],
)
def test_a_heic_bomb_is_refused_from_its_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: tuple[int, int], words: str
) -> None:
    """The photo with its primary image's `ispe` box saying it is far larger: refused before
    the decoder is ever called."""
    data = bytearray(corpus_file(PHOTO).read_bytes())
    at = data.find(struct.pack(">II", 4032, 3024))  # the grid image's ispe property
    assert at > 0 and data[at - 8 : at - 4] == b"ispe"
    data[at : at + 8] = struct.pack(">II", *size)
    path = write(tmp_path, bytes(data))

    def never(*args: object) -> None:
        raise AssertionError("a bomb reached the decoder")

    monkeypatch.setattr(heif, "decode_primary", never)
    with pytest.raises(LimitExceeded, match=words):
        convert(path, DEFAULT_PRESET, ImageLimits())


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.004, 0.0003])
def test_a_truncated_heic_is_corrupt(tmp_path: Path, keep: float) -> None:
    """Cut inside the pixel data (libheif alone would fill the missing tiles in), inside the
    metadata, inside the first box."""
    data = corpus_file(PHOTO).read_bytes()
    path = write(tmp_path, data[: max(32, int(len(data) * keep))])
    with pytest.raises(CorruptImage, match="HEIF image"):
        convert(path, DEFAULT_PRESET, ImageLimits())


def test_garbage_after_a_valid_header_is_corrupt(tmp_path: Path) -> None:
    data = bytearray(corpus_file(PHOTO).read_bytes())
    mdat = data.find(b"mdat")
    data[mdat + 4 :] = bytes(len(data) - mdat - 4)  # the HEVC data zeroed, boxes intact
    with pytest.raises(CorruptImage):
        convert(write(tmp_path, bytes(data)), DEFAULT_PRESET, ImageLimits())


def test_no_hevc_reaches_libvips() -> None:
    """HEIC has no libvips loader: libvips' heifload stays allowed for AVIF only, and
    libvips' own libheif cannot decode HEVC anyway."""
    from uplodr import formats
    from uplodr.imaging.vips import ALLOWED_LOADERS

    assert formats.get("heif").loaders == ()
    assert "heifload" in ALLOWED_LOADERS  # for AVIF
    with pytest.raises(pyvips.Error):
        pyvips.Image.new_from_buffer(corpus_file(PHOTO).read_bytes(), "").avg()
