"""A real single-node OpenStack Swift with the s3api middleware, started by the tests themselves.

Why Swift: it is a real, persistent object store whose s3api checks SigV4 signatures like a cloud
does (moto accepts wrong secrets). Swift and its dependencies (eventlet, pyeclib, lxml...) live in
their own virtualenv, made by `scripts/setup-swift` from the pinned
`tests/support/swift/requirements.txt`, so they never touch the project's own environment.

Layout of one server (everything under one temp directory, removed by `stop()`):
    etc/      swift.conf, one config per server, one-replica rings (swift_dir)
    node/d1/  the single "device"; its filesystem must support user xattrs
    log/      one log file per server (stdout + stderr of the process)

The account, container and object servers and the proxy (s3api + tempauth) listen on free
loopback ports. tempauth issues fernet tokens so no memcached is needed. `stop_proxy()` /
`start_proxy()` take the S3 endpoint away and bring it back on the same port, for outage tests.

Usage:
    server = SwiftServer()
    server.start()
    server.create_bucket("media")          # public-read: anonymous GET of /v1/AUTH_test/media/KEY
    env = server.s3_env()                  # AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, ...
    ...
    server.stop()
"""

from __future__ import annotations

import base64
import contextlib
import getpass
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from tests.support.procs import free_port
from tests.support.spawn import spawn_server

REPO_ROOT = Path(__file__).resolve().parents[2]
SETUP_SCRIPT = REPO_ROOT / "scripts" / "setup-swift"
# Where scripts/setup-swift puts the virtualenv (override: UPLODR_SWIFT_VENV).
DEFAULT_VENV = REPO_ROOT / "var" / "swift-venv"

ACCESS_KEY = "test:tester"
SECRET_KEY = "testing"
REGION = "us-east-1"
ACCOUNT = "AUTH_test"

SERVERS = ("account", "container", "object")
READY_DEADLINE_S = 60.0


def swift_bin_dir(install: bool = True) -> Path:
    """The bin/ folder of the Swift virtualenv; runs scripts/setup-swift first when it is missing
    (and `install` is true), so a fresh checkout needs no manual step."""
    venv = Path(os.environ.get("UPLODR_SWIFT_VENV", DEFAULT_VENV))
    bin_dir = venv / "bin"
    if not (bin_dir / "swift-proxy-server").exists():
        if not install:
            raise RuntimeError(f"Swift is not installed in {venv}: run scripts/setup-swift")
        subprocess.run([str(SETUP_SCRIPT)], check=True, env={**os.environ, "SWIFT_VENV": str(venv)})
    return bin_dir


def supports_xattrs(path: Path) -> bool:
    probe = path / ".xattr-probe"
    try:
        probe.write_bytes(b"")
        os.setxattr(probe, "user.uplodr", b"1")
        return os.getxattr(probe, "user.uplodr") == b"1"
    except OSError:
        return False
    finally:
        probe.unlink(missing_ok=True)


def make_base_dir() -> Path:
    """A fresh directory on a filesystem with xattrs: the system temp dir, else the repo's var/."""
    for parent in (Path(tempfile.gettempdir()), REPO_ROOT / "var"):
        parent.mkdir(parents=True, exist_ok=True)
        if supports_xattrs(parent):
            return Path(tempfile.mkdtemp(prefix="uplodr-swift-", dir=parent))
    raise RuntimeError("no filesystem with user xattrs found (Swift needs them)")


SWIFT_CONF = """\
[swift-hash]
swift_hash_path_prefix = uplodr-test
swift_hash_path_suffix = uplodr-test

[storage-policy:0]
name = gold
default = yes
"""

STORAGE_SERVER_CONF = """\
[DEFAULT]
devices = {devices}
mount_check = false
bind_ip = 127.0.0.1
bind_port = {port}
workers = 0
user = {user}
swift_dir = {swift_dir}
log_level = WARNING
# The object server waits this long for the container listing to take a new object before it
# answers (default 1 s, then the update is left to an updater daemon these tests do not run):
# tests list buckets right after writing, also on a loaded machine.
container_update_timeout = 30

[pipeline:main]
pipeline = {kind}-server

[app:{kind}-server]
use = egg:swift#{kind}
"""

# No versioned_writes, no memcache (tempauth hands out fernet tokens instead).
PROXY_CONF = """\
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = {port}
workers = 0
user = {user}
swift_dir = {swift_dir}
log_level = WARNING

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging listing_formats s3api tempauth \
copy slo dlo proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
allow_account_management = true
account_autocreate = true

[filter:s3api]
use = egg:swift#s3api
location = {region}

[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = testing .admin
user_test_canary = {canary_secret} .admin
fernet_key_k1 = {fernet_key}
active_fernet_key_id = k1

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:copy]
use = egg:swift#copy

[filter:slo]
use = egg:swift#slo

[filter:dlo]
use = egg:swift#dlo
"""


RING_SCRIPT = """
import ast, sys
from swift.common.ring import RingBuilder
etc, devices = sys.argv[1], ast.literal_eval(sys.argv[2])
for kind, port in devices.items():
    builder = RingBuilder(6, 1, 1)  # part power 6, 1 replica, min_part_hours 1
    builder.add_dev({"id": 0, "region": 1, "zone": 1, "ip": "127.0.0.1", "port": port,
                     "device": "d1", "weight": 1.0})
    builder.rebalance()
    builder.save(f"{etc}/{kind}.builder")
    builder.get_ring().save(f"{etc}/{kind}.ring.gz")
"""


@dataclass
class SwiftServer:
    """One single-node Swift (account, container, object servers and an s3api proxy)."""

    base_dir: Path | None = None
    ports: dict[str, int] = field(default_factory=dict)
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: dict[str, IO[bytes]] = field(default_factory=dict)
    _bin: Path | None = None
    _owns_base_dir: bool = False
    _token: str | None = None
    # a second user of the same account, with a secret no log line could hold by chance
    # (the first one's is the word "testing"): for tests that look for secrets in logs
    canary_secret: str = field(default_factory=lambda: f"canary-{secrets.token_hex(20)}")

    # -- what a test needs -------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['proxy']}"

    @property
    def access_key(self) -> str:
        return ACCESS_KEY

    @property
    def secret_key(self) -> str:
        return SECRET_KEY

    @property
    def region(self) -> str:
        return REGION

    def s3_env(self, **overrides: str) -> dict[str, str]:
        """The variables Tigris sets on Fly, pointing at this server."""
        env = {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
        }
        env.update(overrides)
        return env

    def canary_env(self, **overrides: str) -> dict[str, str]:
        """`s3_env` with the canary user's credentials (a random secret, see `canary_secret`)."""
        canary = {"AWS_ACCESS_KEY_ID": "test:canary", "AWS_SECRET_ACCESS_KEY": self.canary_secret}
        return self.s3_env(**{**canary, **overrides})

    def public_url(self, bucket: str) -> str:
        """A `{key}` template for anonymous reads through Swift's own API (public-read bucket)."""
        return f"{self.endpoint}/v1/{ACCOUNT}/{bucket}/{{key}}"

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._bin = swift_bin_dir()
        if self.base_dir is None:
            self.base_dir = make_base_dir()
            self._owns_base_dir = True
        for name in (*SERVERS, "proxy"):
            self.ports.setdefault(name, free_port(for_good=True))
        self._write_configs()
        self._build_rings()
        try:
            for kind in SERVERS:
                self._spawn(kind)
            self._spawn("proxy")
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every server and remove the data directory (when this object made it)."""
        for name in list(self._procs):
            self._terminate(name)
        for log in self._logs.values():
            log.close()
        self._logs.clear()
        if self._owns_base_dir and self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None
            self._owns_base_dir = False

    def stop_proxy(self) -> None:
        """Take the S3 endpoint away (connections are refused); data stays."""
        self._terminate("proxy")

    def start_proxy(self) -> None:
        """Bring the S3 endpoint back on the same port and wait until it answers."""
        if "proxy" not in self._procs:
            self._spawn("proxy")
        self._wait_ready()

    def restart(self) -> None:
        self.stop_proxy()
        self.start_proxy()

    @contextlib.contextmanager
    def proxy_stopped(self) -> Iterator[None]:
        self.stop_proxy()
        try:
            yield
        finally:
            self.start_proxy()

    def log_text(self, name: str = "proxy") -> str:
        assert self.base_dir is not None
        path = self.base_dir / "log" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- buckets (through Swift's own API: containers are buckets) ---------------------------

    def create_bucket(self, name: str, public_read: bool = True) -> None:
        """Create a bucket; public-read is what s3api's `x-amz-acl: public-read` maps to."""
        headers = {"X-Container-Read": ".r:*,.rlistings"} if public_read else {}
        response = self._swift("PUT", name, headers=headers)
        if response.status_code not in (201, 202):
            raise RuntimeError(f"create bucket {name}: HTTP {response.status_code}")

    def list_keys(self, bucket: str) -> list[str]:
        """Every object in a bucket (including anything a failed job left behind)."""
        names: list[str] = []
        marker = ""
        while True:
            response = self._swift("GET", bucket, params={"format": "json", "marker": marker})
            response.raise_for_status()
            page = [str(item["name"]) for item in response.json()]
            if not page:
                return names
            names.extend(page)
            marker = page[-1]

    def empty_bucket(self, bucket: str) -> None:
        for key in self.list_keys(bucket):
            self._swift("DELETE", f"{bucket}/{key}")

    def anonymous_get(self, bucket: str, key: str) -> httpx.Response:
        return httpx.get(f"{self.endpoint}/v1/{ACCOUNT}/{bucket}/{key}", timeout=10)

    # -- internals ---------------------------------------------------------------------------

    def _swift(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        if self._token is None:
            auth = httpx.get(
                f"{self.endpoint}/auth/v1.0",
                headers={"X-Auth-User": ACCESS_KEY, "X-Auth-Key": SECRET_KEY},
                timeout=10,
            )
            auth.raise_for_status()
            self._token = auth.headers["X-Auth-Token"]
        return httpx.request(
            method,
            f"{self.endpoint}/v1/{ACCOUNT}/{path}",
            headers={"X-Auth-Token": self._token, **(headers or {})},
            params=params,
            timeout=10,
        )

    def _dirs(self) -> tuple[Path, Path, Path]:
        assert self.base_dir is not None
        return self.base_dir / "etc", self.base_dir / "node", self.base_dir / "log"

    def _write_configs(self) -> None:
        etc, node, log = self._dirs()
        for folder in (etc, node / "d1", log):
            folder.mkdir(parents=True, exist_ok=True)
        user = getpass.getuser()
        (etc / "swift.conf").write_text(SWIFT_CONF)
        for kind in SERVERS:
            (etc / f"{kind}-server.conf").write_text(
                STORAGE_SERVER_CONF.format(
                    devices=node, port=self.ports[kind], user=user, swift_dir=etc, kind=kind
                )
            )
        fernet_key = base64.urlsafe_b64encode(os.urandom(32)).decode()
        (etc / "proxy-server.conf").write_text(
            PROXY_CONF.format(
                port=self.ports["proxy"],
                user=user,
                swift_dir=etc,
                region=REGION,
                fernet_key=fernet_key,
                canary_secret=self.canary_secret,
            )
        )

    def _build_rings(self) -> None:
        """One-replica rings, one device each. Built with swift's RingBuilder (the library behind
        swift-ring-builder) in one process: nine swift-ring-builder runs cost ~13 s of imports."""
        assert self._bin is not None
        etc, _, _ = self._dirs()
        devices = {kind: self.ports[kind] for kind in SERVERS}
        subprocess.run(
            [str(self._bin / "python"), "-c", RING_SCRIPT, str(etc), repr(devices)],
            check=True,
            capture_output=True,
        )

    def _spawn(self, name: str) -> None:
        assert self._bin is not None
        etc, _, log_dir = self._dirs()
        conf = etc / f"{name}-server.conf"
        log = self._logs.get(name) or open(log_dir / f"{name}.log", "ab")  # noqa: SIM115
        self._logs[name] = log
        # A killed test run leaves no server behind (tests/support/spawn.py).
        self._procs[name] = spawn_server(
            [str(self._bin / f"swift-{name}-server"), str(conf), "-v"],
            log,
            env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        )

    def _terminate(self, name: str) -> None:
        proc = self._procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def _wait_ready(self) -> None:
        """Poll real requests until a container and an object can be written, or fail."""
        deadline = time.monotonic() + READY_DEADLINE_S
        last = "no answer yet"
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"swift {name} server exited ({proc.returncode}):\n{self.log_text(name)}"
                    )
            try:
                self._token = None
                if self._swift("PUT", "uplodr-ready").status_code in (201, 202):
                    put = self._swift("PUT", "uplodr-ready/probe")
                    if put.status_code == 201:
                        self._swift("DELETE", "uplodr-ready/probe")
                        self._swift("DELETE", "uplodr-ready")
                        return
                    last = f"object PUT answered {put.status_code}"
                else:
                    last = "container PUT failed"
            except httpx.HTTPError as error:
                last = f"{type(error).__name__}: {error}"
            time.sleep(0.1)
        raise RuntimeError(f"swift did not become ready in {READY_DEADLINE_S:.0f} s ({last})")


if __name__ == "__main__":  # pragma: no cover - manual smoke run: python -m tests.support.swift
    server = SwiftServer()
    server.start()
    print("swift ready at", server.endpoint, "base", server.base_dir, file=sys.stderr)
    server.create_bucket("smoke")
    print(server.list_keys("smoke"))
    server.stop()
