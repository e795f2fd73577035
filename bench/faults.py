"""Fault injection: hundreds of jobs through a real `uplodr serve --provider fly` as things break.

    uv run python -m bench.faults [--jobs 200] [--seed 1] [--concurrency 4] [--json FILE]
                                  [--pool-idle 5]  (the pool on; default 0: a machine per job)

What runs: a real single-node Swift (the S3 store the workers write to — a remote provider
cannot write to the gateway's local folder, and the test keeps that production rule instead of
adding an escape hatch), the Fly API test server (tests/support/fly_api.py, its machines are real
`uplodr worker` processes) and `uplodr serve --provider fly` as a real process configured only by
FLY_API_TOKEN and UPLODR_FLY_* variables, exactly as in production except for the API URL.

What breaks, at random (seeded):
- on the Fly API: the rate limit (429), random 503s, capacity errors (→ next region), machines
  stuck in `created` (→ the boot deadline → destroyed), machines that vanish, creates whose
  answer is lost after the machine was made;
- workers SIGKILLed while their job runs;
- clients that hang up mid-upload and mid-conversion; images that cannot be decoded;
- jobs of an in-process Dispatcher (same provider, same server) cancelled during create, during
  boot and during the stream (the phase is watched through the dispatcher's public events);
- the gateway process SIGKILLed mid-job and restarted on the same port: its orphans end
  themselves (worker idle timeout → the process exits → auto_destroy), and the restarted
  gateway's reaper (or, at the end, `uplodr reap` as a separate process) destroys what has no
  process (stuck in `created`).

Then it checks that every job ended in success or a clear error — a JSON error with a known
code, the client's own hang-up, or the connection of a gateway that was killed — and that zero
machines and zero worker processes are left. It prints the counts; `--json` writes them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.support.fly import fly_config, fly_env
from tests.support.fly_api import Faults, FlyApiServer, logged_worker_process
from tests.support.gateway import GatewayProcess
from tests.support.images import noise_png
from tests.support.phases import PhaseWatch
from tests.support.procs import RUN_MARK, free_port, marked_processes, run_uplodr
from tests.support.swift import SwiftServer
from uplodr.dispatch.dispatcher import Dispatcher, DispatchSettings
from uplodr.dispatch.lease import LeaseSettings
from uplodr.dispatch.worker_client import UploadSource
from uplodr.errors import STATUSES, UplodrError
from uplodr.gateway.run import GatewayOptions, worker_env
from uplodr.machines.fly import FlyProvider

REPO = Path(__file__).resolve().parents[1]
BUCKET = "faults"

# job kinds and their weights
KINDS: dict[str, float] = {
    "plain": 0.50,
    "bad_image": 0.04,
    "hangup_upload": 0.08,
    "hangup_convert": 0.10,
    "kill_worker": 0.08,
    "cancel_create": 0.06,
    "cancel_boot": 0.07,
    "cancel_stream": 0.07,
}


@dataclass
class FaultSettings:
    jobs: int = 200
    seed: int = 1
    concurrency: int = 4
    gateway_kills: int = 3
    boot_timeout: float = 5.0
    job_timeout: float = 20.0
    idle_timeout: float = 3.0
    reap_interval: float = 5.0
    pool_idle: float = 0.0  # serve --pool-idle: 0 = a machine per job
    rate: float = 2.0  # Fly API requests/s per action and machine (create, list: per app)
    burst: int = 3
    boot_latency: float = 0.2  # created → starting
    start_latency: float = 0.1  # starting → started
    error_5xx: float = 0.03
    capacity: float = 0.08
    stuck_in_created: float = 0.04
    vanish: float = 0.02
    lost_create: float = 0.03


@dataclass
class FaultReport:
    jobs: int
    seed: int
    duration_s: float
    outcomes: dict[str, int]
    faults: dict[str, int]
    machines_created: int
    machines_destroyed: dict[str, int]
    machines_left: int
    processes_left: int
    api_calls: dict[str, int]
    api_calls_per_job: float
    gateway_restarts: int
    reaped_by_gateway: int
    reaped_by_cli: int
    leaked_after_cancel: int
    unclear: list[str] = field(default_factory=list)

    @property
    def accounted(self) -> int:
        return sum(self.outcomes.values())


# -- the pieces ------------------------------------------------------------------------------


def worker_processes(mark: str) -> list[psutil.Process]:
    """Live `uplodr worker` processes of this run, found by the mark in their environment (the
    gateway and Swift carry it too: they are not workers)."""
    found = []
    for proc in marked_processes(mark):
        with contextlib.suppress(psutil.Error):
            if "worker" in proc.cmdline():
                found.append(proc)
    return found


@contextlib.contextmanager
def swift_bucket() -> Iterator[SwiftServer]:
    swift = SwiftServer()
    swift.start()
    try:
        swift.create_bucket(BUCKET)
        yield swift
    finally:
        swift.stop()


# -- the run -----------------------------------------------------------------------------------


class FaultRun:
    def __init__(self, settings: FaultSettings, workdir: Path) -> None:
        self.s = settings
        self.workdir = workdir
        self.rng = random.Random(settings.seed)
        self.mark = uuid.uuid4().hex
        self.outcomes: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.unclear: list[str] = []
        self.leaked_after_cancel = 0
        self.gateway_up = asyncio.Event()
        self.in_flight_http = 0
        self.http_busy = asyncio.Event()  # set while a job is in flight at the gateway
        self.killed_machines: set[str] = set()
        self.dispatch_lock = asyncio.Lock()
        # One gateway kill at a time: a second killer must not kill the restart of the first.
        self.kill_lock = asyncio.Lock()

    # -- plan --

    def plan(self) -> list[str]:
        kinds, weights = zip(*KINDS.items(), strict=True)
        return [self.rng.choices(kinds, weights)[0] for _ in range(self.s.jobs)]

    # -- HTTP jobs --

    def classify(self, response: httpx.Response | tuple[int, bytes]) -> str:
        status, body = (
            (response.status_code, response.content)
            if isinstance(response, httpx.Response)
            else response
        )
        try:
            data = json.loads(body)
        except ValueError:
            self.unclear.append(f"{status}: not JSON: {body[:200]!r}")
            return "unclear"
        if status == 200 and isinstance(data, dict) and data.get("variants"):
            return "ok"
        code = data.get("code") if isinstance(data, dict) else None
        if status >= 400 and code in STATUSES and code != "internal":
            return f"error:{code}"
        self.unclear.append(f"{status}: {body[:300]!r}")
        return "unclear"

    async def post(self, client: httpx.AsyncClient, gateway: GatewayProcess, image: bytes) -> str:
        await self.gateway_up.wait()
        incarnation = gateway.incarnation
        self.in_flight_http += 1
        self.http_busy.set()
        try:
            response = await client.post(
                f"{gateway.url}/v1/images",
                params={"name": "noise.png", "folder": "faults"},
                content=image,
            )
        except httpx.TransportError as error:
            if gateway.incarnation != incarnation or not self.gateway_up.is_set():
                return "gateway_killed"
            self.unclear.append(f"transport error: {error!r}")
            return "unclear"
        finally:
            self.in_flight_http -= 1
            if not self.in_flight_http:
                self.http_busy.clear()
        return self.classify(response)

    async def raw_request(
        self, gateway: GatewayProcess, image: bytes, send: int, hang_up_after: float | None
    ) -> str:
        """POST over a raw socket: send `send` bytes of the body (declaring all of it), then
        hang up at once or after `hang_up_after` seconds unless the answer came first."""
        await self.gateway_up.wait()
        incarnation = gateway.incarnation
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        try:
            head = (
                f"POST /v1/images?name=gone.png&folder=faults HTTP/1.1\r\nHost: x\r\n"
                f"Content-Type: image/png\r\nContent-Length: {len(image)}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
            writer.write(head + image[:send])
            await writer.drain()
            if hang_up_after is None:
                return "client_gone"
            try:
                first = await asyncio.wait_for(reader.read(1), hang_up_after)
            except TimeoutError:
                return "client_gone"
            if not first:
                if gateway.incarnation != incarnation or not self.gateway_up.is_set():
                    return "gateway_killed"
                self.unclear.append("raw request: the gateway closed without an answer")
                return "unclear"
            rest = await reader.read()
            status_line, _, tail = (first + rest).partition(b"\r\n")
            body = tail.partition(b"\r\n\r\n")[2]
            return self.classify((int(status_line.split()[1]), body))
        except (ConnectionError, OSError) as error:
            if gateway.incarnation != incarnation or not self.gateway_up.is_set():
                return "gateway_killed"
            self.unclear.append(f"raw request: {error!r}")
            return "unclear"
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def kill_a_worker(self, fly: FlyApiServer, before: set[str], delay: float) -> None:
        """SIGKILL the first worker that started after this job was sent, `delay` s into it."""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            for machine in fly.snapshot():
                if (
                    machine.id not in before
                    and machine.id not in self.killed_machines
                    and machine.state == "started"
                ):
                    self.killed_machines.add(machine.id)
                    await asyncio.sleep(delay)
                    if fly.kill_process(machine.id):
                        self.faults["worker_killed"] += 1
                    else:
                        self.faults["worker_kill_missed (job already done)"] += 1
                    return
            await asyncio.sleep(0.02)
        self.faults["worker_kill_missed (no machine)"] += 1

    # -- in-process cancelled jobs --

    async def cancelled_job(
        self,
        dispatcher: Dispatcher,
        phases: PhaseWatch,
        fly: FlyApiServer,
        source: UploadSource,
        phase: str,
    ) -> str:
        """An in-process job cancelled during `phase`, watched through the lease events."""
        async with self.dispatch_lock:  # one at a time: the phase tracking is per dispatcher
            phases.reset()
            task = asyncio.create_task(dispatcher.run([source]))
            reached = asyncio.create_task(phases.entered[phase].wait())
            await asyncio.wait({task, reached}, return_when=asyncio.FIRST_COMPLETED)
            reached.cancel()
            if not task.done():
                limit = {"create": 0.02, "boot": 0.3, "stream": 0.05}[phase]
                await asyncio.sleep(self.rng.uniform(0, limit))
            if task.done():
                outcome = self.dispatch_outcome(task)
                self.faults[f"cancel_too_late ({phase})"] += 1
                return outcome
            at = phases.phase
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except UplodrError as error:  # it failed on its own just before the cancel
                return f"error:{error.code}"
            self.faults[f"task_cancelled_in_{at}"] += 1
            left = [
                m
                for m in fly.snapshot()
                if (m.config.get("metadata") or {}).get("lease") == phases.lease_id
            ]
            self.leaked_after_cancel += len(left)
            return "cancelled"

    def dispatch_outcome(self, task: asyncio.Task[Any]) -> str:
        error = task.exception()
        if error is None:
            return "ok"
        if isinstance(error, UplodrError) and error.code != "internal":
            return f"error:{error.code}"
        self.unclear.append(f"dispatcher: {error!r}")
        return "unclear"

    # -- the gateway killer --

    async def kill_gateway(self, gateway: GatewayProcess) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.http_busy.wait(), 30)
        await asyncio.sleep(self.rng.uniform(0.1, 0.8))  # somewhere into a job
        async with self.kill_lock:
            self.gateway_up.clear()
            gateway.kill()
            self.faults["gateway_killed"] += 1
            await asyncio.to_thread(gateway.start)
            self.gateway_up.set()

    # -- everything --

    async def run(self) -> FaultReport:
        started = time.monotonic()
        os.environ[RUN_MARK] = self.mark
        os.environ.setdefault("MALLOC_ARENA_MAX", "2")  # workers start without re-exec
        with swift_bucket() as swift:
            os.environ.update(swift.s3_env(UPLODR_STORAGE_DEADLINE="10"))
            faults = Faults(
                seed=self.s.seed,
                error_5xx=self.s.error_5xx,
                capacity=self.s.capacity,
                stuck_in_created=self.s.stuck_in_created,
                vanish=self.s.vanish,
                lost_create=self.s.lost_create,
            )
            fly = FlyApiServer(
                grpc_port=free_port(),
                rate=self.s.rate,
                burst=self.s.burst,
                boot_latency=self.s.boot_latency,
                start_latency=self.s.start_latency,
                faults=faults,
                process_factory=logged_worker_process(self.workdir / "workers"),
            )
            with fly:
                report = await self._run_with(swift, fly, started)
        return report

    async def _run_with(self, swift: SwiftServer, fly: FlyApiServer, started: float) -> FaultReport:
        env = {**os.environ, **fly_env(fly)}
        public_url = swift.public_url(BUCKET)
        gateway = GatewayProcess(
            [
                "--provider",
                "fly",
                "--store",
                f"s3://{BUCKET}",
                "--public-url",
                public_url,
                "--boot-timeout",
                f"{self.s.boot_timeout}s",
                "--job-timeout",
                f"{self.s.job_timeout}s",
                "--worker-idle-timeout",
                f"{self.s.idle_timeout}s",
                "--reap-interval",
                f"{self.s.reap_interval}s",
                "--pool-idle",
                f"{self.s.pool_idle}s",
            ],
            env,
            self.workdir,
        )
        await asyncio.to_thread(gateway.start)
        self.gateway_up.set()
        dispatcher = Dispatcher(
            FlyProvider(fly_config(fly)),
            worker_env(GatewayOptions(worker_idle_timeout=self.s.idle_timeout)),
            "fault-run-inprocess",
            DispatchSettings(
                job_timeout=self.s.job_timeout,
                lease=LeaseSettings(boot_timeout=self.s.boot_timeout),
            ),
        )
        phases = PhaseWatch(dispatcher.events)
        plan = self.plan()
        kill_at = set(self.rng.sample(range(10, max(11, self.s.jobs - 10)), self.s.gateway_kills))
        queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
        for index, kind in enumerate(plan):
            queue.put_nowait((index, kind))
        killers: list[asyncio.Task[None]] = []

        async def one(client: httpx.AsyncClient, index: int, kind: str) -> str:
            if index in kill_at:
                killers.append(asyncio.create_task(self.kill_gateway(gateway)))
            image = noise_png(*((256, 256) if kind == "kill_worker" else (64, 64)), self.rng)
            if kind == "plain":
                return await self.post(client, gateway, image)
            if kind == "bad_image":
                return await self.post(client, gateway, image[: len(image) // 2])
            if kind == "hangup_upload":
                self.faults["client_hung_up_mid_upload"] += 1
                return await self.raw_request(gateway, image, len(image) // 2, None)
            if kind == "hangup_convert":
                outcome = await self.raw_request(
                    gateway, image, len(image), self.rng.uniform(0.05, 1.5)
                )
                if outcome == "client_gone":
                    self.faults["client_hung_up_mid_job"] += 1
                return outcome
            if kind == "kill_worker":
                # pooled: any started worker, busy or idle (a machine killed between jobs)
                before = set() if self.s.pool_idle else {m.id for m in fly.snapshot()}
                killer = asyncio.create_task(
                    self.kill_a_worker(fly, before, self.rng.uniform(0.0, 0.4))
                )
                try:
                    return await self.post(client, gateway, image)
                finally:
                    await killer
            path = self.workdir / f"job-{index}.png"
            path.write_bytes(image)
            try:
                phase = kind.removeprefix("cancel_")
                source = UploadSource(path, "cancelled.png", "faults")
                return await self.cancelled_job(dispatcher, phases, fly, source, phase)
            finally:
                path.unlink()

        async def runner(client: httpx.AsyncClient) -> None:
            while True:
                try:
                    index, kind = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                outcome = await one(client, index, kind)
                self.outcomes[outcome] += 1
                done = sum(self.outcomes.values())
                if done % 20 == 0:
                    print(
                        f"  {done}/{self.s.jobs} jobs, {time.monotonic() - started:.0f}s",
                        file=sys.stderr,
                        flush=True,
                    )

        try:
            async with httpx.AsyncClient(timeout=120) as client:
                await asyncio.gather(*(runner(client) for _ in range(self.s.concurrency)))
            await asyncio.gather(*killers)
            await dispatcher.drain()
        finally:
            await dispatcher.provider.aclose()
            gateway.stop()
        return await self._settle(fly, gateway, env, started)

    async def _settle(
        self, fly: FlyApiServer, gateway: GatewayProcess, env: Mapping[str, str], started: float
    ) -> FaultReport:
        # Orphans with a process end themselves: idle timeout → exit → auto_destroy.
        deadline = time.monotonic() + self.s.idle_timeout * 2 + 10
        while fly.processes_alive and time.monotonic() < deadline:  # noqa: ASYNC110 (polls)
            await asyncio.sleep(0.1)
        # What is left has no process (stuck in `created`): `uplodr reap`, a separate process,
        # destroys it — no gateway runs now, so anything older than a few seconds is stale.
        listed = json.loads(run_uplodr("machines", "ls", "--provider", "fly", "--json", env=env))
        self.faults["orphans_at_end"] = len(listed)
        out = run_uplodr("reap", "--provider", "fly", "--older-than", "2s", env=env)
        reaped_by_cli = int(out.strip().splitlines()[-1].split()[2]) if out.strip() else 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not fly.machines_alive and not worker_processes(self.mark):
                break
            await asyncio.sleep(0.1)
        calls = dict(sorted(fly.calls.items()))
        faults = Counter(self.faults)
        faults.update({f"fly_{k}": v for k, v in fly.injected.items()})
        return FaultReport(
            jobs=self.s.jobs,
            seed=self.s.seed,
            duration_s=round(time.monotonic() - started, 1),
            outcomes=dict(sorted(self.outcomes.items())),
            faults=dict(sorted(faults.items())),
            machines_created=fly.created,
            machines_destroyed=dict(sorted(fly.destroyed.items())),
            machines_left=fly.machines_alive,
            processes_left=len(worker_processes(self.mark)) + fly.processes_alive,
            api_calls=calls,
            api_calls_per_job=round(sum(calls.values()) / max(1, self.s.jobs), 2),
            gateway_restarts=gateway.incarnation - 1,
            reaped_by_gateway=gateway.log_text().count("reaped machine"),
            reaped_by_cli=reaped_by_cli,
            leaked_after_cancel=self.leaked_after_cancel,
            unclear=self.unclear,
        )


def print_report(report: FaultReport) -> None:
    print(f"fault run: {report.jobs} jobs, seed {report.seed}, {report.duration_s:.1f} s")
    print(f"jobs by outcome ({report.accounted} accounted for):")
    for outcome, count in report.outcomes.items():
        print(f"  {outcome:<40} {count}")
    print("faults injected:")
    for kind, count in report.faults.items():
        print(f"  {kind:<40} {count}")
    print(f"machines created: {report.machines_created}")
    destroyed = ", ".join(f"{k} {v}" for k, v in report.machines_destroyed.items())
    print(f"machines destroyed: {sum(report.machines_destroyed.values())} ({destroyed})")
    print(f"  reaped by the restarted gateway: {report.reaped_by_gateway}")
    print(f"  reaped by `uplodr reap` at the end: {report.reaped_by_cli}")
    print(f"machines left: {report.machines_left}")
    print(f"worker processes left: {report.processes_left}")
    print(f"machines of cancelled jobs alive right after the cancel: {report.leaked_after_cancel}")
    print(f"gateway restarts: {report.gateway_restarts}")
    calls = ", ".join(f"{k} {v}" for k, v in report.api_calls.items())
    print(f"Fly API calls: {sum(report.api_calls.values())} ({calls})")
    print(f"Fly API calls per job: {report.api_calls_per_job}")
    for line in report.unclear:
        print(f"UNCLEAR: {line}")


async def run_faults(settings: FaultSettings, workdir: Path | None = None) -> FaultReport:
    with tempfile.TemporaryDirectory(prefix="uplodr-faults-") as tmp:
        return await FaultRun(settings, workdir or Path(tmp)).run()


def ok(report: FaultReport) -> bool:
    return (
        report.accounted == report.jobs
        and report.outcomes.get("unclear", 0) == 0
        and report.machines_left == 0
        and report.processes_left == 0
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--gateway-kills", type=int, default=3)
    parser.add_argument("--rate", type=float, default=2.0, help="Fly API requests/s per action")
    parser.add_argument("--pool-idle", type=float, default=0.0, help="serve --pool-idle (s)")
    parser.add_argument("--json", type=Path, help="also write the counts here")
    parser.add_argument("--keep", type=Path, help="keep gateway logs in this folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("stamina").setLevel(logging.ERROR)  # retries are counted, not logged
    settings = FaultSettings(
        jobs=args.jobs,
        seed=args.seed,
        concurrency=args.concurrency,
        gateway_kills=args.gateway_kills,
        rate=args.rate,
        pool_idle=args.pool_idle,
    )
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(run_faults(settings, args.keep))
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps({**asdict(report), "ok": ok(report)}, indent=2))
    return 0 if ok(report) else 1


if __name__ == "__main__":
    sys.exit(main())
