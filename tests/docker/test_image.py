"""The image builds from the repository's Dockerfile, runs `uplodr` as a non-root user, and
carries nothing of the build: no CA bundle of this machine, no compilers, no uv, no caches."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.docker_engine import DockerEngine
from tests.support.docker_images import CA_FILE_IN_CONTEXT, EngineImages, _context_files
from tests.support.docker_worker import IMAGE_UID
from tests.support.paths import REPO

# Certificates this machine trusts beyond Debian's bundle (a TLS-intercepting proxy's CA).
LOCAL_CAS = Path("/usr/local/share/ca-certificates")
PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def test_the_image_is_configured_for_serve_and_worker(
    docker_engine: DockerEngine, docker_images: EngineImages
) -> None:
    with docker_engine.client() as client:
        config = client.images.get(docker_images.uplodr).attrs["Config"]
    assert config["User"] == "uplodr"
    assert config["Entrypoint"] == ["uplodr"]
    assert config["Cmd"] == ["serve"]
    assert "/healthz" in " ".join(config["Healthcheck"]["Test"])
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["MALLOC_ARENA_MAX"] == "2"  # the worker would re-exec itself without it
    assert env["MALLOC_MMAP_THRESHOLD_"] == "131072"
    assert env["UPLODR_HOST"] == "0.0.0.0" and env["UPLODR_PORT"] == "8080"
    assert not {"SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE"} & set(env)


def test_uplodr_runs_in_it_as_a_non_root_user(
    docker_engine: DockerEngine, docker_images: EngineImages
) -> None:
    with docker_engine.client() as client:
        version = client.containers.run(docker_images.uplodr, ["--version"], remove=True)
        ids = client.containers.run(
            docker_images.uplodr, ["-c", "id -u; id -g"], entrypoint="sh", remove=True
        )
    assert version.decode().startswith("uplodr, version ")
    assert ids.decode().split() == [str(IMAGE_UID), str(IMAGE_UID)]


def test_the_image_carries_nothing_of_the_build(
    docker_engine: DockerEngine, docker_images: EngineImages
) -> None:
    script = (
        "for f in /src /opt/uv /home/uplodr/.cache /root/.cache; do [ -e $f ] && echo $f; done;"
        "for p in gcc cc uv pip3; do command -v $p; done;"
        f"find / -xdev -name '{CA_FILE_IN_CONTEXT}*' 2>/dev/null; "
        "echo ---; cat /etc/ssl/certs/ca-certificates.crt"
    )
    with docker_engine.client() as client:
        output = client.containers.run(
            docker_images.uplodr, ["-c", script], entrypoint="sh", remove=True
        ).decode()
    leftovers, bundle = output.split("---\n", 1)
    assert leftovers.split() == []
    assert PEM.findall(bundle)  # Debian's CA bundle is there, for S3 over TLS ...
    local = [c for path in LOCAL_CAS.glob("*.crt") for c in PEM.findall(path.read_text())]
    assert not [cert for cert in local if cert in bundle]  # ... this machine's own CAs are not


def test_the_build_context_is_the_allow_list() -> None:
    files = _context_files(REPO)
    assert {"Dockerfile", "pyproject.toml", "uv.lock", "README.md"} <= set(files)
    assert "src/uplodr/cli/main.py" in files
    assert not [f for f in files if not f.startswith("src/") and "/" in f]
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]


def test_the_dockerfile_pins_the_same_uv_as_scripts() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    ensure_uv = (REPO / "scripts" / "ensure-uv").read_text()
    pinned = re.search(r"^UV_VERSION=(\S+)$", ensure_uv, re.M)
    assert pinned is not None
    assert f"ARG UV_VERSION={pinned.group(1)}\n" in dockerfile
