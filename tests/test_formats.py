"""The format registry on its own: entries check themselves, roles make and read key suffixes,
and the modules the gateway and storage use stay free of libvips."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from uplodr import formats, sniff
from uplodr.formats import FULL, ORIGINAL, ROLES, THUMBNAIL, WIDTH, Format, VariantSpec


def test_names_labels_and_extensions_are_unique() -> None:
    for attribute in ("name", "label", "mime_type", "ext"):
        values = [getattr(fmt, attribute) for fmt in formats.REGISTRY]
        assert len(set(values)) == len(values), attribute


def test_lookups() -> None:
    assert formats.get("jpeg").ext == "jpg"
    with pytest.raises(KeyError, match="unknown format 'tiff'; known: jpeg, png"):
        formats.get("tiff")
    assert [f.name for f in formats.input_formats()] == [
        "jpeg",
        "png",
        "webp",
        "gif",
        "avif",
        "heif",
    ]
    assert [f.name for f in formats.output_formats()] == ["jpeg", "png", "webp", "avif", "jxl"]
    assert [f.name for f in formats.formats_for(FULL)] == ["jpeg", "webp", "avif", "jxl"]
    assert [f.name for f in formats.thumbnail_formats()] == ["png", "webp"]
    # every full-size format is also made at smaller widths; any upload may be kept as it came
    assert formats.formats_for("width") == formats.formats_for(FULL)
    # besides the inputs, a kept JPEG may be repacked losslessly as JPEG XL (`original_jxl`)
    assert formats.formats_for(ORIGINAL) == (*formats.input_formats(), formats.get("jxl"))
    assert formats.get("jxl").repacks == {"jpeg"} and not formats.get("jxl").is_input
    # HEIC is decoded by pillow-heif: no libvips loader reads it
    heif = formats.get("heif")
    assert heif.is_input and heif.loaders == () and heif.decoder == "pillow-heif"
    assert formats.get("avif").animated_output  # through Pillow's libavif


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"loaders": ("jpegload",)}, "needs magic bytes or brands"),
        ({"decoder": "pillow-heif"}, "needs magic bytes or brands"),
        ({"decoder": "pillow-heif", "magic": (b"X",), "loaders": ("x",)}, "no libvips loader"),
        ({"magic": (b"XY",)}, "input properties but no loader"),
        ({"roles": frozenset({"full", "original"})}, "only an input format, or one that repacks"),
        ({"loaders": ("x",), "magic": (b"X",), "refused_magic": (b"X",)}, "is not refused"),
        ({"one_at_a_time": True}, "no output"),
        ({"roles": frozenset({"poster"})}, "unknown roles"),
    ],
)
def test_an_entry_checks_itself(entry: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Format(name="x", label="X", mime_type="image/x", ext="x", **entry)  # type: ignore[arg-type]


def test_a_jpeg_xl_upload_is_recognised_only_to_be_refused() -> None:
    codestream, container = b"\xff\x0a\xfa\x1f", b"\x00\x00\x00\x0cJXL \r\n\x87\n\x00"
    assert formats.refused_format(codestream) == formats.get("jxl")
    assert formats.refused_format(container) == formats.get("jxl")
    assert formats.refused_format(b"\xff\xd8\xff\xe0") is None  # a JPEG is an input
    assert sniff.sniff(codestream) is None and sniff.sniff(container) is None
    message = sniff.unsupported_message(container)
    assert message.startswith("JPEG XL is an output format only; allowed formats are JPEG, PNG")
    assert sniff.unsupported_message(b"%PDF-1.7") == sniff.UNSUPPORTED_MESSAGE


def test_magic_wildcards() -> None:
    webp = formats.get("webp")
    assert webp.has_magic(b"RIFF\x00\x01\x02\x03WEBPVP8 ")
    assert not webp.has_magic(b"RIFF\x00\x01\x02\x03WAVE")
    assert not webp.has_magic(b"RIFF\x00\x01\x02WEBP")  # one byte short


def test_brands_major_first_then_in_registry_order() -> None:
    assert formats.by_brand([b"heic", b"avif"]) == formats.get("heif")
    assert formats.by_brand([b"mif1", b"heic", b"avif"]) == formats.get("avif")
    assert formats.by_brand([b"mif1", b"miaf"]) == formats.get("heif")
    assert formats.by_brand([b"isom", b"mp41"]) is None
    assert formats.by_brand([]) is None


@given(st.sampled_from(sorted(ROLES)), st.integers(1, 100_000))
def test_a_role_reads_back_the_suffix_it_makes(name: str, width: int) -> None:
    role = ROLES[name]  # type: ignore[index]
    suffix = role.key_suffix(width if role.has_width else None)
    assert role.read_suffix(suffix) == (width if role.has_width else None)
    for other in ROLES.values():
        if other != role:
            with pytest.raises(ValueError):
                other.read_suffix(suffix)


def test_role_suffixes() -> None:
    assert [FULL.key_suffix(), THUMBNAIL.key_suffix(), WIDTH.key_suffix(480)] == [
        "",
        "-thumb",
        "-480w",
    ]
    assert ORIGINAL.key_suffix() == "-original"
    for bad in ("-0480w", "-480", "-w", "-480w.webp"):
        with pytest.raises(ValueError):
            WIDTH.read_suffix(bad)
    with pytest.raises(ValueError, match="needs width"):
        WIDTH.key_suffix()
    with pytest.raises(ValueError, match="takes no width"):
        THUMBNAIL.key_suffix(480)
    with pytest.raises(ValueError, match="at least 1 px"):
        WIDTH.key_suffix(0)


def test_variant_specs() -> None:
    assert VariantSpec(formats.get("avif"), FULL).label == "avif"
    assert VariantSpec(formats.get("png"), THUMBNAIL).suffix == "-thumb"
    assert VariantSpec(formats.get("png"), THUMBNAIL).label == "thumbnail"
    with pytest.raises(ValueError, match="JPEG is not written as a thumbnail variant"):
        VariantSpec(formats.get("jpeg"), THUMBNAIL)
    assert VariantSpec(formats.get("webp"), WIDTH, 480).label == "webp-480w"
    assert VariantSpec(formats.get("heif"), ORIGINAL).suffix == "-original"
    with pytest.raises(ValueError, match="PNG is not written as a width variant"):
        VariantSpec(formats.get("png"), WIDTH, 480)
    with pytest.raises(ValueError, match="needs width"):
        VariantSpec(formats.get("webp"), WIDTH)


def test_the_shared_modules_load_no_imaging() -> None:
    """The gateway sniffs, picks presets and writes markup, and storage reads key shapes, without
    libvips, Pillow, pillow-heif or uplodr.imaging (the worker's libraries)."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, uplodr.formats, uplodr.sniff, uplodr.preset, uplodr.storage\n"
            "import uplodr.markup\n"
            "print(sorted(m for m in sys.modules\n"
            "             if 'vips' in m or m.startswith(('uplodr.imaging', 'PIL', 'pillow_heif',\n"
            "                                             'blurhash'))))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.strip() == "[]"
