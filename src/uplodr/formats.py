"""Every image format uplodr knows, described once: the one table the rest of the code reads.

One `Format` per format (after imgproxy's `imagetype/defs.go`): how its first bytes look, which
libvips loaders read it, whether it carries alpha and animation, its MIME type and extension,
which *roles* its encoder writes (full size, thumbnail, ...), and whether its encodes must run
one at a time. Readers:

    uplodr.sniff          magic bytes and ISO-BMFF brands of the input formats (the gateway,
                          without libvips)
    uplodr.imaging        loader allow-list and header loader (vips, probe), which decoder reads
                          the pixels (libvips, or pillow-heif for HEVC), animation and alpha
                          handling (pipeline, convert), one encoder function per output format
                          (encode, keyed by `Format.name`), the one-at-a-time rule
    uplodr.preset         which formats a preset may ask for at full size
    uplodr.storage        key suffixes and the (role, extension) pairs a variant set can hold
                          (keys, sweep)

This module is pure (no libvips, no I/O) so that the gateway and storage can use it without
loading imaging. How to add a format: docs/formats.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Literal

RoleName = Literal["full", "thumbnail", "width", "original"]
# Who reads an input format's pixels: libvips through its allow-listed `loaders`, or libheif's
# HEVC decoder through pillow-heif (pyvips-binary's libheif decodes AV1 only).
Decoder = Literal["libvips", "pillow-heif"]


@dataclass(frozen=True)
class Role:
    """What a variant is for, and the suffix its key gets after `{stem}-{digest}`.

    `suffix` may hold `{w}`, the variant's width in px (responsive widths: `-{w}w`)."""

    name: RoleName
    suffix: str

    @property
    def has_width(self) -> bool:
        return "{w}" in self.suffix

    def key_suffix(self, width: int | None = None) -> str:
        """The suffix of one variant's key: `""`, `"-thumb"`, `"-480w"`, ..."""
        if self.has_width != (width is not None):
            raise ValueError(
                f"the {self.name} role {'needs' if self.has_width else 'takes no'} width"
            )
        if width is None:
            return self.suffix
        if width < 1:
            raise ValueError(f"a variant width must be at least 1 px, not {width}")
        return self.suffix.replace("{w}", str(width))

    @property
    def suffix_regex(self) -> str:
        """A regular expression for every suffix of this role (widths as digits, no leading 0)."""
        return re.escape(self.suffix).replace(re.escape("{w}"), "[1-9][0-9]*")

    def read_suffix(self, suffix: str) -> int | None:
        """The width in one of this role's key suffixes (None when the role has no width);
        ValueError when `suffix` is not one of them."""
        pattern = re.escape(self.suffix).replace(re.escape("{w}"), "(?P<w>[1-9][0-9]*)")
        match = re.fullmatch(pattern, suffix)
        if match is None:
            raise ValueError(f"{suffix!r} is not a key suffix of the {self.name} role")
        return int(match["w"]) if self.has_width else None


FULL: Final = Role("full", "")
THUMBNAIL: Final = Role("thumbnail", "-thumb")
# A full-size format made again at a smaller width (responsive images: the preset's `widths`).
WIDTH: Final = Role("width", "-{w}w")
# The upload itself, byte for byte, in the format it was sniffed as (keep_original).
ORIGINAL: Final = Role("original", "-original")
ROLES: Final[dict[RoleName, Role]] = {r.name: r for r in (FULL, THUMBNAIL, WIDTH, ORIGINAL)}


@dataclass(frozen=True, kw_only=True)
class Format:
    """One image format. A format is an *input* when it has loaders (and a magic test), an
    *output* when its encoder writes at least one role."""

    name: str  # "jpeg": in presets, answers, the encoder table and logs
    label: str  # "JPEG": in messages
    mime_type: str
    ext: str  # file extension of its keys, without the dot
    # Magic bytes at the start of the file; b"?" stands for any one byte.
    magic: tuple[bytes, ...] = ()
    # ISO-BMFF files (`ftyp` box first): brands that name this format. The major brand decides;
    # failing that, the compatible brands, format by format in registry order.
    brands: frozenset[bytes] = frozenset()
    # Brands that say only "some file of this family" (HEIF's mif1): counted like the brands
    # above, but never decide as the major brand.
    weak_brands: frozenset[bytes] = frozenset()
    # libvips loader nicknames (without _buffer/_source), first = the one that reads the header.
    # Every other loader is blocked inside libvips. Empty: not read by libvips.
    loaders: tuple[str, ...] = ()
    # Who decodes an upload in this format (an input format is read by libvips unless it names
    # another decoder; such a format has no libvips loader at all).
    decoder: Decoder = "libvips"
    alpha: bool = False  # can carry transparency; otherwise it is flattened before encoding
    animated_input: bool = False  # extra pages of an upload are animation frames
    animated_output: bool = False  # its encoder writes every frame
    # Roles its encoder writes (see ROLES); empty: never an output.
    roles: frozenset[RoleName] = frozenset()
    # At most one encode of this format at a time per process (AVIF: memory, ~18-27 MB per
    # output megapixel, and both cores). All such formats share one slot: their encodes never
    # overlap (AVIF and JPEG XL together would not fit a 24 MP photo in 512 MB).
    one_at_a_time: bool = False
    # Input formats whose upload this format can carry as the kept original losslessly, the
    # upload's bytes restorable exactly (JPEG XL's JPEG recompression): gives the `original`
    # role to a format that is no input.
    repacks: frozenset[str] = frozenset()
    # An upload of this format that is recognised only to be refused by name (no decoder that
    # checks the limits before decoding): its first bytes, as `magic`.
    refused_magic: tuple[bytes, ...] = ()
    _patterns: tuple[re.Pattern[bytes], ...] = field(init=False, repr=False, compare=False)
    _refused_patterns: tuple[re.Pattern[bytes], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.decoder != "libvips" and self.loaders:
            raise ValueError(f"format {self.name}: decoded by {self.decoder}, so no libvips loader")
        if self.is_input and not (self.magic or self.brands):
            raise ValueError(f"format {self.name}: an input format needs magic bytes or brands")
        if not self.is_input and (self.magic or self.brands or self.animated_input):
            raise ValueError(f"format {self.name}: input properties but no loader")
        if "original" in self.roles and not (self.is_input or self.repacks):
            raise ValueError(
                f"format {self.name}: only an input format, or one that repacks an input "
                "format losslessly, can be an original"
            )
        if self.refused_magic and self.is_input:
            raise ValueError(f"format {self.name}: an input format is not refused")
        if (self.one_at_a_time or self.animated_output) and not self.is_output:
            raise ValueError(f"format {self.name}: an encoder rule on a format that is no output")
        unknown = set(self.roles) - set(ROLES)
        if unknown:
            raise ValueError(f"format {self.name}: unknown roles {sorted(unknown)}")
        object.__setattr__(self, "_patterns", _compile(self.magic))
        object.__setattr__(self, "_refused_patterns", _compile(self.refused_magic))

    @property
    def is_input(self) -> bool:
        return bool(self.loaders) or self.decoder != "libvips"

    @property
    def is_output(self) -> bool:
        return bool(set(self.roles) - {"original"})

    def has_magic(self, head: bytes) -> bool:
        """True when `head` (the file's first bytes) starts with one of the magic patterns."""
        return any(pattern.match(head) for pattern in self._patterns)

    def is_refused(self, head: bytes) -> bool:
        """True when `head` is an upload of this format that is refused by name."""
        return any(pattern.match(head) for pattern in self._refused_patterns)


def _compile(magic: tuple[bytes, ...]) -> tuple[re.Pattern[bytes], ...]:
    """Magic bytes as patterns (b"?" = any one byte)."""
    return tuple(
        re.compile(b"".join(b"." if c == ord("?") else re.escape(bytes([c])) for c in m), re.S)
        for m in magic
    )


# The registry, in the order messages name the formats. Add a format here (docs/formats.md).
REGISTRY: Final[tuple[Format, ...]] = (
    Format(
        name="jpeg",
        label="JPEG",
        mime_type="image/jpeg",
        ext="jpg",
        magic=(b"\xff\xd8\xff",),
        loaders=("jpegload",),
        roles=frozenset({"full", "width", "original"}),
    ),
    Format(
        name="png",
        label="PNG",
        mime_type="image/png",
        ext="png",
        magic=(b"\x89PNG\r\n\x1a\n",),
        loaders=("pngload",),
        alpha=True,
        roles=frozenset({"thumbnail", "original"}),
    ),
    Format(
        name="webp",
        label="WebP",
        mime_type="image/webp",
        ext="webp",
        magic=(b"RIFF????WEBP",),
        loaders=("webpload",),
        alpha=True,
        animated_input=True,
        animated_output=True,
        # a thumbnail too, when a preset asks (`thumbnail_format`): ~1/10 of the PNG's bytes
        roles=frozenset({"full", "width", "thumbnail", "original"}),
    ),
    Format(
        name="gif",
        label="GIF",
        mime_type="image/gif",
        ext="gif",
        magic=(b"GIF87a", b"GIF89a"),
        loaders=("gifload",),
        alpha=True,
        animated_input=True,
        roles=frozenset({"original"}),
    ),
    Format(
        name="avif",
        label="AVIF",
        mime_type="image/avif",
        ext="avif",
        brands=frozenset({b"avif", b"avis"}),
        loaders=("heifload",),
        alpha=True,
        # Stills by libvips; animations by Pillow's libavif (libvips writes no AVIF sequences).
        animated_output=True,
        roles=frozenset({"full", "width", "original"}),
        one_at_a_time=True,
    ),
    Format(
        # HEIC: the primary image is HEVC. pyvips-binary's libheif decodes only AV1, so these
        # are decoded by pillow-heif (libheif + libde265), never by a libvips loader.
        name="heif",
        label="HEIF",
        # image/heic: IANA's type for HEIF whose images are HEVC-coded (ISO/IEC 23008-12,
        # Annex B), what a phone writes; image/heif is for HEIF in general.
        mime_type="image/heic",
        ext="heic",
        brands=frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"}),
        weak_brands=frozenset({b"mif1", b"msf1"}),
        decoder="pillow-heif",
        alpha=True,
        roles=frozenset({"original"}),
    ),
    Format(
        # JPEG XL: written by libjxl through imagecodecs (pyvips-binary has no jxlsave). Its
        # original role is a kept JPEG recompressed losslessly (`original_jxl`). Uploads of it
        # are refused by name: no decoder here reads its header before the pixels.
        name="jxl",
        label="JPEG XL",
        mime_type="image/jxl",
        ext="jxl",
        alpha=True,
        roles=frozenset({"full", "width", "original"}),
        # libjxl at effort 4: ~10 MB per output megapixel beside the image (docs/formats.md).
        one_at_a_time=True,
        repacks=frozenset({"jpeg"}),
        # A bare codestream, or the ISO-BMFF-like container's signature box.
        refused_magic=(b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n"),
    ),
)

_BY_NAME: Final[dict[str, Format]] = {fmt.name: fmt for fmt in REGISTRY}
if len(_BY_NAME) != len(REGISTRY):
    raise ValueError("two formats share a name")


def get(name: str) -> Format:
    """The format called `name`; KeyError naming the known ones otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown format {name!r}; known: {', '.join(_BY_NAME)}") from None


def input_formats() -> tuple[Format, ...]:
    """Formats an upload may be in, in registry order."""
    return tuple(fmt for fmt in REGISTRY if fmt.is_input)


def output_formats() -> tuple[Format, ...]:
    """Formats an encoder writes, in registry order."""
    return tuple(fmt for fmt in REGISTRY if fmt.is_output)


def formats_for(role: Role | RoleName) -> tuple[Format, ...]:
    """Formats whose variants of `role` are written, in registry order."""
    name = role.name if isinstance(role, Role) else role
    return tuple(fmt for fmt in REGISTRY if name in fmt.roles)


def refused_format(head: bytes) -> Format | None:
    """The format of an upload that is recognised only to be refused by name (JPEG XL)."""
    return next((fmt for fmt in REGISTRY if fmt.is_refused(head)), None)


def thumbnail_formats() -> tuple[Format, ...]:
    """The formats a thumbnail may be written in (a preset's `thumbnail_format`: PNG by
    default, or WebP)."""
    return formats_for(THUMBNAIL)


def by_brand(brands: Iterable[bytes]) -> Format | None:
    """The format an ISO-BMFF file is in, from its `ftyp` brands (major brand first)."""
    brands = list(brands)
    if not brands:
        return None
    for fmt in REGISTRY:
        if brands[0] in fmt.brands:
            return fmt
    for fmt in REGISTRY:
        if any(brand in fmt.brands or brand in fmt.weak_brands for brand in brands):
            return fmt
    return None


@dataclass(frozen=True)
class VariantSpec:
    """One variant to make: a format in a role (at a width, for the width role)."""

    format: Format
    role: Role
    width: int | None = None

    def __post_init__(self) -> None:
        if self.role.name not in self.format.roles:
            raise ValueError(f"{self.format.label} is not written as a {self.role.name} variant")
        self.role.key_suffix(self.width)  # width given iff the role takes one

    @property
    def suffix(self) -> str:
        return self.role.key_suffix(self.width)

    @property
    def label(self) -> str:
        """A short name for logs and messages: "webp", "thumbnail", "webp-480w", "original"."""
        if self.role.name == "full":
            return self.format.name
        if self.role.has_width:
            return f"{self.format.name}{self.suffix}"
        return self.role.name


def variant_shapes() -> frozenset[tuple[Role, Format]]:
    """Every (role, format) pair a variant set can hold: what the encoders write."""
    return frozenset((ROLES[name], fmt) for fmt in REGISTRY for name in fmt.roles)


def output_kind(
    role: str, format: str, key_suffix: str, ext: str, mime_type: str
) -> tuple[Role, Format]:
    """The (role, format) pair an output a worker sent back claims to be, when an encoder writes
    exactly that: a pair of `variant_shapes`, a key suffix of that role, that format's extension
    and MIME type. ValueError (one line, no worker text quoted at length) for anything else —
    what keeps a taken-over worker from choosing where its bytes are stored."""
    kind = next(((r, f) for r, f in variant_shapes() if r.name == role and f.name == format), None)
    if kind is None:
        raise ValueError(f"an output uplodr does not make ({role[:20]!r}, {format[:20]!r})")
    found_role, found_format = kind
    if not _fits_suffix(found_role, key_suffix):
        raise ValueError(f"a {found_role.name} output with a wrong key suffix")
    if ext != found_format.ext or mime_type != found_format.mime_type:
        raise ValueError(f"a {found_format.name} output typed as something else")
    return kind


def _fits_suffix(role: Role, suffix: str) -> bool:
    try:
        role.read_suffix(suffix)
    except ValueError:
        return False
    return True
