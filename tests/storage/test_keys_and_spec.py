from __future__ import annotations

from pathlib import Path

import pytest

from uplodr.errors import StorageUnavailable
from uplodr.storage import LocalStore, S3Store, open_store
from uplodr.storage.keys import content_digest, manifest_key, variant_key


def test_digest_is_short_stable_and_depends_on_both_inputs() -> None:
    a = content_digest("ab" * 32, "p1")
    assert a == content_digest("AB" * 32, "p1")
    assert len(a) == 16 and int(a, 16) >= 0
    assert a != content_digest("ab" * 32, "p2")
    assert a != content_digest("cd" * 32, "p1")


def test_keys() -> None:
    assert variant_key("blog/2024", "cat", "0123abcd", "", "webp") == "blog/2024/cat-0123abcd.webp"
    assert variant_key("blog", "cat", "0123abcd", "-thumb", "png") == "blog/cat-0123abcd-thumb.png"
    assert variant_key("blog", "cat", None, "", "jpg") == "blog/cat.jpg"
    assert variant_key("", "cat", None, "-thumb", "png") == "cat-thumb.png"
    assert manifest_key("", "cat", "0123abcd") == "cat-0123abcd.json"
    assert manifest_key("a/b", "cat", None) == "a/b/cat.json"


def test_open_store_picks_the_kind(tmp_path: Path) -> None:
    env = {
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9",
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
    }
    s3 = open_store("s3://media/uploads/", None, env)
    assert isinstance(s3, S3Store)
    assert s3.description == "s3://media/uploads"
    assert s3.url("a b/c.webp") == "http://127.0.0.1:9/media/uploads/a%20b/c.webp"
    cdn = open_store("s3://media", "https://cdn.example.com/{key}", env)
    assert cdn.url("x/y.avif") == "https://cdn.example.com/x/y.avif"
    for spec in (f"file://{tmp_path}", str(tmp_path)):
        local = open_store(spec, "http://h/files/{key}", {})
        assert isinstance(local, LocalStore)
        assert local.root == tmp_path.resolve()
    with pytest.raises(ValueError):
        open_store("gs://bucket", None, {})
    with pytest.raises(ValueError):
        open_store("s3://", None, {})
    with pytest.raises(StorageUnavailable, match="AWS_SECRET_ACCESS_KEY"):
        open_store("s3://media", None, {"AWS_ACCESS_KEY_ID": "k"})


def test_virtual_hosted_option() -> None:
    env = {
        "AWS_ENDPOINT_URL": "https://fly.storage.tigris.dev",
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "true",
    }
    store = open_store("s3://media", None, env)
    assert store.url("k.webp") == "https://media.fly.storage.tigris.dev/k.webp"
