"""Fly Machines provider: workers on Fly Machines through the Machines REST API (httpx, async).

Calls (all under /v1/apps/{app}/machines, only fields from Fly's published Swagger spec):
create `POST` · wait `GET {id}/wait?state=started&timeout=N` · list `GET ?metadata.K=V` ·
failure `GET {id}` · destroy `DELETE {id}?force=true`. A machine's whole life costs three calls
(create, wait, destroy) when it boots within 60 s.

The worker command goes in `config.init.cmd` (`uplodr worker --grpc-addr [::]:PORT`), which the
spec has and which works whatever the image's CMD is; the worker listens on every address so its
6PN private IPv6 address reaches it. The env holds only `MachineSpec.env`.

Retries: 429 (honouring Retry-After), 5xx, timeouts, connection errors and capacity errors are
retried with exponential backoff and jitter under one overall deadline by stamina; a capacity
error moves on to the next region at once and backs off only after every region refused. What
cannot be fixed by retrying (400/401/403/404/422) raises ProviderError with Fly's own message.
A create that failed ambiguously (timeout or 5xx: Fly may have made the machine) looks the
machine up by its name before trying again, so a retried create never leaks a machine.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import stamina

from uplodr.errors import ProviderError, WorkerUnavailable
from uplodr.machines.base import MARKER_TAG, MARKER_VALUE, Machine, MachineSpec

PUBLIC_API = "https://api.machines.dev"
INTERNAL_API = "http://_api.internal:4280"
MAX_WAIT_CALL = 60  # Fly's /wait blocks at most 60 s per call
_RETRY_AFTER_CAP = 30.0
_GONE_STATES = frozenset({"destroyed", "destroying"})
_STOPPED_STATES = frozenset({"stopped", "stopping", "failed", "destroyed", "destroying"})


@dataclass(frozen=True)
class FlyGuest:
    cpu_kind: str = "shared"
    cpus: int = 2
    memory_mb: int = 1024


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
    worker_command: tuple[str, ...] = ("uplodr", "worker")
    retry_deadline: float = 60.0  # overall budget of one API operation, retries included
    request_timeout: float = 30.0  # one HTTP request (a /wait call gets its own wait on top)
    backoff_initial: float = 0.2
    backoff_max: float = 5.0
    backoff_jitter: float = 1.0  # up to this many seconds added at random to each backoff

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FlyConfig:
        """FLY_API_TOKEN, UPLODR_FLY_APP (or FLY_APP_NAME), UPLODR_FLY_IMAGE,
        UPLODR_FLY_REGIONS (comma-separated), UPLODR_FLY_CPU_KIND, UPLODR_FLY_CPUS,
        UPLODR_FLY_MEMORY_MB, UPLODR_FLY_API_URL (or FLY_API_HOSTNAME), UPLODR_FLY_GRPC_PORT,
        UPLODR_FLY_RETRY_DEADLINE."""
        env = os.environ if env is None else env
        missing = [
            name
            for name, value in (
                ("FLY_API_TOKEN", env.get("FLY_API_TOKEN")),
                ("UPLODR_FLY_APP", env.get("UPLODR_FLY_APP") or env.get("FLY_APP_NAME")),
                ("UPLODR_FLY_IMAGE", env.get("UPLODR_FLY_IMAGE")),
            )
            if not value
        ]
        if missing:
            raise ProviderError(f"Fly provider needs {', '.join(missing)} to be set")
        guest = FlyGuest()
        try:
            return cls(
                token=env["FLY_API_TOKEN"],
                app=env.get("UPLODR_FLY_APP") or env["FLY_APP_NAME"],
                image=env["UPLODR_FLY_IMAGE"],
                regions=tuple(
                    r.strip() for r in env.get("UPLODR_FLY_REGIONS", "").split(",") if r.strip()
                ),
                guest=FlyGuest(
                    cpu_kind=env.get("UPLODR_FLY_CPU_KIND", guest.cpu_kind),
                    cpus=int(env.get("UPLODR_FLY_CPUS", guest.cpus)),
                    memory_mb=int(env.get("UPLODR_FLY_MEMORY_MB", guest.memory_mb)),
                ),
                api_url=env.get("UPLODR_FLY_API_URL") or env.get("FLY_API_HOSTNAME") or PUBLIC_API,
                grpc_port=int(env.get("UPLODR_FLY_GRPC_PORT", 50051)),
                retry_deadline=float(env.get("UPLODR_FLY_RETRY_DEADLINE", 60.0)),
            )
        except ValueError as exc:
            raise ProviderError(f"Fly provider configuration: {exc}") from None


class _Transient(Exception):
    """A failure that retrying may fix; `retry_after` overrides the backoff (seconds)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Capacity(_Transient):
    """The region has no room for the machine."""


class _Ambiguous(_Transient):
    """The request may have taken effect (timeout, 5xx)."""


def _backoff(exc: Exception) -> bool | float:
    """stamina's hook: retry transient failures, after Retry-After when the API gave one."""
    if isinstance(exc, _Transient):
        return True if exc.retry_after is None else exc.retry_after
    return False


def _fly_error(response: httpx.Response) -> tuple[str, str]:
    """Fly's `error` text and `status` code (ErrorResponse), or the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip(), ""
    if isinstance(body, dict):
        return str(body.get("error") or body)[:300], str(body.get("status") or "")
    return str(body)[:300], ""


def _is_capacity(response: httpx.Response, error: str, status: str) -> bool:
    # The API classifies region capacity as status "insufficient_capacity" (spec:
    # main.statusCode); older paths answer 409/412 with flyd's "insufficient ..." text.
    if status == "insufficient_capacity":
        return True
    text = error.lower()
    return response.status_code in (409, 412) and ("insufficient" in text or "no capacity" in text)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), _RETRY_AFTER_CAP)
    except ValueError:
        return None


def _address(private_ip: str, port: int) -> str:
    return f"[{private_ip}]:{port}" if ":" in private_ip else f"{private_ip}:{port}"


def _timestamp(value: object) -> float:
    if not isinstance(value, str) or not value:
        return 0.0
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _exit_reason(machine: Mapping[str, Any]) -> str | None:
    """A short reason from the machine's latest exit event, when it stopped."""
    memory = (machine.get("config") or {}).get("guest", {}).get("memory_mb")
    for event in sorted(machine.get("events") or [], key=lambda e: -int(e.get("timestamp", 0))):
        request = event.get("request")
        exit_event = request.get("exit_event") if isinstance(request, dict) else None
        if event.get("type") != "exit" or not isinstance(exit_event, dict):
            continue
        if exit_event.get("oom_killed"):
            return f"out of memory ({memory} MB limit)" if memory else "out of memory"
        code = int(exit_event.get("exit_code") or 0)
        signal = int(exit_event.get("signal") or -1)
        if signal > 0:
            return f"worker killed by signal {signal}"
        if code:
            return f"worker exited with code {code}"
        return "worker exited"
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
        self._base = f"/v1/apps/{config.app}/machines"
        self._client = httpx.AsyncClient(
            base_url=config.api_url.rstrip("/"),
            headers={"Authorization": f"Bearer {config.token}"},
            timeout=config.request_timeout,
            transport=transport,
        )
        self._retrying = stamina.AsyncRetryingCaller(
            attempts=None,
            timeout=config.retry_deadline,
            wait_initial=config.backoff_initial,
            wait_max=config.backoff_max,
            wait_jitter=config.backoff_jitter,
        ).on(_backoff)

    # -- the protocol ------------------------------------------------------------------------

    async def create(self, spec: MachineSpec) -> Machine:
        name = f"uplodr-{secrets.token_hex(6)}"
        body = self._create_body(name, spec)
        try:
            data = await self._retrying(self._create_once, body, _CreateState(self.config.regions))
        except _Transient as exc:
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
                    response = await self._request(
                        "wait", "GET", path, params=params, accept=(400, 404, 408), extra=wait
                    )
                    if response.status_code == 200:
                        return
                    if response.status_code != 408:
                        error, _ = _fly_error(response)
                        raise WorkerUnavailable(f"Fly machine {machine.id} will not start: {error}")
        except TimeoutError:
            raise WorkerUnavailable(
                f"Fly machine {machine.id} did not start within {timeout:g} s"
            ) from None

    async def list(self, tags: Mapping[str, str]) -> list[Machine]:
        wanted = {**tags, MARKER_TAG: MARKER_VALUE}
        params = {f"metadata.{key}": value for key, value in wanted.items()}
        response = await self._request("list", "GET", self._base, params=params)
        found = response.json()
        return [
            self._machine(data)
            for data in (found if isinstance(found, list) else [])
            if data.get("state") not in _GONE_STATES
            and all(
                ((data.get("config") or {}).get("metadata") or {}).get(key) == value
                for key, value in wanted.items()
            )
        ]

    async def destroy(self, machine_id: str) -> None:
        path = f"{self._base}/{machine_id}"
        await self._request("destroy", "DELETE", path, params={"force": "true"}, accept=(404,))

    async def failure(self, machine_id: str) -> str | None:
        response = await self._request("get", "GET", f"{self._base}/{machine_id}", accept=(404,))
        if response.status_code == 404:
            return "the machine no longer exists"
        data = response.json()
        if data.get("state") not in _STOPPED_STATES:
            return None
        return _exit_reason(data) or f"machine {data.get('state')}"

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- internals ---------------------------------------------------------------------------

    def _create_body(self, name: str, spec: MachineSpec) -> dict[str, Any]:
        guest = self.config.guest
        command = [*self.config.worker_command, "--grpc-addr", f"[::]:{self.config.grpc_port}"]
        return {
            "name": name,
            "config": {
                "image": self.config.image,
                "guest": {
                    "cpu_kind": guest.cpu_kind,
                    "cpus": guest.cpus,
                    "memory_mb": spec.memory_mb or guest.memory_mb,
                },
                "init": {"cmd": command},
                "env": {str(k): str(v) for k, v in spec.env.items()},
                "metadata": {
                    **{str(k): str(v) for k, v in spec.tags.items()},
                    MARKER_TAG: MARKER_VALUE,
                },
                "restart": {"policy": "no"},
                "auto_destroy": True,
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
            response = await self._send("create", "POST", self._base, json=attempt)
        except _Ambiguous:
            state.ambiguous = True
            raise
        except _Capacity as exc:
            fresh = state.next()
            raise _Capacity(
                f"{region or 'default region'}: {exc}", 0.0 if fresh else None
            ) from None
        data: dict[str, Any] = response.json()
        return data

    async def _find_by_name(self, name: str) -> dict[str, Any] | None:
        params = {f"metadata.{MARKER_TAG}": MARKER_VALUE}
        response = await self._send("list", "GET", self._base, params=params)
        found = response.json()
        for data in found if isinstance(found, list) else []:
            if data.get("name") == name and data.get("state") not in _GONE_STATES:
                return dict(data)
        return None

    async def _request(
        self,
        action: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Mapping[str, Any] | None = None,
        accept: tuple[int, ...] = (),
        extra: float = 0.0,
    ) -> httpx.Response:
        """One API call, retried on transient failures under the deadline."""
        try:
            return await self._retrying(
                self._send, action, method, path, params, json, accept, extra
            )
        except _Transient as exc:
            raise WorkerUnavailable(f"Fly API {action} failed: {exc}") from None

    async def _send(
        self,
        action: str,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        json: Mapping[str, Any] | None = None,
        accept: tuple[int, ...] = (),
        extra: float = 0.0,
    ) -> httpx.Response:
        """One HTTP request; returns 2xx and `accept`ed answers, raises everything else."""
        timeout = self.config.request_timeout + extra
        try:
            response = await self._client.request(
                method, path, params=params, json=json, timeout=timeout
            )
        except httpx.TimeoutException:
            raise _Ambiguous(f"no answer within {timeout:g} s") from None
        except httpx.TransportError as exc:
            raise _Transient(f"cannot reach {self.config.api_url}: {type(exc).__name__}") from None
        status = response.status_code
        if status < 300 or status in accept:
            return response
        error, code = self._scrub(*_fly_error(response))
        if status == 429:
            raise _Transient("rate limited (429)", _retry_after(response))
        if action == "create" and _is_capacity(response, error, code):
            raise _Capacity(f"{status} {error}".strip())
        if status >= 500:
            raise _Ambiguous(f"{status} {error}".strip())
        hint = " (check FLY_API_TOKEN)" if status in (401, 403) else ""
        raise ProviderError(f"Fly API refused {action} with {status}: {error}{hint}")

    def _scrub(self, error: str, code: str) -> tuple[str, str]:
        token = self.config.token
        return (error.replace(token, "<token>") if token else error), code

    def _machine(self, data: Mapping[str, Any]) -> Machine:
        config = data.get("config") or {}
        return Machine(
            id=str(data["id"]),
            address=_address(str(data.get("private_ip") or ""), self.config.grpc_port),
            tags=dict(config.get("metadata") or {}),
            created_at=_timestamp(data.get("created_at")),
            state=str(data.get("state") or "unknown"),
        )
