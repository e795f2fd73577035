"""A Fly Machines API test server: real HTTP on loopback, strict like Fly, machines as processes
or — given a Docker engine — as containers of the real image.

    with FlyApiServer(grpc_port=free_port()) as fly:
        provider = FlyProvider(FlyConfig(token=fly.token, app=fly.app, image="x",
                                         api_url=fly.url, grpc_port=fly.grpc_port))

What it does:
- serves create, get, wait, list (with `metadata.KEY=VALUE` filters) and delete under /v1;
- validates every query and body against Fly's published spec (tests/support/fly_spec.py):
  unknown fields, wrong types, unknown query parameters → 400; its own answers are checked
  against the spec's `Machine` definition too (`spec_errors` collects any mismatch);
- checks `Authorization: Bearer <token>` (401), the app name (404);
- rate-limits per action and machine (per app for create and list) with a token bucket,
  1 request/s and a burst of 3 by default → 429;
- moves machines created → starting → started with configurable latency; `Faults` injects
  region capacity errors, machines stuck in `created`, machines that vanish, random 5xx (or
  the next N of an action), and creates whose answer is lost after the machine was made;
  `injected`, `created`, `destroyed`, `calls` and `statuses` count what happened;
- refuses (422) a guest size Fly refuses (memory in 256 MB steps, per CPU 256 MB-2 GB shared,
  2-8 GB performance);
- process mode (default): runs each machine as a real local process (`python -m uplodr worker
  --grpc-addr 127.0.0.N:PORT`, replaceable through `process_factory`) whose private_ip is its own
  loopback address; the config's image and init are not run;
- container mode (`machines=FlyDockerMachines(...)`, tests/support/fly_docker.py): each machine
  is a container of the config's image with its init.entrypoint/cmd, env and guest size, at a
  private IPv6 address like Fly's 6PN; its exit code and OOM kill become the machine's exit
  event; an image the engine does not have is refused at create (422) as Fly refuses one it
  cannot pull;
- DELETE, or the process/container exiting (auto_destroy), destroys the machine and kills its
  process group or removes its container; `shutdown()` kills everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import math
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .asgi_thread import serve_in_thread
from .fly_docker import ContainerMachine, FlyDockerMachines
from .fly_spec import FlySpec, SpecViolation

STUCK = "created"


@dataclass(frozen=True)
class WorkerLaunch:
    """What a process factory gets: where to listen, the machine's env and config."""

    machine_id: str
    host: str
    port: int
    env: Mapping[str, str]
    config: Mapping[str, Any]


ProcessFactory = Callable[[WorkerLaunch], "subprocess.Popen[bytes]"]


def worker_process(launch: WorkerLaunch) -> subprocess.Popen[bytes]:
    """The real uplodr worker, listening on the machine's private address."""
    return subprocess.Popen(
        [sys.executable, "-m", "uplodr", "worker", "--grpc-addr", f"{launch.host}:{launch.port}"],
        env={**os.environ, **launch.env},
        start_new_session=True,
    )


def logged_worker_process(folder: Path) -> ProcessFactory:
    """The real worker, with its output in `folder/<machine id>.log`."""
    folder.mkdir(parents=True, exist_ok=True)

    def start(launch: WorkerLaunch) -> subprocess.Popen[bytes]:
        with (folder / f"{launch.machine_id}.log").open("wb") as out:
            return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uplodr",
                    "worker",
                    "--grpc-addr",
                    f"{launch.host}:{launch.port}",
                ],
                env={**os.environ, **launch.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    return start


_STANDIN = """
import os, socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16); s.settimeout(0.1)
parent, started = os.getppid(), time.monotonic()
after = float(os.environ.get("STANDIN_EXIT_AFTER") or "inf")
while time.monotonic() - started < after:
    if os.getppid() != parent:  # the test process died: do not outlive it
        sys.exit(0)
    try:
        c, _ = s.accept()
    except TimeoutError:
        continue
    c.sendall(b"uplodr-standin\\n"); c.close()
sys.exit(int(os.environ.get("STANDIN_EXIT_CODE", "0")))
"""


def standin_process(launch: WorkerLaunch) -> subprocess.Popen[bytes]:
    """A stand-in worker: accepts TCP on the address and greets; env STANDIN_EXIT_AFTER=seconds
    and STANDIN_EXIT_CODE=n make it exit on its own."""
    return subprocess.Popen(
        [sys.executable, "-c", _STANDIN, launch.host, str(launch.port)],
        env={**os.environ, **launch.env},
        start_new_session=True,
    )


@dataclass
class Faults:
    """Mutable at any time from the test thread; probabilities are 0..1."""

    capacity_regions: set[str] = field(default_factory=set)
    # Fly answers a region without room with ErrorResponse.status "insufficient_capacity"
    # (422 on create; 409/412 with flyd's "insufficient ..." text on older paths)
    capacity_status: int = 422
    stuck_in_created: float = 0.0  # a new machine never leaves `created`
    vanish: float = 0.0  # a started machine disappears (record and process) at once
    error_5xx: float = 0.0  # any request answers 503 before doing anything
    lost_create: float = 0.0  # create makes the machine, then answers 500
    capacity: float = 0.0  # a create finds its region (any region) without room
    # the next N requests of an action ("create", "delete", "wait", ...) answer 503
    fail_next: Counter[str] = field(default_factory=Counter)
    seed: int | None = None


@dataclass
class FakeMachine:
    id: str
    name: str
    region: str
    config: dict[str, Any]
    ip_index: int
    created_at: str
    instance_id: str
    private_ip: str
    state: str = "created"
    updated_at: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)
    process: subprocess.Popen[bytes] | ContainerMachine | None = None

    def event(self, kind: str, status: str, source: str = "flyd", **request: Any) -> None:
        entry: dict[str, Any] = {
            "id": secrets.token_hex(8),
            "type": kind,
            "status": status,
            "source": source,
            "timestamp": int(time.time() * 1000),
        }
        if request:
            entry["request"] = request
        self.events.append(entry)
        self.state = status
        self.updated_at = _now()

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "region": self.region,
            "instance_id": self.instance_id,
            "private_ip": self.private_ip,
            "config": self.config,
            "created_at": self.created_at,
            "updated_at": self.updated_at or self.created_at,
            "events": list(reversed(self.events)),
        }


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _error(http_status: int, message: str, /, **extra: str) -> JSONResponse:
    """Fly's ErrorResponse: {"error": ..., "status": ...}."""
    return JSONResponse({"error": message, **extra}, status_code=http_status)


class _Buckets:
    """Token buckets: `rate` per second, `burst` deep, one per key."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._state: dict[tuple[str, str], tuple[float, float]] = {}

    def take(self, key: tuple[str, str]) -> float:
        """0 if allowed, else seconds until a token is there."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        tokens, last = self._state.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= 1:
            self._state[key] = (tokens - 1, now)
            return 0.0
        self._state[key] = (tokens, now)
        return (1 - tokens) / self.rate


class FlyApiServer:
    def __init__(
        self,
        *,
        grpc_port: int,
        token: str = "fly-test-token",
        app: str = "uplodr-test",
        boot_latency: float = 0.05,  # created → starting (the process is spawned)
        start_latency: float = 0.05,  # starting → started
        rate: float = 1.0,  # requests per second per action and machine; 0 = unlimited
        burst: int = 3,
        retry_after: float | None = None,  # Retry-After header on a 429, if set
        retry_after_date: bool = False,  # ... as an HTTP-date instead of seconds
        process_factory: ProcessFactory = worker_process,
        faults: Faults | None = None,
        spec: FlySpec | None = None,
        machines: FlyDockerMachines | None = None,  # container mode
    ) -> None:
        self.grpc_port = grpc_port
        self.token = token
        self.app = app
        self.boot_latency = boot_latency
        self.start_latency = start_latency
        self.retry_after = retry_after
        self.retry_after_date = retry_after_date
        self.process_factory = process_factory
        self.containers = machines
        self.faults = faults or Faults()
        self.spec = spec or FlySpec()
        self.calls: Counter[str] = Counter()  # per operation, every request that was routed
        self.statuses: Counter[tuple[str, int]] = Counter()  # (operation, HTTP status)
        self.spec_errors: list[str] = []  # answers of ours that the spec does not allow
        # faults that fired, by kind: rate_limited, error_5xx, capacity, stuck_in_created,
        # vanish, lost_create
        self.injected: Counter[str] = Counter()
        self.created = 0  # machines made (a lost create's machine included)
        self.started_again = 0  # stopped machines started again (POST …/start)
        # machines destroyed, by who: "user" (DELETE), "flyd" (auto_destroy after the process
        # exited), "vanish", "shutdown"
        self.destroyed: Counter[str] = Counter()
        self._machine_schema = self.spec.definition("Machine")
        self._buckets = _Buckets(rate, burst)
        self._random = random.Random(self.faults.seed)
        self._lock = threading.RLock()
        self._machines: dict[str, FakeMachine] = {}
        self._graveyard: dict[str, FakeMachine] = {}
        self._next_ip = 2
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.url = ""
        base = self.spec.base_path
        self.asgi = Starlette(
            routes=[
                Route(base + "/apps/{app}/machines", self._list, methods=["GET"]),
                Route(base + "/apps/{app}/machines", self._create, methods=["POST"]),
                Route(base + "/apps/{app}/machines/{id}", self._show, methods=["GET"]),
                Route(base + "/apps/{app}/machines/{id}", self._delete, methods=["DELETE"]),
                Route(base + "/apps/{app}/machines/{id}/wait", self._wait, methods=["GET"]),
                Route(base + "/apps/{app}/machines/{id}/stop", self._stop, methods=["POST"]),
                Route(base + "/apps/{app}/machines/{id}/start", self._start, methods=["POST"]),
            ],
            lifespan=self._lifespan,
        )

    # -- running -----------------------------------------------------------------------------

    def start(self) -> FlyApiServer:
        self._server, self._thread, port = serve_in_thread(self.asgi, "fly-api", lifespan="on")
        self.url = f"http://127.0.0.1:{port}"
        return self

    def shutdown(self) -> None:
        """Destroy every machine, kill every process, stop the server."""
        with self._lock:
            for machine in list(self._machines.values()):
                self._destroy(machine, "shutdown")
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FlyApiServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self._loop = asyncio.get_running_loop()
        monitor = asyncio.create_task(self._monitor())
        yield
        monitor.cancel()

    # -- what tests look at ------------------------------------------------------------------

    @property
    def machines_alive(self) -> int:
        with self._lock:
            return len(self._machines)

    @property
    def processes_alive(self) -> int:
        with self._lock:
            machines = [*self._machines.values(), *self._graveyard.values()]
            return sum(1 for m in machines if m.process is not None and m.process.poll() is None)

    def machine(self, machine_id: str) -> FakeMachine | None:
        with self._lock:
            return self._machines.get(machine_id) or self._graveyard.get(machine_id)

    def snapshot(self) -> list[FakeMachine]:
        """The machines that exist now (not destroyed)."""
        with self._lock:
            return list(self._machines.values())

    def kill_process(self, machine_id: str) -> bool:
        """SIGKILL the machine's worker process, as a crash would (the machine then stops and,
        with auto_destroy, is destroyed by flyd). False if it had no live process."""
        with self._lock:
            machine = self._machines.get(machine_id)
            process = machine.process if machine is not None else None
        if process is None or process.poll() is not None:
            return False
        if isinstance(process, ContainerMachine):
            return process.crash()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        return True

    def limit(self, rate: float, burst: int = 3) -> None:
        """Change the rate limit (requests/s per action and machine; 0 = unlimited)."""
        with self._lock:
            self._buckets = _Buckets(rate, burst)

    def vanish(self, machine_id: str) -> None:
        """The machine disappears without a trace: process killed, no record left."""
        with self._lock:
            machine = self._machines.pop(machine_id, None)
            if machine is not None:
                _kill(machine)
                self.destroyed["vanish"] += 1

    # -- request pipeline --------------------------------------------------------------------

    async def _admit(
        self, request: Request, operation: str, bucket: str, machine_id: str = ""
    ) -> tuple[Response | None, dict[str, str], Any]:
        """Auth, app, rate limit, injected 5xx, spec validation — an error response or the
        validated query and body."""
        action = operation.removeprefix("Machines_")
        self.calls[action] += 1
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return _error(401, "You must be authenticated to view this."), {}, None
        if request.path_params["app"] != self.app:
            return _error(404, "app not found"), {}, None
        wait = self._buckets.take((action, machine_id or bucket))
        if wait:
            self.injected["rate_limited"] += 1
            headers = {} if self.retry_after is None else {"Retry-After": self._retry_after()}
            body = {"error": f"rate limit exceeded for {action}"}
            return JSONResponse(body, status_code=429, headers=headers), {}, None
        with self._lock:
            forced = self.faults.fail_next[action] > 0
            if forced:
                self.faults.fail_next[action] -= 1
        if forced or self._random.random() < self.faults.error_5xx:
            self.injected["error_5xx"] += 1
            return _error(503, "simulated outage"), {}, None
        try:
            query = self.spec.check_query(operation, list(request.query_params.multi_items()))
            body = self.spec.check_body(operation, await request.body())
        except SpecViolation as exc:
            return _error(400, str(exc)), {}, None
        return None, query, body

    def _retry_after(self) -> str:
        assert self.retry_after is not None
        if not self.retry_after_date:
            return f"{self.retry_after:g}"
        # HTTP-dates have whole seconds: round up so the wait is never shorter than asked
        return email.utils.format_datetime(
            datetime.fromtimestamp(math.ceil(time.time() + self.retry_after), UTC), usegmt=True
        )

    def _answer(self, operation: str, response: Response) -> Response:
        self.statuses[(operation.removeprefix("Machines_"), response.status_code)] += 1
        return response

    def _machine_json(self, machine: FakeMachine) -> dict[str, Any]:
        data = machine.json()
        for error in self._machine_schema.iter_errors(data):
            self.spec_errors.append(f"Machine answer: {error.message}")
        return data

    # -- endpoints ---------------------------------------------------------------------------

    async def _create(self, request: Request) -> Response:
        op = "Machines_create"
        refused, _, body = await self._admit(request, op, self.app)
        if refused is not None:
            return self._answer(op, refused)
        config = dict(body.get("config") or {})
        region = str(body.get("region") or "local")
        if not config.get("image"):
            return self._answer(op, _error(422, "a machine needs config.image"))
        if problem := _guest_problem(config.get("guest") or {}):
            return self._answer(op, _error(422, f"invalid config.guest: {problem}"))
        if self.containers is not None and not await asyncio.to_thread(
            self.containers.resolve, str(config["image"])
        ):
            message = f"failed to get manifest {config['image']}: not found"
            return self._answer(op, _error(422, message))
        if region in self.faults.capacity_regions or self._random.random() < self.faults.capacity:
            self.injected["capacity"] += 1
            message = f"insufficient resources to create new machine in {region}"
            status = self.faults.capacity_status
            return self._answer(op, _error(status, message, status="insufficient_capacity"))
        with self._lock:
            index = self._allocate_ip()
            machine = FakeMachine(
                id=secrets.token_hex(7),
                name=str(body.get("name") or f"machine-{secrets.token_hex(4)}"),
                region=region,
                config=config,
                ip_index=index,
                created_at=_now(),
                instance_id=secrets.token_hex(13).upper(),
                private_ip=(
                    f"127.0.0.{index}"
                    if self.containers is None
                    else self.containers.private_ip(index)
                ),
            )
            machine.event("launch", "created", source="user")
            self._machines[machine.id] = machine
            self.created += 1
            if self._random.random() >= self.faults.stuck_in_created:
                self._later(self.boot_latency, self._boot, machine.id)
            else:
                self.injected["stuck_in_created"] += 1
            answer = self._machine_json(machine)
        if self._random.random() < self.faults.lost_create:
            self.injected["lost_create"] += 1
            return self._answer(op, _error(500, "simulated: lost the answer"))
        return self._answer(op, JSONResponse(answer))

    async def _show(self, request: Request) -> Response:
        op = "Machines_show"
        machine_id = request.path_params["id"]
        refused, _, _ = await self._admit(request, op, self.app, machine_id)
        if refused is not None:
            return self._answer(op, refused)
        machine = self.machine(machine_id)
        if machine is None:
            return self._answer(op, _error(404, "machine not found"))
        with self._lock:
            return self._answer(op, JSONResponse(self._machine_json(machine)))

    async def _list(self, request: Request) -> Response:
        op = "Machines_list"
        refused, query, _ = await self._admit(request, op, self.app)
        if refused is not None:
            return self._answer(op, refused)
        wanted = {k.removeprefix("metadata."): v for k, v in query.items() if "." in k}
        with self._lock:
            machines = list(self._machines.values())
            if query.get("include_deleted") == "true":
                machines += list(self._graveyard.values())
            answer = [
                self._machine_json(m)
                for m in machines
                if ("region" not in query or m.region == query["region"])
                and all((m.config.get("metadata") or {}).get(k) == v for k, v in wanted.items())
            ]
        return self._answer(op, JSONResponse(answer))

    async def _delete(self, request: Request) -> Response:
        op = "Machines_delete"
        machine_id = request.path_params["id"]
        refused, query, _ = await self._admit(request, op, self.app, machine_id)
        if refused is not None:
            return self._answer(op, refused)
        with self._lock:
            machine = self._machines.get(machine_id)
            if machine is None:
                return self._answer(op, _error(404, "machine not found"))
            if machine.state in ("started", "starting") and query.get("force") != "true":
                message = "failed_precondition: machine still active, refusing to delete"
                return self._answer(op, _error(412, message))
            self._destroy(machine, "user")
        return self._answer(op, JSONResponse({"ok": True}))

    async def _wait(self, request: Request) -> Response:
        op = "Machines_wait"
        machine_id = request.path_params["id"]
        refused, query, _ = await self._admit(request, op, self.app, machine_id)
        if refused is not None:
            return self._answer(op, refused)
        want = query.get("state", "started")
        deadline = time.monotonic() + min(60, int(query.get("timeout", "60")))
        while True:
            machine = self.machine(machine_id)
            if machine is None or (machine.id in self._graveyard and want != "destroyed"):
                return self._answer(op, _error(404, "machine not found"))
            if machine.state == want:
                return self._answer(op, JSONResponse({"ok": True}))
            if want == "started" and machine.state == "stopped":
                return self._answer(op, _error(400, "machine is stopped, it will not start"))
            if time.monotonic() >= deadline:
                message = f"deadline_exceeded: timeout waiting for machine to be {want}"
                return self._answer(op, _error(408, message))
            await asyncio.sleep(0.02)

    async def _stop(self, request: Request) -> Response:
        """Stop: the worker gets SIGTERM (then SIGKILL), the machine stays `stopped`."""
        op = "Machines_stop"
        machine_id = request.path_params["id"]
        refused, _, _ = await self._admit(request, op, self.app, machine_id)
        if refused is not None:
            return self._answer(op, refused)
        with self._lock:
            machine = self._machines.get(machine_id)
            if machine is None:
                return self._answer(op, _error(404, "machine not found"))
            process, machine.process = machine.process, None
            machine.event("stop", "stopping", source="user")
        if isinstance(process, ContainerMachine):
            await asyncio.to_thread(process.kill)  # started again as a new container
        elif process is not None:
            await asyncio.to_thread(_terminate, process)
        with self._lock:
            if machine.state == "stopping":
                machine.event("exit", "stopped", exit_event={"requested_stop": True})
        return self._answer(op, JSONResponse({"ok": True}))

    async def _start(self, request: Request) -> Response:
        """Start a stopped machine: its worker runs again, same config, after the start latency."""
        op = "Machines_start"
        machine_id = request.path_params["id"]
        refused, _, _ = await self._admit(request, op, self.app, machine_id)
        if refused is not None:
            return self._answer(op, refused)
        with self._lock:
            machine = self._machines.get(machine_id)
            if machine is None:
                return self._answer(op, _error(404, "machine not found"))
            previous = machine.state
            if previous == "stopped":
                self.started_again += 1
                machine.state = "created"
                self._later(0.0, self._boot, machine_id)
        return self._answer(op, JSONResponse({"previous_state": previous}))

    # -- machine life ------------------------------------------------------------------------

    def _later(self, delay: float, callback: Callable[[str], None], machine_id: str) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._loop.call_later, delay, callback, machine_id)

    def _boot(self, machine_id: str) -> None:
        with self._lock:
            machine = self._machines.get(machine_id)
            if machine is None or machine.state != "created":
                return
            machine.event("start", "starting")
            launch = WorkerLaunch(
                machine_id=machine.id,
                host=machine.private_ip,
                port=self.grpc_port,
                env={
                    **(machine.config.get("env") or {}),
                    "FLY_MACHINE_ID": machine.id,
                    "FLY_REGION": machine.region,
                    "FLY_APP_NAME": self.app,
                    "FLY_PRIVATE_IP": machine.private_ip,
                },
                config=machine.config,
            )
            if self.containers is None:
                machine.process = self.process_factory(launch)
            else:
                machine.process = self.containers.start(launch)
        self._later(self.start_latency, self._started, machine_id)

    def _started(self, machine_id: str) -> None:
        with self._lock:
            machine = self._machines.get(machine_id)
            if machine is None or machine.state != "starting":
                return
            process = machine.process
            if isinstance(process, ContainerMachine) and not process.running.is_set():
                if process.poll() is None:  # still being made: started once it runs
                    self._later(0.02, self._started, machine_id)
                return  # exited before it ran: the monitor stops it
            machine.event("start", "started")
            if self._random.random() < self.faults.vanish:
                self.injected["vanish"] += 1
                self.vanish(machine_id)

    async def _monitor(self) -> None:
        """A process that exits stops its machine; auto_destroy then destroys it."""
        while True:
            await asyncio.sleep(0.02)
            with self._lock:
                for machine in list(self._machines.values()):
                    process = machine.process
                    code = None if process is None else process.poll()
                    if code is None:
                        continue
                    exit_event = {
                        "exit_code": max(code, 0),
                        "signal": -code if code < 0 else -1,
                        "oom_killed": getattr(process, "oom_killed", False),
                        "requested_stop": False,
                        "exited_at": _now(),
                    }
                    machine.event("exit", "stopped", exit_event=exit_event)
                    if machine.config.get("auto_destroy"):
                        self._destroy(machine, "flyd")

    def _destroy(self, machine: FakeMachine, source: str) -> None:
        _kill(machine)
        machine.event("destroy", "destroyed", source=source)
        if self._machines.pop(machine.id, None) is not None:
            self.destroyed[source] += 1
        self._graveyard[machine.id] = machine

    def _allocate_ip(self) -> int:
        used = {m.ip_index for m in self._machines.values()}
        for step in range(253):
            candidate = 2 + (self._next_ip - 2 + step) % 253
            if candidate not in used:
                self._next_ip = candidate + 1
                return candidate
        raise RuntimeError("the test server has no loopback address left (253 machines)")


def _terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the worker's process group, SIGKILL what is left after 5 s (Fly's stop)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def _guest_problem(guest: Mapping[str, Any]) -> str | None:
    """Fly's sizing rules (fly.io/docs/machines/guides-examples/machine-sizing)."""
    kind, cpus = guest.get("cpu_kind") or "shared", int(guest.get("cpus") or 1)
    memory = int(guest.get("memory_mb") or 256 * cpus)
    low, high = (2048, 8192) if kind == "performance" else (256, 2048)
    if memory % 256:
        return f"memory_mb must be a multiple of 256, not {memory}"
    if not low * cpus <= memory <= high * cpus:
        return f"{cpus} {kind} cpus take {low * cpus}-{high * cpus} MB, not {memory}"
    return None


def _kill(machine: FakeMachine) -> None:
    process = machine.process
    if isinstance(process, ContainerMachine):
        process.kill()  # removes the container, running or exited
        return
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
