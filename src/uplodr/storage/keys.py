"""Object keys: where a variant and its manifest live in a store.

Digest mode (the default) puts a short hash of the upload's bytes and the preset into every key,
so a URL always names the same bytes and may be cached forever; an identical upload maps to the
same keys and is answered from its manifest. Name mode keeps the plain `{folder}/{stem}.{ext}`:
readable, but a CDN may keep serving old bytes under a reused name (the caching caveat).

Folder and stem arrive already validated (no `..`, no absolute paths): keys are only joined here.
"""

from __future__ import annotations

import hashlib

DIGEST_HEX_CHARS = 16  # 64 bits: collisions need ~4 billion uploads of one folder and stem
MANIFEST_EXT = "json"
# The (suffix, extension) of every variant the encoders write (imaging's CODECS; a test keeps
# the two in step). `uplodr sweep` recognises a set's objects by exactly these.
VARIANT_SHAPES: frozenset[tuple[str, str]] = frozenset(
    {("", "webp"), ("", "avif"), ("", "jpg"), ("-thumb", "png")}
)


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
