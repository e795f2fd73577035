"""The stored images, found again after their upload: an image's id, its manifest, a folder's sets.

uplodr keeps no database: a set's manifest (`publish.py`, the commit point) is the record of an
image, and its key already names the image uniquely (`{folder}/{stem}-{digest}` in digest mode,
`{folder}/{stem}` in name mode). An image's id is that key's base, base64url-encoded — opaque
to a client (no slash to escape in a URL path), stable (the same upload gets the same id), and
decoded back to the manifest's key with no lookup. A decoded id is validated as any folder and
name a client sends (`uplodr.names`), so an id cannot reach outside the store's prefix.

Listing reads the keys of a folder (one LIST per 1000 objects on S3), keeps the manifests and
orders them newest first by their modification time (S3 keeps whole seconds: sets written
within one come in key order); only the manifests of the page asked for are read. A store holds
no index, so a page costs a listing of the folder: fine for the tens of thousands of images of
a site, and what `uplodr sweep` pays already.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from uplodr.errors import InvalidRequest
from uplodr.names import safe_folder
from uplodr.storage.base import Store, StoredObject
from uplodr.storage.keys import DIGEST_HEX_CHARS, MANIFEST_EXT, manifest_key

ID_PREFIX = "img_"
_DIGEST_STEM = re.compile(rf"^(?P<stem>[\w.-]+)-(?P<digest>[0-9a-f]{{{DIGEST_HEX_CHARS}}})$")
_NAME_STEM = re.compile(r"^[\w.-]+$")


@dataclass(frozen=True)
class ImageRef:
    """Where one image's set lives: its folder, key stem and digest (None in name mode)."""

    folder: str
    stem: str
    digest: str | None

    @property
    def base(self) -> str:
        """The key every object of the set starts with: `{folder}/{stem}-{digest}`."""
        name = f"{self.stem}-{self.digest}" if self.digest else self.stem
        return f"{self.folder}/{name}" if self.folder else name

    @property
    def id(self) -> str:
        encoded = base64.urlsafe_b64encode(self.base.encode()).rstrip(b"=").decode()
        return ID_PREFIX + encoded

    @property
    def manifest_key(self) -> str:
        return manifest_key(self.folder, self.stem, self.digest)

    @classmethod
    def from_base(cls, base: str, *, digest_keys: bool = True) -> ImageRef:
        """From a set's key base; InvalidRequest when it is not one uplodr could have written."""
        folder, _, name = base.rpartition("/")
        folder = safe_folder(folder) if folder else ""
        if digest_keys:
            match = _DIGEST_STEM.match(name)
            if match is None:
                raise InvalidRequest("not an image id of this gateway")
            return cls(folder, match["stem"], match["digest"])
        if not _NAME_STEM.match(name) or name.startswith("."):
            raise InvalidRequest("not an image id of this gateway")
        return cls(folder, name, None)

    @classmethod
    def from_id(cls, image_id: str, *, digest_keys: bool = True) -> ImageRef:
        """Decode an id a client sent; InvalidRequest (one line) when it is not a valid id."""
        if not image_id.startswith(ID_PREFIX) or len(image_id) > 600:
            raise InvalidRequest(f"an image id starts with {ID_PREFIX!r}")
        encoded = image_id[len(ID_PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            base = raw.decode()
        except (binascii.Error, ValueError):
            raise InvalidRequest("not an image id of this gateway") from None
        ref = cls.from_base(base, digest_keys=digest_keys)
        if ref.id != image_id:  # one id per image: no padding or alphabet variants
            raise InvalidRequest("not an image id of this gateway")
        return ref

    @classmethod
    def from_manifest_key(cls, key: str, *, digest_keys: bool = True) -> ImageRef | None:
        """The image a manifest key belongs to; None for a key that is not a manifest's."""
        suffix = "." + MANIFEST_EXT
        if not key.endswith(suffix):
            return None
        try:
            return cls.from_base(key[: -len(suffix)], digest_keys=digest_keys)
        except InvalidRequest:
            return None


@dataclass(frozen=True)
class StoredImage:
    """One image as its manifest records it."""

    ref: ImageRef
    modified: float  # when its manifest was written (seconds since the epoch)
    manifest: dict[str, Any]


def parse_manifest(raw: bytes | None) -> dict[str, Any] | None:
    """A manifest's document; None when absent or not a manifest (never raises)."""
    if raw is None:
        return None
    try:
        manifest = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("variants"), list):
        return None
    return manifest


async def read_image(store: Store, ref: ImageRef) -> StoredImage | None:
    """The image's manifest in `store`; None when it has none (deleted, never made, or a set
    still being published)."""
    info = await store.info(ref.manifest_key)
    if info is None:
        return None
    manifest = parse_manifest(await store.get(ref.manifest_key))
    if manifest is None:
        return None
    return StoredImage(ref, info.modified, manifest)


async def manifests_under(
    store: Store, folder: str, *, digest_keys: bool = True
) -> list[tuple[ImageRef, StoredObject]]:
    """Every manifest under `folder` (its subfolders included), newest first (ties by key)."""
    found: list[tuple[ImageRef, StoredObject]] = []
    async for obj in store.list_objects(folder):
        ref = ImageRef.from_manifest_key(obj.key, digest_keys=digest_keys)
        if ref is not None:
            found.append((ref, obj))
    found.sort(key=lambda pair: (-pair[1].modified, pair[1].key))
    return found


@dataclass(frozen=True)
class Page:
    images: Sequence[StoredImage]
    cursor: str | None  # where the next page starts; None after the last


def _cursor(obj: StoredObject) -> str:
    raw = json.dumps([obj.modified, obj.key]).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _after(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        modified, key = json.loads(raw)
        return float(modified), str(key)
    except (binascii.Error, ValueError, TypeError):
        raise InvalidRequest("cursor is not one this gateway gave") from None


async def list_page(
    store: Store, folder: str, cursor: str | None, limit: int, *, digest_keys: bool = True
) -> Page:
    """One page of the images under `folder`, newest first, starting after `cursor`."""
    manifests = await manifests_under(store, folder, digest_keys=digest_keys)
    if cursor is not None:
        modified, key = _after(cursor)
        manifests = [(r, o) for r, o in manifests if (-o.modified, o.key) > (-modified, key)]
    images: list[StoredImage] = []
    for index, (ref, obj) in enumerate(manifests):
        if len(images) == limit:
            return Page(images, _cursor(manifests[index - 1][1]))
        manifest = parse_manifest(await store.get(obj.key))
        if manifest is not None:  # deleted since the listing: not an image any more
            images.append(StoredImage(ref, obj.modified, manifest))
    return Page(images, None)
