"""Fault injection on Kubernetes: jobs through a real `uplodr serve --provider kubernetes` as
things break, then zero pods and zero worker processes left.

    uv run python -m bench.k8s_faults [--jobs 100] [--seed 1] [--concurrency 4] [--json FILE]

What runs: a real Swift (the S3 store; a pod cannot write the gateway's folders), the Kubernetes
API test server (tests/support/k8s_api.py; every request validated against the Kubernetes
schemas; pods are real `uplodr worker` processes) and `uplodr serve --provider kubernetes`
configured only by KUBECONFIG and UPLODR_K8S_*, as in a cluster.

What breaks, at random (seeded), reusing the Fly fault run's clients and gateway killer
(bench/faults.py):
- workers SIGKILLed while their job runs, and pods deleted mid-job (`kubectl delete --force`);
- the API server stopped for up to 2 s while a job runs (pods keep running, as a kubelet's do);
- clients that hang up mid-upload and mid-conversion; images that cannot be decoded;
- the gateway SIGKILLed mid-job and restarted on the same port.

Then: the gateway stops; pods whose worker ended itself (idle timeout) stay `Succeeded` as on a
cluster, and `uplodr reap --provider kubernetes` as a separate process deletes what is left.
Every job must end in success or a clear error, and nothing may be left.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import httpx

from bench.faults import (
    BUCKET,
    FaultReport,
    FaultRun,
    FaultSettings,
    ok,
    print_report,
    swift_bucket,
    worker_processes,
)
from tests.support.fly_api import logged_worker_process
from tests.support.gateway import GatewayProcess
from tests.support.images import noise_png
from tests.support.k8s_api import KubeApiServer
from tests.support.procs import RUN_MARK, free_port, run_uplodr

KINDS: dict[str, float] = {
    "plain": 0.55,
    "bad_image": 0.05,
    "hangup_upload": 0.08,
    "hangup_convert": 0.10,
    "kill_worker": 0.08,
    "delete_pod": 0.07,
    "api_outage": 0.07,
}


class KubeFaultRun(FaultRun):
    def plan(self) -> list[str]:
        kinds, weights = zip(*KINDS.items(), strict=True)
        return [self.rng.choices(kinds, weights)[0] for _ in range(self.s.jobs)]

    async def run(self) -> FaultReport:
        started = time.monotonic()
        os.environ[RUN_MARK] = self.mark
        os.environ.setdefault("MALLOC_ARENA_MAX", "2")
        self.outage = asyncio.Lock()  # one API outage at a time
        with swift_bucket() as swift:
            os.environ.update(swift.s3_env(UPLODR_STORAGE_DEADLINE="10"))
            kube = KubeApiServer(process_factory=logged_worker_process(self.workdir / "pods"))
            with kube:
                env = {
                    **os.environ,
                    "KUBECONFIG": str(kube.write_kubeconfig(self.workdir / "kubeconfig")),
                    "UPLODR_K8S_IMAGE": "registry.example.com/uplodr:faults",
                    "UPLODR_K8S_GRPC_PORT": str(free_port()),
                }
                gateway = GatewayProcess(
                    ["--provider", "kubernetes", "--store", f"s3://{BUCKET}",
                     "--public-url", swift.public_url(BUCKET),
                     "--boot-timeout", f"{self.s.boot_timeout}s",
                     "--job-timeout", f"{self.s.job_timeout}s",
                     "--worker-idle-timeout", f"{self.s.idle_timeout}s",
                     "--reap-interval", f"{self.s.reap_interval}s",
                     "--pool-idle", f"{self.s.pool_idle}s"],
                    env,
                    self.workdir,
                )  # fmt: skip
                await asyncio.to_thread(gateway.start)
                self.gateway_up.set()
                try:
                    await self.jobs(kube, gateway)
                finally:
                    gateway.stop()
                return await self.settle(kube, gateway, env, started)

    async def jobs(self, kube: KubeApiServer, gateway: GatewayProcess) -> None:
        plan = self.plan()
        kill_at = set(self.rng.sample(range(10, max(11, self.s.jobs - 10)), self.s.gateway_kills))
        queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
        for item in enumerate(plan):
            queue.put_nowait(item)
        killers: list[asyncio.Task[None]] = []

        async def one(client: httpx.AsyncClient, index: int, kind: str) -> str:
            if index in kill_at:
                killers.append(asyncio.create_task(self.kill_gateway(gateway)))
            big = kind in ("kill_worker", "delete_pod", "api_outage")
            image = noise_png(*((256, 256) if big else (64, 64)), self.rng)
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
            if kind == "plain":
                return await self.post(client, gateway, image)
            before = {p["metadata"]["name"] for p in kube.pods()}
            breaker = asyncio.create_task(self.break_a_pod(kube, kind, before))
            try:
                return await self.post(client, gateway, image)
            finally:
                await breaker

        async def runner(client: httpx.AsyncClient) -> None:
            while True:
                try:
                    index, kind = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                self.outcomes[await one(client, index, kind)] += 1

        async with httpx.AsyncClient(timeout=120) as client:
            await asyncio.gather(*(runner(client) for _ in range(self.s.concurrency)))
        await asyncio.gather(*killers)

    async def break_a_pod(self, kube: KubeApiServer, kind: str, before: set[str]) -> None:
        """Once a new pod of this job runs: SIGKILL its worker, delete it, or stop the API."""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            for pod in kube.pods():
                name = pod["metadata"]["name"]
                if name in before or name in self.killed_machines:
                    continue
                if pod["status"].get("phase") != "Running":
                    continue
                self.killed_machines.add(name)
                await asyncio.sleep(self.rng.uniform(0.0, 0.3))
                if kind == "kill_worker":
                    hit = kube.kill_process(name)
                    self.faults["worker_killed" if hit else "worker_kill_missed"] += 1
                elif kind == "delete_pod":
                    kube.delete_pod(kube.namespace, name)
                    self.faults["pod_deleted"] += 1
                else:
                    async with self.outage:
                        await asyncio.to_thread(kube.stop_api)
                        await asyncio.sleep(self.rng.uniform(0.2, 2.0))
                        await asyncio.to_thread(kube.start_api)
                    self.faults["api_outage"] += 1
                return
            await asyncio.sleep(0.02)
        self.faults[f"{kind}_missed (no pod)"] += 1

    async def settle(
        self, kube: KubeApiServer, gateway: GatewayProcess, env: Mapping[str, str], started: float
    ) -> FaultReport:
        # Workers of killed gateways end themselves (idle timeout); their pods stay Succeeded.
        deadline = time.monotonic() + self.s.idle_timeout * 2 + 10
        while kube.processes_alive and time.monotonic() < deadline:  # noqa: ASYNC110 (polls)
            await asyncio.sleep(0.1)
        listed = json.loads(
            run_uplodr("machines", "ls", "--provider", "kubernetes", "--json", env=env)
        )
        self.faults["pods_at_end"] = len(listed)
        out = run_uplodr("reap", "--provider", "kubernetes", "--older-than", "2s", env=env)
        reaped_by_cli = int(out.strip().splitlines()[-1].split()[2]) if out.strip() else 0
        deadline = time.monotonic() + 10
        while (kube.pods() or worker_processes(self.mark)) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        calls = dict(sorted(kube.calls.items()))
        return FaultReport(
            jobs=self.s.jobs,
            seed=self.s.seed,
            duration_s=round(time.monotonic() - started, 1),
            outcomes=dict(sorted(self.outcomes.items())),
            faults=dict(sorted(self.faults.items())),
            machines_created=kube.created,
            machines_destroyed=dict(sorted(kube.deleted.items())),
            machines_left=len(kube.pods()),
            processes_left=len(worker_processes(self.mark)) + kube.processes_alive,
            api_calls=calls,
            api_calls_per_job=round(sum(calls.values()) / max(1, self.s.jobs), 2),
            gateway_restarts=gateway.incarnation - 1,
            reaped_by_gateway=gateway.log_text().count("reaped machine"),
            reaped_by_cli=reaped_by_cli,
            leaked_after_cancel=0,
            unclear=self.unclear + [f"schema: {e}" for e in kube.spec_errors],
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.k8s_faults", description=__doc__)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--gateway-kills", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the counts here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("stamina").setLevel(logging.ERROR)
    settings = FaultSettings(
        jobs=args.jobs,
        seed=args.seed,
        concurrency=args.concurrency,
        gateway_kills=args.gateway_kills,
    )
    with tempfile.TemporaryDirectory(prefix="uplodr-k8s-faults-") as folder:
        report = asyncio.run(KubeFaultRun(settings, Path(folder)).run())
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps({**asdict(report), "ok": ok(report)}, indent=2))
    return 0 if ok(report) else 1


if __name__ == "__main__":
    sys.exit(main())
