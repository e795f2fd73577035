"""From a `--store` value to a Store, and the environment a worker needs to open the same store.

s3://BUCKET[/PREFIX]      S3Store; endpoint, credentials, region from AWS_* variables
file:///srv/uplodr       LocalStore
./var/files              LocalStore (a plain path)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

from uplodr.storage.base import Store
from uplodr.storage.local import LocalStore
from uplodr.storage.s3 import S3Store

# The only variables an S3 store reads; a worker gets these and nothing else of the gateway's.
S3_ENV_VARS = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
    "UPLODR_STORAGE_DEADLINE",
)
DEFAULT_LOCAL_PUBLIC_URL = "http://127.0.0.1:8080/files/{key}"


def parse_s3(spec: str) -> tuple[str, str] | None:
    """(bucket, prefix) for `s3://BUCKET[/PREFIX]`, None for anything else."""
    if not spec.startswith("s3://"):
        return None
    bucket, _, prefix = spec.removeprefix("s3://").partition("/")
    if not bucket:
        raise ValueError(f"store {spec!r}: expected s3://BUCKET[/PREFIX]")
    return bucket, prefix.strip("/")


def local_root(spec: str) -> Path:
    if spec.startswith("file://"):
        parts = urlsplit(spec)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"store {spec!r}: file URLs must be local (file:///dir)")
        return Path(unquote(parts.path))
    if "://" in spec:
        raise ValueError(f"store {spec!r}: use s3://BUCKET[/PREFIX], file:///dir or a path")
    return Path(spec)


def open_store(spec: str, public_url: str | None, env: Mapping[str, str]) -> Store:
    """The store a `--store` value names. `public_url` is a `{key}` template (None: default)."""
    s3 = parse_s3(spec)
    if s3 is not None:
        bucket, prefix = s3
        return S3Store.from_env(bucket, prefix, env, public_url=public_url)
    return LocalStore(local_root(spec), public_url or DEFAULT_LOCAL_PUBLIC_URL)
