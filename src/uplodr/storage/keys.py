"""Object keys: where a variant and its manifest live in a store.

Digest mode (the default) puts a short hash of the upload's bytes and the preset into every key,
so a URL always names the same bytes and may be cached forever; an identical upload maps to the
same keys and is answered from its manifest. Name mode keeps the plain `{folder}/{stem}.{ext}`:
readable, but a CDN may keep serving old bytes under a reused name (the caching caveat).

A variant's key is `{folder}/{stem}-{digest}{suffix}.{ext}`: the suffix comes from its role
("" full size, "-thumb", "-480w", ...) and the extension from its format, both in
`uplodr.formats`; `variant_shape` reads a key back the same way (what `uplodr sweep` recognises).

Folder and stem arrive already validated (no `..`, no absolute paths): keys are only joined here.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from uplodr.formats import Format, Role, variant_shapes

DIGEST_HEX_CHARS = 16  # 64 bits: collisions need ~4 billion uploads of one folder and stem
MANIFEST_EXT = "json"


def content_digest(upload_sha256_hex: str, preset_fingerprint: str) -> str:
    """A short hash of the uploaded bytes (their SHA-256) and the preset that shapes the output."""
    joined = f"uplodr-v1\n{upload_sha256_hex.lower()}\n{preset_fingerprint}"
    return hashlib.sha256(joined.encode()).hexdigest()[:DIGEST_HEX_CHARS]


def _join(folder: str, name: str) -> str:
    folder = folder.strip("/")
    return f"{folder}/{name}" if folder else name


def variant_key(folder: str, stem: str, digest: str | None, suffix: str, ext: str) -> str:
    """`{folder}/{stem}-{digest}{suffix}.{ext}`; `{folder}/{stem}{suffix}.{ext}` if no digest."""
    base = f"{stem}-{digest}" if digest else stem
    return _join(folder, f"{base}{suffix}.{ext.lstrip('.')}")


def manifest_key(folder: str, stem: str, digest: str | None) -> str:
    """Where the job's manifest (its commit point) lives: beside its variants, as `.json`."""
    return variant_key(folder, stem, digest, "", MANIFEST_EXT)


@dataclass(frozen=True)
class VariantShape:
    """What a digest-mode variant key says about itself."""

    set: str  # `{folder}/{stem}-{digest}`: the variant set it belongs to
    role: Role
    format: Format
    width: int | None  # for a role with a width


_SHAPES = variant_shapes()


def _shape_pattern() -> re.Pattern[str]:
    suffixes = sorted({role.suffix_regex for role, _ in _SHAPES}, key=len, reverse=True)
    exts = sorted({re.escape(fmt.ext) for _, fmt in _SHAPES})
    return re.compile(
        rf"^(?P<set>(?:.*/)?[^/]*-[0-9a-f]{{{DIGEST_HEX_CHARS}}})"
        rf"(?P<suffix>{'|'.join(suffixes)})\.(?P<ext>{'|'.join(exts)})$"
    )


_SHAPE = _shape_pattern()


def variant_shape(key: str) -> VariantShape | None:
    """The set, role and format of a digest-mode variant key, exactly as the encoders write
    them (`uplodr.formats.variant_shapes`); None for any other key."""
    match = _SHAPE.match(key)
    if match is None:
        return None
    for role, fmt in _SHAPES:
        if fmt.ext != match["ext"]:
            continue
        try:
            width = role.read_suffix(match["suffix"])
        except ValueError:
            continue
        return VariantShape(match["set"], role, fmt, width)
    return None


def _member_pattern() -> str:
    suffixes = sorted({role.suffix_regex for role, _ in _SHAPES} | {""}, key=len, reverse=True)
    exts = sorted({re.escape(fmt.ext) for _, fmt in _SHAPES} | {MANIFEST_EXT})
    return rf"(?:{'|'.join(suffixes)})\.(?:{'|'.join(exts)})"


_MEMBER = _member_pattern()


def in_set(key: str, base: str) -> bool:
    """True when `key` is one of the objects a set whose keys start with `base` can hold (a
    variant of any role and format, or the manifest) — in either key mode; `cat-thumb.png` is
    in set `cat`, `cat2.webp` is not."""
    return re.fullmatch(re.escape(base) + _MEMBER, key) is not None
