"""Fly Machines provider: workers on Fly Machines, through the Machines API client (fly_api.py).

A machine runs the image built from this repository's Dockerfile (`--fly-image`), whose
ENTRYPOINT is `uplodr` and CMD `serve`. Fly's `config.init` replaces them the way Docker does
(`entrypoint` the ENTRYPOINT, `cmd` the CMD), so the provider sets both: `entrypoint ["uplodr"]`,
`cmd ["worker", "--grpc-addr", "[::]:PORT"]` — a `cmd` of `uplodr worker …` alone would run
`uplodr uplodr worker …` and exit at once. The worker listens on every address, so its 6PN private
IPv6 address (`private_ip` in the create answer, which is where the gateway dials it) reaches it.
The guest is `--machine-cpus` and `--machine-memory`, checked against Fly's sizing rules before any
call (memory in 256 MB steps, 256 MB-2 GB per shared CPU, 2-8 GB per performance CPU). The env
holds only `MachineSpec.env` (the worker's settings and its per-machine token); Fly adds the
app's secrets to every machine of an app, so workers belong in an app without secrets
(docs/deploy.md).

The Machines API itself (its calls, retries under one deadline, errors mapped once) is
`fly_api.FlyApi`; this module is the provider on top: the create body, region rotation,
sizing, pricing and options. A capacity error moves on to the next region at once and backs
off only after every region refused. A create that failed ambiguously (timeout or 5xx: Fly may
have made the machine) looks the machine up by its name before trying again, so a retried
create never leaks a machine.

Price: Fly bills a running Machine per second by CPU kind and count plus memory. The figures
below are derived from Fly's published per-second list prices (shared-cpu-1x with 256 MB at
$0.0000008/s, with 1 GB at $0.0000022/s; performance-1x with 2 GB at $0.0000120/s, with 4 GB at
$0.0000158/s): memory costs ~$0.0000019 per GB-second, the rest is the CPU. Prices change and
differ by region and plan: set `--price-per-hour` for exact figures.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import httpx

from uplodr.errors import ProviderError, WorkerUnavailable
from uplodr.machines.base import (
    MARKER_TAG,
    MARKER_VALUE,
    Capabilities,
    Machine,
    MachineSpec,
    RateLimit,
    StopKind,
    StopReason,
    has_tags,
    marked,
)
from uplodr.machines.fly_api import PUBLIC_API, Ambiguous, Capacity, FlyApi, Transient, fly_error
from uplodr.machines.settings import ProviderOption, ProviderSettings

MAX_WAIT_CALL = 60  # Fly's /wait blocks at most 60 s per call
CHECK_TIMEOUT = 5.0  # seconds `check()` may take
_GONE_STATES = frozenset({"destroyed", "destroying"})
_STOPPED_STATES = frozenset({"stopped", "stopping", "failed", "destroyed", "destroying"})
CPU_KINDS = ("shared", "performance")
MEMORY_PER_GB_SECOND: Final = 0.0000019
CPU_PER_SECOND: Final = {"shared": 0.000000325, "performance": 0.0000082}
# Fly's rate limit on creating machines, per app: about 1 request/s with a burst of 3.
CREATE_RATE = RateLimit(per_second=1.0, burst=3)

OPTION_APP = ProviderOption(
    "fly_app",
    "--fly-app",
    "UPLODR_FLY_APP",
    "Fly app the machines belong to (default: $FLY_APP_NAME).",
)
OPTION_IMAGE = ProviderOption(
    "fly_image",
    "--fly-image",
    "UPLODR_FLY_IMAGE",
    "The uplodr image (this repository's Dockerfile) as Fly pulls it, "
    "e.g. registry.fly.io/uplodr:1.",
)
OPTION_REGIONS = ProviderOption(
    "fly_regions",
    "--fly-regions",
    "UPLODR_FLY_REGIONS",
    "Comma-separated regions, tried in order, the next one on a capacity error "
    "(default: Fly chooses).",
)
OPTION_CPU_KIND = ProviderOption(
    "fly_cpu_kind",
    "--fly-cpu-kind",
    "UPLODR_FLY_CPU_KIND",
    "shared or performance (default shared).",
)
OPTION_API_URL = ProviderOption(
    "fly_api_url",
    "--fly-api-url",
    "UPLODR_FLY_API_URL",
    f"Machines API (default $FLY_API_HOSTNAME, else {PUBLIC_API}).",
)
OPTION_GRPC_PORT = ProviderOption(
    "fly_grpc_port",
    "--fly-grpc-port",
    "UPLODR_FLY_GRPC_PORT",
    "Port the worker listens on, on its private address (default 50051).",
)
OPTION_RETRY_DEADLINE = ProviderOption(
    "fly_retry_deadline",
    "--fly-retry-deadline",
    "UPLODR_FLY_RETRY_DEADLINE",
    "Seconds one API operation may take, retries included (default 60).",
)
OPTIONS = (
    OPTION_APP,
    OPTION_IMAGE,
    OPTION_REGIONS,
    OPTION_CPU_KIND,
    OPTION_API_URL,
    OPTION_GRPC_PORT,
    OPTION_RETRY_DEADLINE,
)


@dataclass(frozen=True)
class FlyGuest:
    cpu_kind: str = "shared"
    cpus: int = 2
    memory_mb: int = 1024

    def price_per_second(self) -> float:
        """List price of one second of this guest (see the module docstring)."""
        cpu = CPU_PER_SECOND.get(self.cpu_kind, CPU_PER_SECOND["performance"])
        return self.cpus * cpu + self.memory_mb / 1024 * MEMORY_PER_GB_SECOND


@dataclass(frozen=True)
class FlyConfig:
    """Everything the Fly provider needs. `from_env` reads it from `FLY_API_TOKEN` and
    `UPLODR_FLY_*` variables."""

    token: str = field(repr=False)
    app: str
    image: str
    regions: tuple[str, ...] = ()  # tried in order; empty = let Fly choose
    guest: FlyGuest = FlyGuest()
    api_url: str = PUBLIC_API  # or INTERNAL_API from inside the Fly network
    grpc_port: int = 50051
    # the image's ENTRYPOINT (init.entrypoint) and the worker subcommand (init.cmd)
    worker_command: tuple[str, ...] = ("uplodr", "worker")
    retry_deadline: float = 60.0  # overall budget of one API operation, retries included
    request_timeout: float = 30.0  # one HTTP request (a /wait call gets its own wait on top)
    backoff_initial: float = 0.2
    backoff_max: float = 5.0
    backoff_jitter: float = 1.0  # up to this many seconds added at random to each backoff

    @classmethod
    def from_settings(cls, settings: ProviderSettings) -> FlyConfig:
        """From the shared settings (machine size), the Fly options (--fly-*, UPLODR_FLY_*)
        and FLY_API_TOKEN; FLY_APP_NAME and FLY_API_HOSTNAME (set on Fly) are the defaults of
        the app and API URL. Raises ProviderError with one line."""
        env = settings.env
        app = OPTION_APP.read(settings, str, env.get("FLY_APP_NAME", ""))
        image = OPTION_IMAGE.read(settings, str, "")
        token = env.get("FLY_API_TOKEN", "")
        missing = [
            what
            for what, value in (
                ("FLY_API_TOKEN", token),
                (f"{OPTION_APP.flag} ({OPTION_APP.envvar})", app),
                (f"{OPTION_IMAGE.flag} ({OPTION_IMAGE.envvar})", image),
            )
            if not value
        ]
        if missing:
            raise ProviderError(f"the Fly provider needs {', '.join(missing)}")
        cpu_kind = OPTION_CPU_KIND.read(
            settings, _one_of(CPU_KINDS), "shared", what="shared or performance"
        )
        cpus = settings.cpus or FlyGuest.cpus
        default_memory = FlyGuest.memory_mb if cpu_kind == "shared" else 2048 * cpus
        guest = FlyGuest(cpu_kind, cpus, settings.memory_mb or default_memory)
        if problem := guest_problem(guest.cpu_kind, guest.cpus, guest.memory_mb):
            raise ProviderError(f"--machine-memory/--machine-cpus: {problem}")
        return cls(
            token=token,
            app=app,
            image=image,
            regions=OPTION_REGIONS.read(settings, _regions, ()),
            guest=guest,
            api_url=OPTION_API_URL.read(settings, str, env.get("FLY_API_HOSTNAME") or PUBLIC_API),
            grpc_port=OPTION_GRPC_PORT.read(settings, _port, 50051, what="a port number"),
            retry_deadline=OPTION_RETRY_DEADLINE.read(
                settings, _positive, 60.0, what="a positive number of seconds"
            ),
        )


# Fly's machine sizes: memory in 256 MB steps, per CPU 256 MB-2 GB (shared) or 2-8 GB
# (performance) — fly.io/docs/machines/guides-examples/machine-sizing.
MEMORY_STEP_MB: Final = 256
MEMORY_PER_CPU_MB: Final = {"shared": (256, 2048), "performance": (2048, 8192)}


def guest_problem(cpu_kind: str, cpus: int, memory_mb: int) -> str | None:
    """Why Fly would refuse this guest size, in one line, or None."""
    low, high = MEMORY_PER_CPU_MB.get(cpu_kind, MEMORY_PER_CPU_MB["shared"])
    if memory_mb % MEMORY_STEP_MB:
        return f"Fly machine memory comes in {MEMORY_STEP_MB} MB steps, not {memory_mb} MB"
    if not low * cpus <= memory_mb <= high * cpus:
        return (
            f"{cpus} {cpu_kind} CPU(s) take {low * cpus}-{high * cpus} MB of memory on Fly, "
            f"not {memory_mb} MB"
        )
    return None


def _one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(text)
        return text

    return parse


def _regions(text: str) -> tuple[str, ...]:
    return tuple(region.strip() for region in text.split(",") if region.strip())


def _port(text: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise ValueError(text)
    return port


def _positive(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(text)
    return value


def _address(private_ip: str, port: int) -> str:
    return f"[{private_ip}]:{port}" if ":" in private_ip else f"{private_ip}:{port}"


def _timestamp(value: object) -> float:
    if not isinstance(value, str) or not value:
        return 0.0
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _exit_reason(machine: Mapping[str, Any]) -> StopReason | None:
    """The reason in the machine's latest exit event, when it stopped."""
    memory = (machine.get("config") or {}).get("guest", {}).get("memory_mb")
    for event in sorted(machine.get("events") or [], key=lambda e: -int(e.get("timestamp", 0))):
        request = event.get("request")
        exit_event = request.get("exit_event") if isinstance(request, dict) else None
        if event.get("type") != "exit" or not isinstance(exit_event, dict):
            continue
        if exit_event.get("oom_killed"):
            return StopReason.out_of_memory(int(memory) if memory else None)
        code = int(exit_event.get("exit_code") or 0)
        signal = int(exit_event.get("signal") or -1)
        if signal > 0:
            return StopReason.killed(signal)
        return StopReason.exited(code)
    return None


class _CreateState:
    """Carried across one create's attempts: the region to try next (advanced on a capacity
    error) and whether the last attempt may have created the machine anyway."""

    def __init__(self, regions: tuple[str, ...]) -> None:
        self._regions: tuple[str | None, ...] = regions or (None,)
        self._index = 0
        self.ambiguous = False

    @property
    def current(self) -> str | None:
        return self._regions[self._index % len(self._regions)]

    def next(self) -> bool:
        """Move on; True if the new region has not been tried yet in this round."""
        self._index += 1
        return self._index % len(self._regions) != 0


class FlyProvider:
    """The Provider protocol on Fly Machines."""

    name = "fly"

    def __init__(self, config: FlyConfig, *, transport: httpx.AsyncBaseTransport | None = None):
        self.config = config
        # Remote machines bring their own cores: the cap only bounds the bill.
        self.capabilities = Capabilities(
            shares_host_files=False,
            default_max_machines=16,
            price_per_second=config.guest.price_per_second(),
            create_rate=CREATE_RATE,
            can_stop=True,
        )
        self._api = FlyApi(
            api_url=config.api_url,
            app=config.app,
            token=config.token,
            request_timeout=config.request_timeout,
            retry_deadline=config.retry_deadline,
            backoff_initial=config.backoff_initial,
            backoff_max=config.backoff_max,
            backoff_jitter=config.backoff_jitter,
            transport=transport,
        )
        self._base = self._api.machines

    # -- the protocol ------------------------------------------------------------------------

    async def create(self, spec: MachineSpec) -> Machine:
        name = f"uplodr-{secrets.token_hex(6)}"
        body = self._create_body(name, spec)
        try:
            data = await self._api.retrying(
                self._create_once, body, _CreateState(self.config.regions)
            )
        except Transient as exc:
            raise WorkerUnavailable(f"no Fly machine could be created: {exc}") from None
        return self._machine(data)

    async def wait_started(self, machine: Machine, timeout: float) -> None:
        path = f"{self._base}/{machine.id}/wait"
        deadline = time.monotonic() + timeout
        try:
            async with asyncio.timeout(timeout):
                while True:
                    # whole seconds (the spec's type), at most Fly's 60 s, 408 when they pass
                    wait = max(1, min(MAX_WAIT_CALL, int(deadline - time.monotonic())))
                    params = {"state": "started", "timeout": str(wait)}
                    response = await self._api.request(
                        "wait", "GET", path, params=params, accept=(400, 404, 408), extra=wait
                    )
                    if response.status_code == 200:
                        return
                    if response.status_code != 408:
                        error, _ = fly_error(response)
                        raise WorkerUnavailable(f"Fly machine {machine.id} will not start: {error}")
        except TimeoutError:
            raise WorkerUnavailable(
                f"Fly machine {machine.id} did not start within {timeout:g} s"
            ) from None

    async def list(self, tags: Mapping[str, str]) -> list[Machine]:
        wanted = {**tags, MARKER_TAG: MARKER_VALUE}
        params = {f"metadata.{key}": value for key, value in wanted.items()}
        response = await self._api.request("list", "GET", self._base, params=params)
        found = response.json()
        return [
            self._machine(data)
            for data in (found if isinstance(found, list) else [])
            if data.get("state") not in _GONE_STATES
            and has_tags((data.get("config") or {}).get("metadata") or {}, tags)
        ]

    async def destroy(self, machine_id: str) -> None:
        path = f"{self._base}/{machine_id}"
        await self._api.request("destroy", "DELETE", path, params={"force": "true"}, accept=(404,))

    async def stop(self, machine_id: str) -> None:
        """POST …/stop (the worker gets SIGTERM), then wait until Fly reports it stopped."""
        path = f"{self._base}/{machine_id}"
        response = await self._api.request(
            "stop", "POST", f"{path}/stop", json={"signal": "SIGTERM"}, accept=(404,)
        )
        if response.status_code == 404:
            raise WorkerUnavailable(f"Fly machine {machine_id} is gone")
        params = {"state": "stopped", "timeout": "30"}
        waited = await self._api.request(
            "wait", "GET", f"{path}/wait", params=params, accept=(400, 404, 408), extra=30
        )
        if waited.status_code != 200:
            error, _ = fly_error(waited)
            raise WorkerUnavailable(f"Fly machine {machine_id} did not stop: {error}")

    async def start(self, machine_id: str) -> Machine:
        """POST …/start; the machine as Fly shows it then (follow with `wait_started`)."""
        path = f"{self._base}/{machine_id}"
        response = await self._api.request("start", "POST", f"{path}/start", accept=(404,))
        if response.status_code == 404:
            raise WorkerUnavailable(f"Fly machine {machine_id} is gone")
        shown = await self._api.request("get", "GET", path, accept=(404,))
        if shown.status_code == 404:
            raise WorkerUnavailable(f"Fly machine {machine_id} is gone")
        return self._machine(shown.json())

    async def failure(self, machine_id: str) -> StopReason | None:
        response = await self._api.request(
            "get", "GET", f"{self._base}/{machine_id}", accept=(404,)
        )
        if response.status_code == 404:
            return StopReason.gone("the machine no longer exists")
        data = response.json()
        state = data.get("state")
        if state not in _STOPPED_STATES:
            return None
        if (reason := _exit_reason(data)) is not None:  # an auto-destroyed one keeps its events
            metadata = (data.get("config") or {}).get("metadata") or {}
            return reason.at_deadline(metadata, time.time())
        if state in ("destroyed", "destroying"):
            return StopReason.gone(f"machine {state}")
        return StopReason(StopKind.EXITED, detail=f"machine {state}")

    async def check(self) -> None:
        """One authenticated GET (uplodr's machines of the app), not retried: the token is
        good, the app exists, the API answers within CHECK_TIMEOUT."""
        params = {f"metadata.{MARKER_TAG}": MARKER_VALUE}
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                await self._api.send("check", "GET", self._base, params=params)
        except TimeoutError:
            raise WorkerUnavailable(
                f"Fly API at {self.config.api_url} did not answer within {CHECK_TIMEOUT:g} s"
            ) from None
        except Transient as exc:
            raise WorkerUnavailable(f"Fly API check failed: {exc}") from None

    async def aclose(self) -> None:
        await self._api.aclose()

    # -- internals ---------------------------------------------------------------------------

    def _create_body(self, name: str, spec: MachineSpec) -> dict[str, Any]:
        guest = self.config.guest
        entrypoint, *command = self.config.worker_command
        command += ["--grpc-addr", f"[::]:{self.config.grpc_port}"]
        return {
            "name": name,
            "config": {
                "image": self.config.image,
                "guest": {
                    "cpu_kind": guest.cpu_kind,
                    "cpus": spec.cpus or guest.cpus,
                    "memory_mb": spec.memory_mb or guest.memory_mb,
                },
                "init": {"entrypoint": [entrypoint], "cmd": command},
                "env": {str(k): str(v) for k, v in spec.env.items()},
                "metadata": marked(spec.tags),
                "restart": {"policy": "no"},
                # a machine the pool may stop stays when its worker exits; the reaper ends it
                "auto_destroy": not spec.stoppable,
            },
        }

    async def _create_once(self, body: dict[str, Any], state: _CreateState) -> dict[str, Any]:
        """One create attempt in the current region; advances the region on a capacity error."""
        if state.ambiguous:
            # the previous attempt may have created the machine: adopt it rather than leak it
            adopted = await self._find_by_name(str(body["name"]))
            if adopted is not None:
                return adopted
            state.ambiguous = False
        region = state.current
        attempt = body if region is None else {**body, "region": region}
        try:
            response = await self._api.send("create", "POST", self._base, json=attempt)
        except Ambiguous:
            state.ambiguous = True
            raise
        except Capacity as exc:
            fresh = state.next()
            raise Capacity(f"{region or 'default region'}: {exc}", 0.0 if fresh else None) from None
        data: dict[str, Any] = response.json()
        return data

    async def _find_by_name(self, name: str) -> dict[str, Any] | None:
        params = {f"metadata.{MARKER_TAG}": MARKER_VALUE}
        response = await self._api.send("list", "GET", self._base, params=params)
        found = response.json()
        for data in found if isinstance(found, list) else []:
            if data.get("name") == name and data.get("state") not in _GONE_STATES:
                return dict(data)
        return None

    def _machine(self, data: Mapping[str, Any]) -> Machine:
        config = data.get("config") or {}
        return Machine(
            id=str(data["id"]),
            address=_address(str(data.get("private_ip") or ""), self.config.grpc_port),
            tags=dict(config.get("metadata") or {}),
            created_at=_timestamp(data.get("created_at")),
            state=str(data.get("state") or "unknown"),
        )


def from_settings(settings: ProviderSettings) -> FlyProvider:
    return FlyProvider(FlyConfig.from_settings(settings))
