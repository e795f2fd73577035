"""The images the Docker tests run: a base made from Debian packages, and uplodr's image built
from the repository's own Dockerfile on top of it (`--build-arg BASE=<that base>`).

    images = ensure_images(engine)
    images.base, images.uplodr          # "uplodr-test-base:<hash>", "uplodr-test:<hash>"

Why: no image registry is reachable here, so the official `python:3.11-slim-bookworm` the
Dockerfile defaults to cannot be pulled. `debootstrap --variant=minbase` makes a Debian bookworm
root with python3 (3.11), its venv module and CA certificates (~75 s), trimmed of apt caches,
docs and locales (~130 MB); it is imported with the PATH/LANG the official image sets, so
the same Dockerfile builds on it unchanged. The build goes through the Engine API (docker SDK)
with the host's network for PyPI, and gets this machine's CA bundle as the optional build-context
file `build-ca.pem`, which only the build stage sees (the product image never contains it).

Cache (local runs): the base root as a tar and the built image as a `docker save` tar under
`var/docker/cache/`, each named by a hash of its inputs (base: suite, packages, recipe; image: the
base's hash, the build context's files, the build args), so a re-run imports or loads them in
seconds instead of paying debootstrap and the build again; a fresh clone (CI) pays once. With
UPLODR_TEST_DOCKER_KEEP=1 the engine's data root is kept too and both steps are skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
from docker.errors import BuildError, ImageNotFound
from docker.models.images import Image
from docker.utils.build import create_archive, exclude_paths

from tests.support.docker_engine import DockerEngine
from tests.support.docker_host import EngineUnavailable, program, unmount_all
from tests.support.paths import REPO

CACHE = REPO / "var" / "docker" / "cache"
SUITE = "bookworm"  # Python 3.11, as the official python:3.11-slim-bookworm
PACKAGES = ("python3", "python3-venv", "ca-certificates")
# What the official python image's config gives a Dockerfile built on it.
BASE_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
)
TRIM = (
    "var/cache/apt/archives",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/locale",
    "usr/share/info",
)
BASE_RECIPE = 1  # bump when the steps below change what the base contains
DEFAULT_MIRROR = "http://deb.debian.org/debian"
CA_FILE_IN_CONTEXT = "build-ca.pem"
BASE_REPO, IMAGE_REPO = "uplodr-test-base", "uplodr-test"


@dataclass
class EngineImages:
    """Tags of the two images in the engine, and how long getting each took (and how)."""

    base: str
    uplodr: str
    seconds: dict[str, float] = field(default_factory=dict)
    how: dict[str, str] = field(default_factory=dict)


def _hash(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()[:16]


# -- the base ------------------------------------------------------------------------------------


def _source_entries() -> Iterator[tuple[str, list[str]]]:
    """(URI, suites) of the `deb` entries in /etc/apt/sources.list(.d), one-line and deb822."""
    folder = Path("/etc/apt")
    one_line = [folder / "sources.list", *sorted((folder / "sources.list.d").glob("*.list"))]
    for path in one_line:
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb":
                    yield words[1], [words[2]]
    for path in sorted((folder / "sources.list.d").glob("*.sources")):
        with contextlib.suppress(OSError):
            for stanza in re.split(r"\n\s*\n", path.read_text()):
                fields = dict(
                    (key.strip().lower(), value.strip())
                    for key, _, value in (
                        line.partition(":") for line in stanza.splitlines() if ":" in line
                    )
                    if not key.startswith("#")
                )
                if "deb" in fields.get("types", "").split() and fields.get("enabled") != "no":
                    for uri in fields.get("uris", "").split():
                        yield uri, fields.get("suites", "").split()


def debian_mirror() -> str:
    """This machine's Debian archive (not its security archive), or deb.debian.org."""
    for uri, suites in _source_entries():
        if any(s == SUITE or s.startswith(f"{SUITE}-") for s in suites) and "security" not in uri:
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def base_key() -> str:
    return _hash(SUITE, *PACKAGES, *BASE_CHANGES, *TRIM, str(BASE_RECIPE))


def make_base_tar(dest: Path, mirror: str) -> None:
    """debootstrap a minimal bookworm with PACKAGES, trim it and tar it to `dest`."""
    debootstrap = program("debootstrap")
    if debootstrap is None:
        raise EngineUnavailable("debootstrap is not installed (scripts/test installs it)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="base-", dir=dest.parent) as tmp:
        root, log = Path(tmp) / "root", Path(tmp) / "debootstrap.log"
        command = [debootstrap, "--variant=minbase", f"--include={','.join(PACKAGES)}"]
        command += [SUITE, str(root), mirror]
        try:
            with log.open("wb") as out:
                done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
        finally:  # an interrupted debootstrap leaves /proc and /sys mounted in the root
            unmount_all(root)
        if done.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise EngineUnavailable(f"debootstrap failed ({done.returncode}):\n{tail}")
        for part in TRIM:
            for entry in (root / part).glob("*"):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        partial = _partial(dest)
        tar = ["tar", "--numeric-owner", "-C", str(root), "-cf", str(partial), "."]
        subprocess.run(tar, check=True)
        partial.rename(dest)


def ensure_base(client: docker.DockerClient, images: EngineImages) -> None:
    key = base_key()
    images.base = f"{BASE_REPO}:{key}"
    started = time.monotonic()
    if _has_image(client, images.base):
        images.how["base"] = "already in the engine"
    else:
        tar = CACHE / f"base-{key}.tar"
        images.how["base"] = "imported from var/docker/cache"
        if not tar.exists():
            make_base_tar(tar, debian_mirror())
            _prune(CACHE.glob("base-*.tar"), keep=tar)
            images.how["base"] = "debootstrap, then imported"
        client.api.import_image(
            src=str(tar), repository=BASE_REPO, tag=key, changes=list(BASE_CHANGES)
        )
    images.seconds["base"] = time.monotonic() - started


# -- the uplodr image ---------------------------------------------------------------------------


def _context_files(repo: Path) -> list[str]:
    """The files `docker build` would send: the repository filtered by its .dockerignore."""
    patterns = [
        line.strip()
        for line in (repo / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    included = exclude_paths(str(repo), patterns)
    return sorted(p for p in included if (repo / p).is_file() and p != CA_FILE_IN_CONTEXT)


def ca_bundle() -> str | None:
    """This machine's CA bundle (it may include a TLS-intercepting proxy's CA) for the build."""
    for candidate in (os.environ.get("SSL_CERT_FILE"), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate).read_text()
    return None


def build_context(repo: Path = REPO) -> tuple[bytes, str]:
    """The build context as a tar (with this machine's CA bundle as build-ca.pem) and a hash
    of what decides the image: every context file (not the CA bundle)."""
    files = _context_files(repo)
    key = _hash(*(part for name in files for part in (name, (repo / name).read_bytes())))
    ca = ca_bundle()
    extra = [(CA_FILE_IN_CONTEXT, ca)] if ca else None
    archive = create_archive(str(repo), files=files, extra_files=extra)
    with contextlib.closing(archive):
        return archive.read(-1), key


def ensure_uplodr_image(client: docker.DockerClient, images: EngineImages) -> None:
    context, context_key = build_context()
    buildargs = {"BASE": images.base}
    key = _hash(context_key, *sorted(f"{k}={v}" for k, v in buildargs.items()))
    images.uplodr = f"{IMAGE_REPO}:{key}"
    started = time.monotonic()
    tar = CACHE / f"uplodr-{key}.tar"
    if _has_image(client, images.uplodr):
        images.how["uplodr"] = "already in the engine"
    elif tar.exists():
        with tar.open("rb") as data:
            client.images.load(data)
        images.how["uplodr"] = "loaded from var/docker/cache"
    else:
        try:
            image, _logs = client.images.build(
                fileobj=io.BytesIO(context),
                custom_context=True,
                tag=images.uplodr,
                buildargs=buildargs,
                network_mode="host",  # RUN steps reach PyPI; the engine's bridge has no NAT
                rm=True,
                forcerm=True,
                pull=False,
            )
        except BuildError as error:
            lines = "".join(
                str(part.get("stream") or part.get("error") or "") for part in error.build_log
            )
            tail = "\n".join(lines.splitlines()[-25:])
            raise EngineUnavailable(f"docker build failed: {error.msg}\n{tail}") from None
        images.seconds["build"] = time.monotonic() - started
        _save(image, tar)
        _prune(CACHE.glob("uplodr-*.tar"), keep=tar)
        images.how["uplodr"] = "built from the Dockerfile"
    images.seconds["uplodr"] = time.monotonic() - started


def ensure_images(engine: DockerEngine) -> EngineImages:
    """Both images in `engine`, from its own store, the cache, or made now."""
    images = EngineImages(base="", uplodr="")
    with engine.client(timeout=600) as client:
        ensure_base(client, images)
        ensure_uplodr_image(client, images)
    return images


# -- helpers -------------------------------------------------------------------------------------


def _has_image(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
    except ImageNotFound:
        return False
    return True


def _save(image: Image, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial(dest)
    with partial.open("wb") as out:
        for chunk in image.save(named=True):
            out.write(chunk)
    partial.rename(dest)


def _partial(dest: Path) -> Path:
    """Where `dest` is written before it is renamed into place (one per writer)."""
    return dest.with_name(f"{dest.name}.{os.getpid()}.partial")


def _prune(paths: Iterable[Path], keep: Path) -> None:
    """Older cache entries of the same kind: only the current one is worth its disk space."""
    for path in paths:
        if path != keep:
            path.unlink(missing_ok=True)
