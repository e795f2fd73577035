"""The Docker provider: each machine is a container of uplodr's image running `uplodr worker`.

A machine is a container named `uplodr-<12 hex>` (its id) from `--docker-image`, created and
started through the Engine API (the docker SDK, blocking, so each call runs in a thread) on the
engine `DOCKER_HOST` names (default: the local socket). Why it looks like this:

- **Limits are the machine's size**: `--machine-memory` (default 1G, as a Fly machine) is the
  memory *and* memory+swap limit (no swap to hide an overflow), `--machine-cpus` a CPU quota
  (default none: the engine's cores are shared), 256 pids. A root filesystem that is read-only,
  a tmpfs at /tmp for spooling uploads (it counts against the memory limit, so it is as large
  as the limit), every capability dropped, `no-new-privileges`, the image's gateway health check
  off (the gateway's Ping probes a worker). The kernel enforces the memory limit: an OOM kill
  is `State.OOMKilled`, reported as `StopReason.out_of_memory(N)`, which the gateway answers
  with its 422 (tests/docker: a full-resolution 24 MP photo under 512M).
- **The environment is the worker's own settings and per-machine token only** (`spec.env`,
  built from `WorkerEnv.to_env()`), over what the image itself sets.
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
  made, so the lease does not search for a container that cannot exist; what the engine refuses
  (an image it does not have, more CPUs than it has) is ProviderError with the engine's own
  words. A container that could not start is removed before create raises. `destroy` is
  `remove(force=True)`, idempotent.
- **What it costs** (docs/benchmarks.md, "Through the providers"): create → first Ping 0.50 s
  against a local process's 0.26 s, destroy 0.1 s against 0.01 s — ~0.35 s more per job, ~15 %
  of a 12 MP job on a quiet 2-core machine; the conversion runs as fast in the container.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from uplodr.errors import NotCreated, ProviderError, UplodrError, WorkerUnavailable
from uplodr.machines.base import (
    MARKER_TAG,
    MARKER_VALUE,
    Capabilities,
    Machine,
    MachineSpec,
    StopReason,
    has_tags,
    marked,
)
from uplodr.machines.settings import ProviderOption, ProviderSettings

if TYPE_CHECKING:  # the docker SDK belongs to the `server` extra: imported when first used
    from docker import DockerClient

log = logging.getLogger(__name__)
T = TypeVar("T")

GRPC_PORT = 50051
DEFAULT_MEMORY_MB = 1024
PIDS_LIMIT = 256
# Where the worker spools uploads: a tmpfs mounted in the container, not this host's /tmp.
SPOOL = "/tmp"  # noqa: S108
DEFAULT_HOST = "unix:///var/run/docker.sock"
# Variables the docker SDK reads (docker.from_env); nothing else of the environment is used.
ENGINE_VARS = ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")
API_TIMEOUT = 30  # seconds one Engine API request may take
CHECK_TIMEOUT = 5.0  # seconds `check()` may take in all
_POLL = 0.05  # seconds between looks at a container that is starting or being removed
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
    "address on it (default: the engine's bridge).",
)
OPTIONS = (OPTION_IMAGE, OPTION_NETWORK)


@dataclass(frozen=True)
class DockerConfig:
    image: str  # "": only listing and removing machines (machines ls, reap)
    network: str | None = None  # None: the engine's default bridge
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


# -- the engine, blocking ----------------------------------------------------------------------


def _cause(error: BaseException) -> str:
    """The innermost OS-level reason in a docker/requests error ("Connection refused"), else
    the error's first line."""
    seen: set[int] = set()
    stack: list[BaseException] = [error]
    found = ""
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            found = current.strerror
        stack.extend(arg for arg in current.args if isinstance(arg, BaseException))
        stack.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    if found:
        return found
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:200]


# OS errors of a connection that was never made: the request was not sent.
_NOT_CONNECTED = frozenset(
    {errno.ENOENT, errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH}
)


def _never_sent(error: BaseException) -> bool:
    """True when a docker/requests error shows the connection was never made (no socket,
    refused, no route, a connect timeout), so the engine cannot have acted on the request."""
    from requests.exceptions import ConnectTimeout

    seen: set[int] = set()
    stack: list[BaseException] = [error]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ConnectTimeout):
            return True
        if isinstance(current, OSError) and current.errno in _NOT_CONNECTED:
            return True
        stack.extend(arg for arg in current.args if isinstance(arg, BaseException))
        stack.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return False


class _Engine:
    """The Docker engine through the docker SDK. Blocking: call it from a thread. Any error is
    WorkerUnavailable (cannot reach it, or it failed) or ProviderError (it refused: retrying
    will not help), one line each; a container that is not there is None or False."""

    def __init__(self, config: DockerConfig) -> None:
        self.config = config
        self.host = config.host
        self._client: DockerClient | None = None
        self._data_root: str | None = None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _said(self, action: str, *, creating: bool = False) -> Iterator[None]:
        """Docker's errors as ours. `creating`: a request that never reached the engine is
        NotCreated (the lease then knows there is no container to look for)."""
        from docker.errors import APIError, DockerException

        try:
            yield
        except UplodrError:
            raise
        except APIError as error:
            status = error.status_code or 0
            explanation = " ".join(str(error.explanation or error).split())[:300]
            if 400 <= status < 500:
                raise ProviderError(f"Docker engine refused to {action}: {explanation}") from None
            raise WorkerUnavailable(
                f"Docker engine failed to {action} ({status}): {explanation}"
            ) from None
        except (DockerException, OSError) as error:
            unreachable = NotCreated if creating and _never_sent(error) else WorkerUnavailable
            raise unreachable(
                f"Docker engine at {self.host} is unreachable: {_cause(error)}"
            ) from None

    def client(self, *, creating: bool = False) -> DockerClient:
        """The client, made on first use (the SDK asks the engine for its API version). Made
        outside the lock: an engine that accepts but never answers would otherwise hold every
        other call, and `close`, for the whole API timeout."""
        with self._lock:
            if self._client is not None:
                return self._client
        import docker

        with self._said("answer", creating=creating):
            made = docker.from_env(
                environment=dict(self.config.engine_env or {}),
                timeout=self.config.api_timeout,
                version="auto",
            )
        with self._lock:
            if self._client is None:
                self._client = made
                return made
            kept = self._client
        made.close()  # another thread made one first
        return kept

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def check(self) -> None:
        self.config.require_image()
        client = self.client()
        with self._said("answer a ping"):
            client.ping()
        from docker.errors import ImageNotFound

        with self._said(f"look up image {self.config.image}"):
            try:
                client.images.get(self.config.image)
            except ImageNotFound:
                raise ProviderError(
                    f"image {self.config.image} is not in the Docker engine at {self.host} "
                    f"(build it there: docker build -t {self.config.image} .)"
                ) from None
        if self.config.network is not None:
            from docker.errors import NotFound

            with self._said(f"look up network {self.config.network}"):
                try:
                    client.networks.get(self.config.network)
                except NotFound:
                    raise ProviderError(
                        f"network {self.config.network} does not exist in the Docker engine at "
                        f"{self.host} (docker network create {self.config.network})"
                    ) from None

    def run(self, name: str, spec: MachineSpec, user: str | None) -> dict[str, Any]:
        """Create and start the container; its inspect data. A container that could not start
        is removed (WorkerUnavailable when even that failed: it may still be there)."""
        from docker.errors import ImageNotFound

        config = self.config
        config.require_image()
        client = self.client(creating=True)
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
            self.require_same_files(client)
        with self._said(f"create a container of {config.image}", creating=True):
            try:
                container = client.containers.create(
                    config.image,
                    ["worker", "--grpc-addr", f"0.0.0.0:{GRPC_PORT}"],
                    name=name,
                    environment={str(k): str(v) for k, v in spec.env.items()},
                    labels=marked(spec.tags),
                    user=user,
                    network=config.network,
                    read_only=True,
                    tmpfs={SPOOL: f"rw,nosuid,nodev,size={memory_mb}m,mode=1777"},
                    cap_drop=["ALL"],
                    security_opt=["no-new-privileges"],
                    healthcheck={"test": ["NONE"]},
                    volumes={str(p): {"bind": str(p), "mode": "rw"} for p in spec.host_paths},
                    **limits,
                )
            except ImageNotFound:
                raise ProviderError(
                    f"image {config.image} is not in the Docker engine at {self.host} "
                    f"(build it there: docker build -t {config.image} .)"
                ) from None
        try:
            with self._said(f"start a container of {config.image}"):
                container.start()
                container.reload()
        except UplodrError as error:
            try:
                self.remove(name)
            except UplodrError:
                raise WorkerUnavailable(str(error)) from None  # may be there: look for it
            raise
        attrs: dict[str, Any] = container.attrs
        return attrs

    def require_same_files(self, client: DockerClient) -> None:
        """A bind mount is a folder of the engine's host: refuse when that is not this host's
        filesystem — the engine's data root is not here (the gateway runs in a container with
        the engine's socket mounted, or the engine runs in a VM such as Docker Desktop's)."""
        if self._data_root is None:
            with self._said("describe itself"):
                self._data_root = str(client.info().get("DockerRootDir") or "")
        if not self._data_root or not Path(self._data_root).is_dir():
            raise ProviderError(
                f"the Docker engine at {self.host} does not see this host's folders (its data "
                f"root {self._data_root or '?'} is not here): a local-folder store cannot be "
                "mounted into its containers; use an s3:// store"
            )

    def inspect(self, name: str) -> dict[str, Any] | None:
        from docker.errors import NotFound

        with self._said(f"inspect container {name}"):
            try:
                attrs: dict[str, Any] = self.client().api.inspect_container(name)
            except NotFound:
                return None
        return attrs

    def last_line(self, name: str) -> str:
        """The last line the container logged (its error message when it exited), or ''."""
        from docker.errors import NotFound

        with self._said(f"read the log of container {name}"):
            try:
                raw = self.client().api.logs(name, stdout=True, stderr=True, tail=5)
            except NotFound:
                return ""
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return lines[-1][:300] if lines else ""

    def containers(self, tags: Mapping[str, str]) -> list[dict[str, Any]]:
        """Containers with the marker label and these labels (the engine's list entries)."""
        wanted = {**tags, MARKER_TAG: MARKER_VALUE}
        filters = {"label": [f"{key}={value}" for key, value in wanted.items()]}
        with self._said("list containers"):
            found: list[dict[str, Any]] = self.client().api.containers(all=True, filters=filters)
        return found

    def remove(self, name: str) -> None:
        """Remove the container (killing it), and return once it is gone; a container that is
        not there is not an error, one without uplodr's marker is never touched."""
        from docker.errors import APIError, NotFound

        attrs = self.inspect(name)
        if attrs is None:
            return
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        if labels.get(MARKER_TAG) != MARKER_VALUE:
            raise ProviderError(f"container {name} is not an uplodr machine; not removing it")
        container_id = str(attrs["Id"])
        deadline = time.monotonic() + self.config.api_timeout
        with self._said(f"remove container {name}"):
            while True:
                try:
                    self.client().api.remove_container(container_id, force=True, v=True)
                    return
                except NotFound:
                    return
                except APIError as error:
                    # 409: another remove is under way; it returns once that one is done
                    if error.status_code != 409 or time.monotonic() > deadline:
                        raise
                time.sleep(_POLL)


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
        self._engine = _Engine(config)
        self._threads = ThreadPoolExecutor(max_workers=8, thread_name_prefix="uplodr-docker")
        self._ours: set[str] = set()  # created here, not destroyed yet
        self._creating: set[asyncio.Task[Machine]] = set()

    async def _call(self, work: Callable[..., T], *args: Any) -> T:
        # The provider's own threads: calls to an engine that hangs block a thread each for up
        # to the API timeout, and must not take the event loop's default threads, which the
        # gateway's local store and everything else share.
        return await asyncio.get_running_loop().run_in_executor(
            self._threads, functools.partial(work, *args)
        )

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
            attrs = await self._call(self._engine.inspect, machine.id)
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
        attrs = await self._call(self._engine.inspect, machine_id)
        if attrs is None:
            return StopReason.gone("the container no longer exists")
        return await self._reason(machine_id, attrs)

    async def stop(self, machine_id: str) -> None:
        raise ProviderError("docker machines cannot be stopped and started again")

    async def start(self, machine_id: str) -> Machine:
        raise ProviderError("docker machines cannot be stopped and started again")

    async def aclose(self) -> None:
        """Remove the containers created here that nobody destroyed, then close the client."""
        if self._creating:
            await asyncio.gather(*self._creating, return_exceptions=True)
        for machine_id in sorted(self._ours):
            try:
                await self.destroy(machine_id)
            except UplodrError as error:  # the reaper finds it by its labels
                log.error("could not remove worker container %s: %s", machine_id, error)
        await self._call(self._engine.close)
        self._threads.shutdown(wait=False, cancel_futures=True)  # a hung call ends on its own

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
