"""The local store's files over HTTP (GET /files/{key}), with the `Cache-Control` an S3 store
gives the same objects (docs/storage.md): a variant or a kept original is immutable — its URL
names its bytes — and a manifest is revalidated (`no-cache`). Without it a browser or a CDN in
front of a local-store gateway guessed, and fetched the same variant again on every page view."""

from __future__ import annotations

import os

from starlette.responses import Response
from starlette.staticfiles import PathLike, StaticFiles
from starlette.types import Scope

from uplodr.storage.base import IMMUTABLE_CACHE_CONTROL, MANIFEST_CACHE_CONTROL
from uplodr.storage.keys import MANIFEST_EXT


def cache_control(path: str) -> str:
    """What publishing gave the object at this path (uplodr.storage.publish)."""
    return MANIFEST_CACHE_CONTROL if path.endswith(f".{MANIFEST_EXT}") else IMMUTABLE_CACHE_CONTROL


class StoreFiles(StaticFiles):
    def file_response(
        self, full_path: PathLike, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["cache-control"] = cache_control(os.fspath(full_path))
        return response
