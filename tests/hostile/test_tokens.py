"""Who may do what, through a real gateway: a token from the tokens file writes only under its
folder prefixes (403 in one line elsewhere), `UPLODR_TOKENS` still works everywhere, `/metrics`
needs a token once tokens are set (and only the metrics token when one is given), and a
token's name — never its secret — is what the log and the metrics say."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import Gateway, running_gateway
from tests.support.paths import corpus_file
from tests.support.procs import free_port
from uplodr.client import Client, Forbidden, Unauthenticated
from uplodr.gateway.tokens import TokensError, load_tokens_file

BLOG = secrets.token_urlsafe(32)
SHOP = secrets.token_urlsafe(32)
OLD = secrets.token_urlsafe(32)  # an UPLODR_TOKENS token
METRICS = secrets.token_urlsafe(32)
PHOTO = "Landscape_6.jpg"


def sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def tokens_toml(path: Path) -> Path:
    path.write_text(
        "[[tokens]]\n"
        'name = "blog"\n'
        f'sha256 = "{sha256(BLOG)}"\n'
        'prefixes = ["blog/"]\n'
        "max_in_flight = 2\n"
        "\n"
        "[[tokens]]\n"
        'name = "shop"\n'
        f'sha256 = "{sha256(SHOP)}"\n'
        'prefixes = ["shop/", "shared"]\n'
    )
    return path


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("tokens")
    tokens = tokens_toml(root / "tokens.toml")
    with running_gateway(root, "--tokens-file", str(tokens), env={"UPLODR_TOKENS": OLD}) as running:
        yield running
        assert running.workers() == []
        assert running.machine_records() == []


def upload(gateway: Gateway, secret: str | None, folder: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {secret}"} if secret else {}
    return httpx.post(
        f"{gateway.url}/v1/images",
        params={"name": PHOTO, "folder": folder},
        content=corpus_file(PHOTO).read_bytes(),
        headers=headers,
        timeout=120,
    )


def test_a_token_bound_to_blog_writes_under_blog_and_nowhere_else(gateway: Gateway) -> None:
    refused = upload(gateway, BLOG, "shop")
    assert refused.status_code == 403
    body = refused.json()
    assert body == {
        "error": "token 'blog' may not write to 'shop'; only under blog/",
        "code": "forbidden",
    }
    # a prefix is a folder: blog/ does not open blogger/
    assert upload(gateway, BLOG, "blogger").status_code == 403
    written = upload(gateway, BLOG, "blog/2026")
    assert written.status_code == 200, written.text
    assert all("/blog/2026/" in v["url"] for v in written.json()["variants"])
    # the other token's prefixes are its own; UPLODR_TOKENS tokens write everywhere
    assert upload(gateway, SHOP, "shared/x").status_code == 200
    assert upload(gateway, SHOP, "blog").status_code == 403
    assert upload(gateway, OLD, "anywhere").status_code == 200
    # no token, or a wrong one: 401 before anything else
    assert upload(gateway, None, "blog").status_code == 401
    assert upload(gateway, secrets.token_urlsafe(32), "blog").status_code == 401


def test_the_python_client_raises_the_typed_errors(gateway: Gateway) -> None:
    photo = corpus_file(PHOTO)
    with Client(gateway.url, token=BLOG) as client, pytest.raises(Forbidden) as refused:
        client.convert(photo, folder="shop")
    assert refused.value.status == 403 and refused.value.code == "forbidden"
    with Client(gateway.url) as client, pytest.raises(Unauthenticated):
        client.convert(photo, folder="blog")


def test_metrics_need_a_token_and_name_tokens_never_their_secrets(gateway: Gateway) -> None:
    # its own refused and answered uploads: the module's other tests may run in another process
    assert upload(gateway, BLOG, "shop").status_code == 403
    written = upload(gateway, BLOG, "blog/2026")
    assert written.status_code == 200, written.text
    assert httpx.get(f"{gateway.url}/metrics").status_code == 401
    denied = httpx.get(f"{gateway.url}/metrics", headers={"authorization": "Bearer nope"})
    assert denied.status_code == 401 and denied.json()["code"] == "unauthenticated"
    ok = httpx.get(f"{gateway.url}/metrics", headers={"authorization": f"Bearer {SHOP}"})
    assert ok.status_code == 200
    assert 'uplodr_token_uploads_total{code="forbidden",token="blog"}' in ok.text
    assert 'uplodr_token_uploads_total{code="ok",token="blog"}' in ok.text
    # health, readiness and the document stay open (load balancers have no token)
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert httpx.get(f"{gateway.url}{path}").status_code == 200, path
    log = gateway.log_text()
    assert "upload refused (token blog): token 'blog' may not write to 'shop'" in log
    assert f"upload {PHOTO} in 'blog/2026' by token blog: answered" in log
    for secret in (BLOG, SHOP, OLD):
        assert secret not in log and secret not in ok.text
        assert sha256(secret) not in log and sha256(secret) not in ok.text


def test_with_a_metrics_token_only_it_reads_metrics(tmp_path: Path) -> None:
    tokens = tokens_toml(tmp_path / "tokens.toml")
    with running_gateway(
        tmp_path / "gw",
        "--tokens-file",
        str(tokens),
        env={"UPLODR_METRICS_TOKEN": METRICS},
    ) as gw:

        def metrics(secret: str | None) -> httpx.Response:
            headers = {"authorization": f"Bearer {secret}"} if secret else {}
            return httpx.get(f"{gw.url}/metrics", headers=headers)

        assert metrics(None).status_code == 401
        upload_token = metrics(BLOG)
        assert upload_token.status_code == 403
        assert upload_token.json()["code"] == "forbidden"
        assert metrics(METRICS).status_code == 200
        # the metrics token is not an upload token
        assert upload(gw, METRICS, "blog").status_code == 401
    assert METRICS not in gw.log_text()


def test_a_metrics_token_alone_guards_metrics_and_leaves_uploads_open(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "UPLODR_TOKENS"}
    with running_gateway(tmp_path / "gw", env={**env, "UPLODR_METRICS_TOKEN": METRICS}) as gw:
        assert httpx.get(f"{gw.url}/metrics").status_code == 401
        ok = httpx.get(f"{gw.url}/metrics", headers={"authorization": f"Bearer {METRICS}"})
        assert ok.status_code == 200
        doc = httpx.get(f"{gw.url}/openapi.json").json()
        assert doc["paths"]["/metrics"]["get"]["security"] == [{"bearer": []}]
        assert "security" not in doc["paths"]["/v1/images"]["post"]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ('[[tokens]]\nname = "a b"\nsha256 = "00"\nprefixes = [""]\n', "name 'a b' must be"),
        ('[[tokens]]\nname = "a"\nsha256 = "00"\nprefixes = [""]\n', "(a): sha256 must be"),
        (
            f'[[tokens]]\nname = "a"\nsha256 = "{"0" * 64}"\nprefixes = ["../up"]\n',
            "prefix '../up'",
        ),
        (f'[[tokens]]\nname = "a"\nsha256 = "{"0" * 64}"\nprefixes = []\n', "prefixes is empty"),
        ('[[tokens]]\nname = "a"\nsecret = "plain"\n', "tokens file"),
    ],
)
def test_a_bad_tokens_file_stops_serve_in_one_line(
    tmp_path: Path, content: str, words: str
) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(content)
    with pytest.raises(TokensError, match="tokens file"):
        load_tokens_file(path)
    done = subprocess.run(
        [
            *(sys.executable, "-m", "uplodr", "serve", "--port", str(free_port())),
            *("--tokens-file", str(path), "--store", str(tmp_path / "store")),
            *("--state-dir", str(tmp_path / "state")),
        ],
        env={**os.environ, "UPLODR_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("uplodr serve: tokens file"), done.stderr
    assert words in lines[0]


def test_the_same_file_as_json_and_uplodr_token_makes_an_entry(tmp_path: Path) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "uplodr", "token", "blog", "--prefix", "blog/"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    secret = made.stdout.strip()
    assert len(secret) >= 43  # 256 bits, URL-safe base64
    toml = tmp_path / "made.toml"
    toml.write_text(made.stderr)
    (token,) = load_tokens_file(toml)
    assert token.name == "blog" and token.prefixes == ("blog",)
    assert token.digest == hashlib.sha256(secret.encode()).digest()
    assert secret not in made.stderr
    as_json = tmp_path / "tokens.json"
    as_json.write_text(
        json.dumps({"tokens": [{"name": "blog", "sha256": sha256(BLOG), "prefixes": ["blog/"]}]})
    )
    (from_json,) = load_tokens_file(as_json)
    assert from_json.may_write("blog/2026") and not from_json.may_write("shop")


def test_a_token_bound_to_blog_reads_lists_and_deletes_only_under_blog(gateway: Gateway) -> None:
    """The images after their upload keep to the same prefixes: a `blog/` token cannot read,
    list or delete under `shop/`; a delete token is the image's own and nothing more."""
    blog = upload(gateway, BLOG, "blog/erase").json()
    shop = upload(gateway, SHOP, "shop/erase").json()

    def call(method: str, path: str, secret: str | None, **params: str) -> httpx.Response:
        headers = {"authorization": f"Bearer {secret}"} if secret else {}
        return httpx.request(
            method, f"{gateway.url}{path}", params=params, headers=headers, timeout=60
        )

    shop_path = f"/v1/images/{shop['id']}"
    assert call("GET", shop_path, BLOG).status_code == 403
    assert call("GET", "/v1/images", BLOG, folder="shop").status_code == 403
    assert call("GET", "/v1/images", BLOG).status_code == 403  # the root holds shop/ too
    assert call("GET", shop_path, None).status_code == 401
    refused = call("DELETE", shop_path, BLOG)
    assert refused.status_code == 403, refused.text
    assert refused.json() == {
        "error": "token 'blog' may not delete in 'shop/erase'; only under blog/",
        "code": "forbidden",
    }
    # blog's delete token is no credential for shop's image, even with a token beside it
    stolen = httpx.delete(
        f"{gateway.url}{shop_path}",
        headers={"Uplodr-Delete-Token": blog["delete_token"]},
        timeout=60,
    )
    assert stolen.status_code == 401
    assert call("GET", shop_path, SHOP).status_code == 200

    listed = call("GET", "/v1/images", BLOG, folder="blog/erase").json()
    assert [image["id"] for image in listed["images"]] == [blog["id"]]
    assert call("GET", "/v1/images", OLD).status_code == 200  # allowed everywhere
    assert call("DELETE", f"/v1/images/{blog['id']}", BLOG).status_code == 204
    # the image's own delete token works on a gateway with tokens, with no bearer token
    own = httpx.delete(
        f"{gateway.url}{shop_path}",
        headers={"Uplodr-Delete-Token": shop["delete_token"]},
        timeout=60,
    )
    assert own.status_code == 204, own.text
    assert call("GET", shop_path, SHOP).status_code == 404
    log = gateway.log_text()
    assert f"image {blog['id']} in 'blog/erase' deleted (by token blog)" in log
    assert blog["delete_token"] not in log and shop["delete_token"] not in log
