"""Sets already in a local store, made as an earlier upload left them (variants, a kept
original or not, the manifest last), for the tests and bench of `uplodr rebuild`: publishing
them directly keeps those tests about the rebuild, not about uploading its input first."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import random
from dataclasses import replace
from pathlib import Path

from PIL import Image

from tests.support.images import noise_png
from uplodr.preset import Preset
from uplodr.storage import Blob, LocalStore, Publisher
from uplodr.storage.catalog import manifests_under, parse_manifest
from uplodr.storage.keys import content_digest

# What the sets were made with before the rebuild: the original kept.
OLD_PRESET = Preset(formats=("webp",), thumbnail_width=0, webp_quality=70, keep_original=True)


def _store(root: Path) -> LocalStore:
    return LocalStore(root, "http://127.0.0.1:1/files/{key}")


def _webp(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        out = io.BytesIO()
        image.save(out, "WEBP", quality=70)
        return out.getvalue()


async def publish_set(
    root: Path, folder: str, stem: str, data: bytes, keep_original: bool = True
) -> None:
    """One set of the PNG or JPEG `data`: a WebP and, with `keep_original`, the original."""
    preset = OLD_PRESET if keep_original else replace(OLD_PRESET, keep_original=False)
    digest = content_digest(hashlib.sha256(data).hexdigest(), preset.fingerprint())
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        fmt = "png" if image.format == "PNG" else "jpeg"
    ext, mime = ("png", "image/png") if fmt == "png" else ("jpg", "image/jpeg")
    full = Blob("", "webp", "image/webp", width, height, _webp(data), format="webp", role="full")
    original = Blob("-original", ext, mime, width, height, data, format=fmt, role="original")
    blobs = [full, original] if keep_original else [full]
    store = _store(root)
    await Publisher([store]).publish(folder, stem, digest, blobs, preset.to_json())


def make_sets(
    root: Path,
    folder: str,
    count: int,
    *,
    keep_original: bool = True,
    size: tuple[int, int] = (64, 48),
    prefix: str = "img",
    seed: int = 0,
) -> list[str]:
    """`count` sets of unique noise PNGs under `folder`; their stems."""
    rng = random.Random(seed)
    stems = [f"{prefix}{index:03d}" for index in range(count)]

    async def go() -> None:
        for stem in stems:
            await publish_set(root, folder, stem, noise_png(*size, rng), keep_original)

    asyncio.run(go())
    return stems


def manifests(root: Path, folder: str) -> list[dict[str, object]]:
    """Every manifest under `folder` in the store at `root`."""

    async def go() -> list[dict[str, object]]:
        store = _store(root)
        found = []
        for _ref, obj in await manifests_under(store, folder):
            manifest = parse_manifest(await store.get(obj.key))
            if manifest is not None:
                found.append(manifest)
        return found

    return asyncio.run(go())


def in_preset(root: Path, folder: str, preset: Preset) -> list[dict[str, object]]:
    """The manifests under `folder` made with `preset` (its original kept)."""
    target = json.loads(preset.for_original("keep").to_json())
    return [m for m in manifests(root, folder) if m.get("preset") == target]
