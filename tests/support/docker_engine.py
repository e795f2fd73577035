"""A private Docker engine for the tests: its own dockerd, socket, state, bridge and cgroups.

    engine = DockerEngine()
    engine.start()                      # < 1 s; raises EngineUnavailable with one line if it can't
    engine.docker_host                  # "unix:///tmp/uplodr-dockerd-…/docker.sock" (DOCKER_HOST)
    engine.host_ip                      # the bridge's address on this host: containers reach
                                        # host services there (bind them to it, or to 0.0.0.0)
    with engine.client() as client:     # a docker SDK client of this engine only
        ...
    engine.stop()                       # containers, dockerd, mounts, bridge, cgroups, files

Why it looks like this:
- It never touches a system dockerd, its socket or `docker0`: every path is its own (data root,
  exec root, pidfile, unix socket, config file), and containers attach to a bridge it creates
  itself (`uplodr-brN`, 10.213.N.0/24, N free on this host; the name is the lock between engines
  started at the same time).
- `--iptables=false --ip6tables=false --ip-forward=false --ip-masq=false`: dockerd adds no
  iptables rule or chain, does not change the FORWARD policy and does not turn on IP forwarding.
  Nothing needs them: the host is on the bridge, so host → container (the container's IP) and
  container → host (`host_ip`) are direct; containers have no route beyond this host, which is
  what a worker needs; image builds use the host's network (`network_mode="host"`).
  `tests/docker/test_engine.py` compares iptables-save, links, routes and ip_forward before and
  after an engine's life.
- Readiness is `GET /_ping` polled under a deadline; a dockerd that exits while starting fails at
  once with the tail of its log.
- Clean on every path: `stop()` runs from the session fixture's `finally` and from `atexit`
  (a failing test or Ctrl-C); dockerd gets SIGTERM from the kernel if the test process dies
  (PR_SET_PDEATHSIG); and an engine whose test process was SIGKILLed is cleaned by the next
  `start()` on this host (`clean_stale()`): each live engine holds an flock on its root folder.
  What it leaves outside its folders (containers' cgroups under their own parent `/uplodr-brN`,
  mounts, shim sockets, dockerd's fixed host paths) is found and removed by
  tests/support/docker_host.py.

Set UPLODR_TEST_DOCKER_KEEP=1 to keep the data root (images, build cache) in `var/docker/data`
between local runs; everything else is still removed.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import io
import ipaddress
import json
import os
import random
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

import docker
import httpx
from docker.errors import DockerException

from tests.support.docker_host import (
    BRIDGE_PREFIX,
    ROOT_PREFIX,
    EngineUnavailable,
    clean_stale,
    ip,
    kill_and_reap,
    pids_using,
    program,
    record_host_traces,
    remove_cgroups,
    remove_shim_sockets,
    settle_host_traces,
    unmount_all,
)
from tests.support.paths import REPO
from tests.support.spawn import spawn_server

READY_DEADLINE_S = 60.0
STOP_DEADLINE_S = 30.0
SUBNETS = ipaddress.IPv4Network("10.213.0.0/16")
# Networks the engine makes (the Docker provider's `uplodr-workers`) take their subnets from
# 10.214.N.0/24, N the bridge's: never dockerd's default 172.17.0.0/16, which two engines on one
# host (or a system docker0) would both route.
POOLS = ipaddress.IPv4Network("10.214.0.0/16")
KEEP_ENV = "UPLODR_TEST_DOCKER_KEEP"
TINY_REPO = "uplodr-test-tiny"
KEPT_DATA_ROOT = REPO / "var" / "docker" / "data"


def host_programs_image(client: docker.DockerClient, *programs: str) -> str:
    """A tiny image holding this host's own `programs` and the libraries they load (per ldd):
    enough to run a container in an engine that has no base image yet, in a fraction of a
    second (the engine tests use `sleep`)."""
    files: set[str] = set()
    for name in programs:
        path = shutil.which(name)
        if path is None:
            raise EngineUnavailable(f"{name} is not installed on this host")
        files.add(path)
        ldd = subprocess.run(["ldd", path], capture_output=True, text=True, check=False)
        files.update(re.findall(r"(/\S+) \(0x", ldd.stdout))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in sorted(files):
            tar.add(os.path.realpath(name), arcname=name.lstrip("/"))
    tag = hashlib.sha256("\n".join(sorted(files)).encode()).hexdigest()[:16]
    client.api.import_image_from_data(buffer.getvalue(), repository=TINY_REPO, tag=tag)
    return f"{TINY_REPO}:{tag}"


class DockerEngine:
    """One private dockerd; see the module docstring."""

    def __init__(self, keep_data: bool | None = None) -> None:
        self.keep_data = os.environ.get(KEEP_ENV) == "1" if keep_data is None else keep_data
        self.root: Path | None = None
        self.bridge = ""
        self.subnet: ipaddress.IPv4Network | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._lock: IO[str] | None = None
        self._data_lock: IO[str] | None = None
        self._log: IO[bytes] | None = None
        self._stopped = threading.Lock()

    # -- what a test needs -------------------------------------------------------------------

    @property
    def socket(self) -> Path:
        assert self.root is not None, "the engine is not started"
        return self.root / "docker.sock"

    @property
    def docker_host(self) -> str:
        """The engine's address in DOCKER_HOST form."""
        return f"unix://{self.socket}"

    @property
    def host_ip(self) -> str:
        """This host's address on the engine's bridge: containers reach host services here."""
        assert self.subnet is not None, "the engine is not started"
        return str(self.subnet.network_address + 1)

    @property
    def data_root(self) -> Path:
        assert self.root is not None, "the engine is not started"
        return KEPT_DATA_ROOT if self._data_lock is not None else self.root / "data"

    def env(self) -> dict[str, str]:
        """What a process needs to use this engine (the docker SDK and CLI read DOCKER_HOST)."""
        return {"DOCKER_HOST": self.docker_host}

    def client(self, timeout: int = 120) -> contextlib.closing[docker.DockerClient]:
        """A docker SDK client of this engine, closed at the end of a `with` block."""
        return contextlib.closing(
            docker.DockerClient(base_url=self.docker_host, version="auto", timeout=timeout)
        )

    def log_tail(self, lines: int = 30) -> str:
        if self.root is None or not (self.root / "dockerd.log").exists():
            return ""
        text = (self.root / "dockerd.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        dockerd = program("dockerd")
        if dockerd is None:
            raise EngineUnavailable("dockerd is not installed (scripts/test installs docker.io)")
        if os.geteuid() != 0:
            raise EngineUnavailable("a private dockerd needs root (run the tests as root)")
        clean_stale()
        record_host_traces()
        self.root = Path(tempfile.mkdtemp(prefix=ROOT_PREFIX))
        self._lock = (self.root / "lock").open("a")
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        atexit.register(self.stop)
        try:
            self._make_bridge()
            self._spawn(dockerd)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Remove everything the engine made. Safe to call twice and after a failed start."""
        with self._stopped:
            if self.root is None:
                return
            root = self.root
            try:
                if self.process is not None and self.process.poll() is None:
                    self._remove_containers()
                    self._stop_dockerd()
            finally:
                kill_and_reap(pids_using(root))
                remove_shim_sockets(root)
                unmount_all(root)
                if self._data_lock is not None:
                    unmount_all(KEPT_DATA_ROOT)
                    self._data_lock.close()
                    self._data_lock = None
                if self.bridge:
                    ip("link", "del", self.bridge)
                    remove_cgroups(self.bridge)
                if self._log is not None:
                    self._log.close()
                shutil.rmtree(root, ignore_errors=True)
                if self._lock is not None:
                    self._lock.close()
                self.root = None
                settle_host_traces()
                atexit.unregister(self.stop)

    def __enter__(self) -> DockerEngine:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------------------------

    @staticmethod
    def _pool_of(subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
        """The address pool of the engine whose bridge is on `subnet` (same third byte)."""
        third = subnet.network_address.packed[2]
        return ipaddress.IPv4Network(f"{POOLS.network_address + 256 * third}/24")

    def _make_bridge(self) -> None:
        """Create a bridge on a /24 of 10.213.0.0/16 that no route of this host overlaps."""
        assert self.root is not None
        routes = ip("-4", "route", "show", "table", "all").stdout.split("\n")
        taken: list[ipaddress.IPv4Network] = []
        for line in routes:
            word = line.split(" ", 1)[0]
            with contextlib.suppress(ValueError):
                if word and word not in ("default", "local", "broadcast"):
                    taken.append(ipaddress.IPv4Network(word, strict=False))
        candidates = list(SUBNETS.subnets(new_prefix=24))[1:]
        random.shuffle(candidates)
        for subnet in candidates:
            pool = self._pool_of(subnet)
            if any(subnet.overlaps(t) or pool.overlaps(t) for t in taken):
                continue
            name = f"{BRIDGE_PREFIX}{subnet.network_address.packed[2]}"
            if ip("link", "add", "name", name, "type", "bridge").returncode != 0:
                continue  # another engine holds this one
            self.bridge, self.subnet = name, subnet
            (self.root / "bridge").write_text(name)
            gateway = f"{subnet.network_address + 1}/{subnet.prefixlen}"
            for args in (("addr", "add", gateway, "dev", name), ("link", "set", name, "up")):
                done = ip(*args)
                if done.returncode != 0:
                    raise EngineUnavailable(f"ip {' '.join(args)}: {done.stderr.strip()}")
            return
        raise EngineUnavailable(f"no free /24 in {SUBNETS} for the engine's bridge")

    def _spawn(self, dockerd: str) -> None:
        assert self.root is not None
        data_root = self.root / "data"
        if self.keep_data:
            KEPT_DATA_ROOT.mkdir(parents=True, exist_ok=True)
            handle = (KEPT_DATA_ROOT.parent / "data.lock").open("a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._data_lock, data_root = handle, KEPT_DATA_ROOT
            except BlockingIOError:  # another run keeps it: use a fresh one this time
                handle.close()
        (self.root / "data-root").write_text(str(data_root))
        config = self.root / "daemon.json"
        config.write_text(json.dumps({}))
        assert self.subnet is not None
        command = [
            dockerd,
            "--config-file", str(config),
            "--data-root", str(data_root),
            "--exec-root", str(self.root / "exec"),
            "--pidfile", str(self.root / "dockerd.pid"),
            "-H", self.docker_host,
            "--bridge", self.bridge,
            "--default-address-pool", f"base={self._pool_of(self.subnet)},size=28",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            "--cgroup-parent", f"/{self.bridge}",
            "--shutdown-timeout", "5",
            "--log-level", "warn",
        ]  # fmt: skip
        self._log = (self.root / "dockerd.log").open("ab")
        self.process = spawn_server(command, self._log)

    def _wait_ready(self) -> None:
        assert self.process is not None
        transport = httpx.HTTPTransport(uds=str(self.socket))
        deadline = time.monotonic() + READY_DEADLINE_S
        with httpx.Client(transport=transport, base_url="http://docker", timeout=5) as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise EngineUnavailable(
                        f"dockerd exited ({self.process.returncode}) while starting:\n"
                        + self.log_tail()
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if self.socket.exists() and http.get("/_ping").text == "OK":
                        return
                time.sleep(0.02)  # polling the API under a deadline
        raise EngineUnavailable(
            f"dockerd did not answer /_ping in {READY_DEADLINE_S:.0f} s:\n{self.log_tail()}"
        )

    def _remove_containers(self) -> None:
        with contextlib.suppress(DockerException, OSError), self.client(timeout=30) as client:
            for container in client.containers.list(all=True):
                with contextlib.suppress(DockerException):
                    container.remove(force=True, v=True)
            for network in client.networks.list():
                if network.name not in ("bridge", "host", "none"):
                    with contextlib.suppress(DockerException):
                        network.remove()

    def _stop_dockerd(self) -> None:
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_DEADLINE_S)
