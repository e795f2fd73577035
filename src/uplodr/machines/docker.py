"""The Docker provider: each machine is a container of uplodr's image running `uplodr worker`.

A machine is a container named `uplodr-<12 hex>` (its id) from `--docker-image`, created and
started through the Engine API on the engine `DOCKER_HOST` names (default: the local socket).
The Engine API itself (the docker SDK in the provider's own threads, its errors mapped once to
uplodr's) is `docker_api.DockerApi`; this module is the provider on top: the container spec,
the workers' network, why a container stopped, list and destroy. Why it looks like this:

- **Limits are the machine's size**: `--machine-memory` (default 1G, as a Fly machine) is the
  memory *and* memory+swap limit (no swap to hide an overflow), `--machine-cpus` a CPU quota
  (default none: the engine's cores are shared), 256 pids. A root filesystem that is read-only,
  a tmpfs at /tmp for spooling uploads (it counts against the memory limit, so it is as large
  as the limit), every capability dropped, `no-new-privileges`, the image's gateway health check
  off (the gateway's Ping probes a worker). The kernel enforces the memory limit: an OOM kill
  is `State.OOMKilled`, reported as `StopReason.out_of_memory(N)`, which the gateway answers
  with its 422 (tests/docker: a full-resolution 24 MP photo under 512M).
- **The environment is the worker's own settings and per-machine token only** (`spec.env`,
  built from `WorkerEnv.to_env()`), over what the image itself sets: no store, no credential
  (a worker sends its outputs back on the gRPC call; docs/security.md).
- **A network that reaches nothing** (issue 16): without `--docker-network` the workers join
  `uplodr-workers`, a bridge network the provider makes once per engine, `internal` (no route
  out of it: not the internet, not the host's other networks and their containers) and with
  inter-container communication off (where the engine enforces it with iptables, a worker
  cannot reach another worker either). A worker needs no outbound connection at all: the
  gateway calls it. A network the provider finds under that name that is not internal is
  refused (ProviderError), never used.
- **Address: the container's IP on the engine's network, port 50051**, not a published host
  port: nothing to choose or race on per machine, and it works on an engine without iptables
  or userland proxies (the tests' private engine). The gateway must be able to reach that
  network: on the engine's own Linux host (the host is on its bridge), or in a container on the
  same network (`--docker-network`). Docker Desktop's VM hides container IPs from the host: run
  the gateway in a container there.
- **Labels are the tags** (`uplodr=worker`, `gateway`, `lease`, `created_at`, `deadline`), so
  `docker ps -a --filter label=uplodr=worker` shows them too; `list` filters by label on the
  engine and checks again here, and `destroy` refuses a container without the marker.
- **A local-folder store is bind-mounted at the same path**, and the worker runs as the user
  and group that own the folder, so it can write there and its files belong to that user as a
  local worker's would (`capabilities.shares_host_files`). Only when the engine is on this host
  (a `unix://` DOCKER_HOST): a remote engine would mount its own folders, so there the gateway
  refuses a local store and asks for `s3://`; and only when the engine's data root is visible
  here, else the engine is on another filesystem (a gateway in a container with the socket
  mounted, Docker Desktop's VM) and the job is refused with one line.
- **Failures say why.** A container that exits while booting is seen by `failure()` (the lease
  polls it) with its exit code and the last line it logged; an engine that does not answer is
  WorkerUnavailable (503) naming the engine — NotCreated when the create's connection was never
  made —, what the engine refuses is ProviderError with the engine's own words (docker_api.py).
  A container that could not start is removed before create raises. `destroy` is
  `remove(force=True)`, idempotent.
- **What it costs** (docs/benchmarks.md, "Through the providers"): create → first Ping 0.50 s
  against a local process's 0.26 s, destroy 0.1 s against 0.01 s — ~0.35 s more per job, ~15 %
  of a 12 MP job on a quiet 2-core machine; the conversion runs as fast in the container.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from uplodr.errors import NotCreated, ProviderError, UplodrError, WorkerUnavailable
from uplodr.machines.base import (
    MARKER_TAG,
    MARKER_VALUE,
    Capabilities,
    Machine,
    MachineSpec,
    StopReason,
    destroy_leftovers,
    has_tags,
    marked,
)
from uplodr.machines.docker_api import API_TIMEOUT, DEFAULT_HOST, DockerApi
from uplodr.machines.settings import ProviderOption, ProviderSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

GRPC_PORT = 50051
DEFAULT_MEMORY_MB = 1024
PIDS_LIMIT = 256
# Where the worker spools uploads: a tmpfs mounted in the container, not this host's /tmp.
SPOOL = "/tmp"  # noqa: S108
# Variables the docker SDK reads (docker.from_env); nothing else of the environment is used.
ENGINE_VARS = ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")
CHECK_TIMEOUT = 5.0  # seconds `check()` may take in all
# The workers' network when none is named: internal (no route out), containers isolated
# from each other (`enable_icc`, enforced where the engine manages iptables).
WORKER_NETWORK = "uplodr-workers"
WORKER_NETWORK_OPTIONS = {"com.docker.network.bridge.enable_icc": "false"}
_POLL = 0.05  # seconds between looks at a container that is starting
_RUNNING_STATES = {"running": "started", "created": "created", "restarting": "starting"}
_STOPPED_STATES = frozenset({"exited", "dead", "paused"})
# The state `list` gives a stopped container this provider still owns (see `list`).
OWNED_EXITED = "exited"

OPTION_IMAGE = ProviderOption(
    "docker_image",
    "--docker-image",
    "UPLODR_DOCKER_IMAGE",
    "Docker provider: image with uplodr installed (docker build -t uplodr .); the engine is "
    "$DOCKER_HOST.",
)
OPTION_NETWORK = ProviderOption(
    "docker_network",
    "--docker-network",
    "UPLODR_DOCKER_NETWORK",
    "Docker provider: network the worker containers join; the gateway reaches them at their "
    "address on it (default: uplodr-workers, an internal network the provider makes).",
)
OPTIONS = (OPTION_IMAGE, OPTION_NETWORK)


@dataclass(frozen=True)
class DockerConfig:
    image: str  # "": only listing and removing machines (machines ls, reap)
    network: str | None = None  # None: WORKER_NETWORK, internal, made by the provider
    memory_mb: int = DEFAULT_MEMORY_MB
    cpus: int | None = None  # None: no CPU quota
    # DOCKER_HOST and the TLS variables, as docker.from_env reads them.
    engine_env: Mapping[str, str] | None = None
    api_timeout: int = API_TIMEOUT

    def require_image(self) -> str:
        """The image; ProviderError when none was given (`machines ls` and `reap` need none)."""
        if not self.image:
            raise ProviderError(
                f"the Docker provider needs {OPTION_IMAGE.flag} ({OPTION_IMAGE.envvar}) to start "
                "machines, e.g. uplodr:latest built from the repository's Dockerfile"
            )
        return self.image

    @property
    def host(self) -> str:
        return (self.engine_env or {}).get("DOCKER_HOST") or DEFAULT_HOST

    @classmethod
    def from_settings(cls, settings: ProviderSettings) -> DockerConfig:
        return cls(
            image=OPTION_IMAGE.read(settings, str, ""),
            network=OPTION_NETWORK.read(settings, str, "") or None,
            memory_mb=settings.memory_mb or DEFAULT_MEMORY_MB,
            cpus=settings.cpus,
            engine_env={k: v for k, v in settings.env.items() if k in ENGINE_VARS},
        )


# -- the containers, blocking -------------------------------------------------------------------


class _Containers:
    """uplodr's containers on the engine: the worker's container spec, the workers' network,
    removal of uplodr's containers only. Blocking: call it through `api.call`. Errors are the
    client's (docker_api.py), plus ProviderError for what uplodr refuses."""

    def __init__(self, config: DockerConfig, api: DockerApi) -> None:
        self.config = config
        self.api = api
        self.host = api.host
        self._data_root: str | None = None
        self._lock = threading.Lock()
        self._network: str | None = None  # the workers' network, once found or made

    def check(self) -> None:
        image = self.config.require_image()
        self.api.ping()
        if not self.api.has_image(image):
            raise ProviderError(
                f"image {image} is not in the Docker engine at {self.host} "
                f"(build it there: docker build -t {image} .)"
            )
        network = self.config.network
        if network is not None and not self.api.has_network(network):
            raise ProviderError(
                f"network {network} does not exist in the Docker engine at "
                f"{self.host} (docker network create {network})"
            )

    def worker_network(self) -> str:
        """The network workers join: the one named (`--docker-network`), else WORKER_NETWORK,
        made internal on first use (a concurrent make by another gateway is fine: 409)."""
        if self.config.network is not None:
            return self.config.network
        with self._lock:
            if self._network is not None:
                return self._network
        found = self.api.networks(WORKER_NETWORK)
        if not found:
            self.api.create_network(
                WORKER_NETWORK,
                options=WORKER_NETWORK_OPTIONS,
                labels={MARKER_TAG: MARKER_VALUE},
            )
            found = self.api.networks(WORKER_NETWORK)
        if not found or not all(n.get("Internal") for n in found):
            raise ProviderError(
                f"network {WORKER_NETWORK} in the Docker engine at {self.host} is not "
                "internal; workers must not reach beyond the gateway: remove it "
                f"(docker network rm {WORKER_NETWORK}) or name another with "
                f"{OPTION_NETWORK.flag}"
            )
        with self._lock:
            self._network = WORKER_NETWORK
        return WORKER_NETWORK

    def run(self, name: str, spec: MachineSpec, user: str | None) -> dict[str, Any]:
        """Create and start the container; its inspect data. A container that could not start
        is removed (WorkerUnavailable when even that failed: it may still be there)."""
        config = self.config
        image = config.require_image()
        self.api.client(creating=True)
        memory_mb = spec.memory_mb or config.memory_mb
        cpus = spec.cpus or config.cpus
        limits: dict[str, Any] = {
            "mem_limit": memory_mb * 1024 * 1024,
            "memswap_limit": memory_mb * 1024 * 1024,
            "pids_limit": PIDS_LIMIT,
        }
        if cpus is not None:
            limits["nano_cpus"] = cpus * 1_000_000_000
        if spec.host_paths:
            self.require_same_files()
        container_id = self.api.create_container(
            image,
            ["worker", "--grpc-addr", f"0.0.0.0:{GRPC_PORT}"],
            name=name,
            environment={str(k): str(v) for k, v in spec.env.items()},
            labels=marked(spec.tags),
            user=user,
            network=self.worker_network(),
            read_only=True,
            tmpfs={SPOOL: f"rw,nosuid,nodev,size={memory_mb}m,mode=1777"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            healthcheck={"test": ["NONE"]},
            volumes={str(p): {"bind": str(p), "mode": "rw"} for p in spec.host_paths},
            **limits,
        )
        try:
            return self.api.start(container_id, image)
        except UplodrError as error:
            try:
                self.remove(name)
            except UplodrError:
                raise WorkerUnavailable(str(error)) from None  # may be there: look for it
            raise

    def require_same_files(self) -> None:
        """A bind mount is a folder of the engine's host: refuse when that is not this host's
        filesystem — the engine's data root is not here (the gateway runs in a container with
        the engine's socket mounted, or the engine runs in a VM such as Docker Desktop's)."""
        if self._data_root is None:
            self._data_root = self.api.data_root()
        if not self._data_root or not Path(self._data_root).is_dir():
            raise ProviderError(
                f"the Docker engine at {self.host} does not see this host's folders (its data "
                f"root {self._data_root or '?'} is not here): a local-folder store cannot be "
                "mounted into its containers; use an s3:// store"
            )

    def last_line(self, name: str) -> str:
        """The last line the container logged (its error message when it exited), or ''."""
        text = self.api.logs(name, tail=5)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return lines[-1][:300] if lines else ""

    def containers(self, tags: Mapping[str, str]) -> list[dict[str, Any]]:
        """Containers with the marker label and these labels (the engine's list entries)."""
        return self.api.containers({**tags, MARKER_TAG: MARKER_VALUE})

    def remove(self, name: str) -> None:
        """Remove the container (killing it), and return once it is gone; a container that is
        not there is not an error, one without uplodr's marker is never touched."""
        attrs = self.api.inspect(name)
        if attrs is None:
            return
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        if labels.get(MARKER_TAG) != MARKER_VALUE:
            raise ProviderError(f"container {name} is not an uplodr machine; not removing it")
        self.api.remove(str(attrs["Id"]), name)


# -- the provider ------------------------------------------------------------------------------


def _address(attrs: Mapping[str, Any], network: str | None) -> str:
    """`IP:port` of the container on `network` (default: whichever it has an address on)."""
    networks = ((attrs.get("NetworkSettings") or {}).get("Networks")) or {}
    ordered = [networks.get(network)] if network else list(networks.values())
    for settings in ordered:
        ip = (settings or {}).get("IPAddress")
        if ip:
            return f"[{ip}]:{GRPC_PORT}" if ":" in ip else f"{ip}:{GRPC_PORT}"
    return ""


def _created(value: object) -> float:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value:
        # inspect: RFC 3339 with nanoseconds ("2026-12-02T14:03:22.123456789Z")
        text = re.sub(r"(\.\d{6})\d+", r"\1", value).replace("Z", "+00:00")
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(text).timestamp()
    return 0.0


def exit_reason(
    state: Mapping[str, Any], memory_bytes: int, last_line: str = ""
) -> StopReason | None:
    """Why a container stopped, from its inspect `State` (None while it runs)."""
    status = state.get("Status")
    if status in ("running", "created", "restarting") or state.get("Running"):
        return None
    if state.get("OOMKilled"):
        return StopReason.out_of_memory(memory_bytes // (1024 * 1024))
    code = int(state.get("ExitCode") or 0)
    error = " ".join(str(state.get("Error") or "").split())[:300]
    if code > 128:
        return StopReason.killed(code - 128, error)
    return StopReason.exited(code, error or (last_line if code else ""))


def _machine(entry: Mapping[str, Any], network: str | None) -> Machine | None:
    """A Machine from the engine's list entry; None for one being removed."""
    state = str(entry.get("State") or "")
    if state == "removing":
        return None
    names = entry.get("Names") or []
    name = str(names[0]).lstrip("/") if names else str(entry.get("Id", ""))[:12]
    return Machine(
        id=name,
        address=_address(entry, network),
        tags=dict(entry.get("Labels") or {}),
        created_at=_created(entry.get("Created")),
        state="stopped" if state in _STOPPED_STATES else _RUNNING_STATES.get(state, state),
    )


def engine_is_local(host: str) -> bool:
    """True when DOCKER_HOST is a socket on this host (bind mounts are this host's folders)."""
    return host.startswith(("unix://", "npipe://"))


def owner_of(paths: tuple[Path, ...]) -> str | None:
    """`uid:gid` owning the first folder (the worker runs as them to write there), or None."""
    for path in paths:
        with contextlib.suppress(OSError):
            info = path.stat()
            return f"{info.st_uid}:{info.st_gid}"
    return None


class DockerProvider:
    """The Provider protocol on a Docker engine (see the module docstring)."""

    name = "docker"

    def __init__(self, config: DockerConfig) -> None:
        self.config = config
        self.capabilities = Capabilities(
            shares_host_files=engine_is_local(config.host),
            # Containers share the engine's cores: one per core of this host, as local.
            default_max_machines=os.cpu_count() or 1,
        )
        self._api = DockerApi(config.engine_env, config.api_timeout)
        self._engine = _Containers(config, self._api)
        self._ours: set[str] = set()  # created here, not destroyed yet
        self._creating: set[asyncio.Task[Machine]] = set()

    async def _call(self, work: Callable[..., T], *args: Any) -> T:
        return await self._api.call(work, *args)

    # -- the Provider protocol -----------------------------------------------------------

    async def check(self) -> None:
        """The engine answers, the image is in it (and the network, if one was named)."""
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                await self._call(self._engine.check)
        except TimeoutError:
            raise WorkerUnavailable(
                f"Docker engine at {self.config.host} did not answer within {CHECK_TIMEOUT:g} s"
            ) from None

    async def create(self, spec: MachineSpec) -> Machine:
        memory_mb = spec.memory_mb or self.config.memory_mb
        if memory_mb < 6:
            raise ProviderError(f"a container needs at least 6 MB of memory, not {memory_mb} MB")
        if spec.host_paths and not self.capabilities.shares_host_files:
            raise ProviderError(
                f"the Docker engine at {self.config.host} is not on this host: it cannot mount "
                "a local folder; use an s3:// store"
            )
        # Create and start are one step a cancellation cannot split: a caller that leaves
        # finds the container by its lease tag, and aclose() still removes it.
        task = asyncio.create_task(self._create(spec))
        self._creating.add(task)
        task.add_done_callback(self._creating.discard)
        return await asyncio.shield(task)

    async def wait_started(self, machine: Machine, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            attrs = await self._call(self._api.inspect, machine.id)
            if attrs is None:
                raise WorkerUnavailable(f"container {machine.id} is gone")
            state = attrs.get("State") or {}
            if state.get("Running"):
                return
            if state.get("Status") != "created":
                reason = await self._reason(machine.id, attrs)
                raise WorkerUnavailable(f"container {machine.id} {_stopped(reason)}")
            if time.monotonic() > deadline:
                raise WorkerUnavailable(
                    f"container {machine.id} did not start within {timeout:g} s"
                )
            await asyncio.sleep(_POLL)

    async def list(self, tags: Mapping[str, str]) -> list[Machine]:
        """A stopped container made here and not destroyed yet is its lease's to diagnose
        and destroy: it is listed as "exited", not "stopped", so the reaper (which removes
        stopped machines at once) cannot race the lease's `failure()` and leave it a "gone"
        where the engine would have said out of memory (a 422 turned into a 503)."""
        entries = await self._call(self._engine.containers, tags)
        machines = [_machine(entry, self.config.network) for entry in entries]
        return [
            replace(m, state=OWNED_EXITED) if m.state == "stopped" and m.id in self._ours else m
            for m in machines
            if m is not None and has_tags(m.tags, tags)
        ]

    async def destroy(self, machine_id: str) -> None:
        await self._call(self._engine.remove, machine_id)
        self._ours.discard(machine_id)
        log.info("removed worker container %s", machine_id)

    async def failure(self, machine_id: str) -> StopReason | None:
        attrs = await self._call(self._api.inspect, machine_id)
        if attrs is None:
            return StopReason.gone("the container no longer exists")
        return await self._reason(machine_id, attrs)

    async def stop(self, machine_id: str) -> None:
        raise ProviderError("docker machines cannot be stopped and started again")

    async def start(self, machine_id: str) -> Machine:
        raise ProviderError("docker machines cannot be stopped and started again")

    async def aclose(self) -> None:
        """Remove the containers created here that nobody destroyed, then close the client."""
        await destroy_leftovers(self._creating, self._ours, self.destroy, "worker container", log)
        await self._call(self._api.close)
        self._api.shutdown()  # a hung call ends on its own

    # -- internals -------------------------------------------------------------------------

    async def _create(self, spec: MachineSpec) -> Machine:
        name = f"uplodr-{secrets.token_hex(6)}"
        user = owner_of(spec.host_paths)
        self._ours.add(name)
        try:
            attrs = await self._call(self._engine.run, name, spec, user)
        except (ProviderError, NotCreated):
            self._ours.discard(name)  # refused, never sent, or removed after a failed start
            raise
        address = _address(attrs, self.config.network)
        if not address:  # it stopped before it had an address: say why, leave nothing
            reason = await self._reason(name, attrs)
            await self.destroy(name)
            said = _stopped(reason) if reason else "has no network address"
            raise WorkerUnavailable(f"container {name} {said}")
        log.info("started worker container %s at %s", name, address)
        return Machine(
            id=name,
            address=address,
            tags=marked(spec.tags),
            created_at=_created(attrs.get("Created")) or time.time(),
            state="started",
        )

    async def _reason(self, machine_id: str, attrs: Mapping[str, Any]) -> StopReason | None:
        state = attrs.get("State") or {}
        memory = int((attrs.get("HostConfig") or {}).get("Memory") or 0)
        if exit_reason(state, memory) is None:
            return None
        code = int(state.get("ExitCode") or 0)
        last = await self._call(self._engine.last_line, machine_id) if 0 < code <= 128 else ""
        reason = exit_reason(state, memory, last)
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        return None if reason is None else reason.at_deadline(labels, time.time())


def _stopped(reason: StopReason | None) -> str:
    return f"stopped: {reason}" if reason is not None else "is not running"


def from_settings(settings: ProviderSettings) -> DockerProvider:
    return DockerProvider(DockerConfig.from_settings(settings))
