"""One harness per provider: the provider under test, plus what the contract suite needs to do
to its machines from outside (crash one, make one as someone else would, slow its boot) and to
see what is really left (records, processes, the API server's machines).

To run the contract suite on a new provider, write its harness here and add one line to
`HARNESSES`. Machines of these harnesses run stand-ins, not the real worker: the contract is
about machines, not images.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx
import pytest

from tests.machines.conftest import LEAK_MARK
from tests.support.docker_engine import DockerEngine
from tests.support.docker_standin import standin_image
from tests.support.fly import FAST_BACKOFF, fly_config
from tests.support.fly_api import FlyApiServer, standin_process
from tests.support.k8s_api import KubeApiServer
from tests.support.procs import free_port, marked_processes
from tests.support.strangers import stranger_machine
from uplodr.machines.base import Machine, MachineSpec, Provider, RateLimit, StopReason
from uplodr.machines.docker import DockerConfig, DockerProvider
from uplodr.machines.fly import FlyProvider
from uplodr.machines.kubernetes import KubernetesConfig, KubernetesProvider
from uplodr.machines.kubernetes_api import KubeApi
from uplodr.machines.local import LocalProvider, base_env
from uplodr.machines.local_records import RecordDir
from uplodr.machines.memory import MemoryProvider, RunningWorker

# A machine whose environment has this variable writes a file at that path when it starts.
TOUCH = "CONTRACT_TOUCH"

# The local stand-in: writes $CONTRACT_TOUCH, then listens on its port until killed.
LOCAL_STANDIN = (
    "import os, pathlib, socket, sys, time\n"
    "if os.environ.get('CONTRACT_TOUCH'):\n"
    "    pathlib.Path(os.environ['CONTRACT_TOUCH']).write_text('written by the machine')\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); time.sleep(600)"
)


class Harness(Protocol):
    @property
    def provider(self) -> Provider: ...

    # An id in the provider's format that no machine has.
    missing_id: str
    # What the backend bills per machine-second for the machines the harness makes.
    list_price: float

    def spec(
        self, tags: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None
    ) -> MachineSpec:
        """A spec whose machine runs a stand-in (tags: default {"suite": "contract"})."""
        ...

    async def crash(self, machine: Machine) -> None:
        """Kill the machine's process with SIGKILL, as a crash would."""
        ...

    async def foreign(self, tags: Mapping[str, str]) -> str:
        """A machine made by someone else with exactly these tags (no marker added); its id."""
        ...

    def slow_boot(self) -> None:
        """Machines created from now on take seconds to start."""
        ...

    def enforce_rate(self, rate: RateLimit) -> None:
        """Make the backend enforce this rate limit on creations, as the real service does."""
        ...

    def rate_refusals(self) -> int:
        """How many requests the provider's backend refused for its rate limit so far."""
        ...

    async def leftovers(self) -> list[str]:
        """Machines made through the provider that still exist, seen from the backend itself
        (records, processes, the API server), not through the provider's own list."""
        ...


HarnessFactory = Callable[[pytest.FixtureRequest], AbstractAsyncContextManager[Harness]]


def _spec(tags: Mapping[str, str] | None, env: Mapping[str, str] | None, mark: str) -> MachineSpec:
    return MachineSpec(
        env={LEAK_MARK: mark, **(env or {})},
        tags=dict(tags) if tags is not None else {"suite": "contract"},
    )


# -- local ---------------------------------------------------------------------------------------


@dataclass
class LocalHarness:
    provider: LocalProvider
    state_dir: Path
    mark: str
    missing_id: str = "uplodr-000000000000"
    list_price: float = 0.0
    strangers: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    stranger_ids: set[str] = field(default_factory=set)

    def spec(
        self, tags: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None
    ) -> MachineSpec:
        return _spec(tags, env, self.mark)

    async def crash(self, machine: Machine) -> None:
        record = self.provider.records.read(machine.id)
        assert record is not None
        os.kill(record.pid, 9)

    async def foreign(self, tags: Mapping[str, str]) -> str:
        """Someone else's process with a record in the same state dir."""
        env = {LEAK_MARK: self.mark}
        machine_id = self.strangers.enter_context(stranger_machine(self.state_dir, tags, env))
        self.stranger_ids.add(machine_id)
        return machine_id

    def slow_boot(self) -> None:
        pass  # a local machine is started once spawned; its worker boots on its own time

    def enforce_rate(self, rate: RateLimit) -> None:
        raise AssertionError("the local provider declares no rate limit")

    def rate_refusals(self) -> int:
        return 0  # no rate limit

    async def leftovers(self) -> list[str]:
        records = RecordDir(self.state_dir / "machines")
        ours = [r.id for r in records if r.id not in self.stranger_ids]
        theirs = {r.pid for r in records if r.id in self.stranger_ids}
        return ours + [
            f"pid {p.pid}" for p in marked_processes(self.mark, LEAK_MARK) if p.pid not in theirs
        ]

    async def close(self) -> None:
        await self.provider.aclose()
        self.strangers.close()


@contextlib.asynccontextmanager
async def local_harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    request.getfixturevalue("no_leftover_processes")
    state_dir: Path = request.getfixturevalue("state_dir")
    mark: str = request.getfixturevalue("leak_mark")
    provider = LocalProvider(
        state_dir,
        command=lambda port: [sys.executable, "-c", LOCAL_STANDIN, str(port)],
        grace=1.0,
        env={**base_env(), LEAK_MARK: mark},
    )
    harness = LocalHarness(provider, state_dir, mark)
    try:
        yield harness
    finally:
        await harness.close()


# -- fly (the spec-validating API test server) ---------------------------------------------------


@dataclass
class FlyHarness:
    provider: FlyProvider
    fly: FlyApiServer
    mark: str
    missing_id: str = "0000000000000d"
    # Fly's list price of the default guest, shared-cpu-2x with 1 GB (fly.io/docs/about/pricing)
    list_price: float = 0.0000026
    foreigners: set[str] = field(default_factory=set)

    def spec(
        self, tags: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None
    ) -> MachineSpec:
        return _spec(tags, env, self.mark)

    async def crash(self, machine: Machine) -> None:
        assert self.fly.kill_process(machine.id)

    async def foreign(self, tags: Mapping[str, str]) -> str:
        """Another client of the same app, through the API itself."""
        async with httpx.AsyncClient() as raw:
            response = await raw.post(
                f"{self.fly.url}/v1/apps/{self.fly.app}/machines",
                headers={"Authorization": f"Bearer {self.fly.token}"},
                json={"config": {"image": "someone/else:1", "metadata": dict(tags)}},
            )
        assert response.status_code == 200, response.text
        machine_id: str = response.json()["id"]
        self.foreigners.add(machine_id)
        return machine_id

    def slow_boot(self) -> None:
        self.fly.boot_latency = 3.0

    def enforce_rate(self, rate: RateLimit) -> None:
        self.fly.limit(rate.per_second, rate.burst)

    def rate_refusals(self) -> int:
        return self.fly.injected["rate_limited"]

    async def leftovers(self) -> list[str]:
        return [m.id for m in self.fly.snapshot() if m.id not in self.foreigners]


@contextlib.asynccontextmanager
async def fly_harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    request.getfixturevalue("no_leftover_processes")
    mark: str = request.getfixturevalue("leak_mark")
    with FlyApiServer(grpc_port=free_port(), process_factory=standin_process, rate=0) as fly:
        provider = FlyProvider(fly_config(fly, regions=(), retry_deadline=10.0, **FAST_BACKOFF))
        try:
            yield FlyHarness(provider, fly, mark)
        finally:
            await provider.aclose()
        assert fly.spec_errors == []


# -- memory --------------------------------------------------------------------------------------


@dataclass
class MemoryHarness:
    provider: MemoryProvider
    missing_id: str = "mem-000000000000"
    list_price: float = 0.0
    foreigners: set[str] = field(default_factory=set)

    def spec(
        self, tags: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None
    ) -> MachineSpec:
        return _spec(tags, env, "")

    async def crash(self, machine: Machine) -> None:
        await self.provider.die(machine.id, StopReason.killed(9))

    async def foreign(self, tags: Mapping[str, str]) -> str:
        machine_id = self.provider.add_foreign(tags)
        self.foreigners.add(machine_id)
        return machine_id

    def slow_boot(self) -> None:
        self.provider.faults.boot_seconds = 3.0

    def enforce_rate(self, rate: RateLimit) -> None:
        raise AssertionError("the memory provider declares no rate limit")

    def rate_refusals(self) -> int:
        return 0

    async def leftovers(self) -> list[str]:
        return [m for m in self.provider.alive if m not in self.foreigners]


async def _listening_standin(spec: MachineSpec) -> RunningWorker:
    """In-process stand-in: writes $CONTRACT_TOUCH, accepts connections on a real port."""
    if touch := spec.env.get(TOUCH):
        Path(touch).write_text("written by the machine")
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def stop() -> None:
        server.close()
        await server.wait_closed()

    return RunningWorker(f"127.0.0.1:{port}", stop)


@contextlib.asynccontextmanager
async def memory_harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    provider = MemoryProvider(_listening_standin)
    try:
        yield MemoryHarness(provider)
    finally:
        await provider.aclose()


# -- docker (the tests' private engine) -----------------------------------------------------------


@dataclass
class DockerHarness:
    provider: DockerProvider
    engine: DockerEngine
    image: str
    mark: str
    missing_id: str = "uplodr-000000000000"
    list_price: float = 0.0
    foreigners: set[str] = field(default_factory=set)

    def spec(
        self, tags: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None
    ) -> MachineSpec:
        return _spec(tags, env, self.mark)

    async def crash(self, machine: Machine) -> None:
        with self.engine.client() as client:
            await asyncio.to_thread(client.api.kill, machine.id, "SIGKILL")

    async def foreign(self, tags: Mapping[str, str]) -> str:
        """Someone else's container on the same engine, labelled with exactly these tags."""
        with self.engine.client() as client:
            container = await asyncio.to_thread(
                client.containers.run,
                self.image,
                labels=dict(tags),
                environment={LEAK_MARK: self.mark},
                detach=True,
            )
        self.foreigners.add(str(container.id))
        return str(container.id)

    def slow_boot(self) -> None:
        pass  # create returns a started container; its worker boots on its own time

    def enforce_rate(self, rate: RateLimit) -> None:
        raise AssertionError("the docker provider declares no rate limit")

    def rate_refusals(self) -> int:
        return 0

    async def leftovers(self) -> list[str]:
        """Containers of the engine (running or not) that carry this test's mark."""
        with self.engine.client() as client:
            found = await asyncio.to_thread(client.containers.list, all=True)
        return [
            c.name or c.id or ""
            for c in found
            if f"{LEAK_MARK}={self.mark}" in (c.attrs["Config"].get("Env") or [])
            and c.id not in self.foreigners
        ]

    async def close(self) -> None:
        await self.provider.aclose()
        with self.engine.client() as client:
            for container_id in self.foreigners:
                with contextlib.suppress(Exception):
                    client.api.remove_container(container_id, force=True)


@contextlib.asynccontextmanager
async def docker_harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    engine: DockerEngine = request.getfixturevalue("docker_engine")
    request.getfixturevalue("no_leftover_processes")  # after the engine: dockerd is no leftover
    mark: str = request.getfixturevalue("leak_mark")
    with engine.client() as client:
        image = standin_image(client)
    provider = DockerProvider(DockerConfig(image=image, memory_mb=64, engine_env=engine.env()))
    harness = DockerHarness(provider, engine, image, mark)
    try:
        yield harness
    finally:
        await harness.close()


# -- kubernetes (the schema-validating API test server, pods as local processes) ------------------


@dataclass
class KubernetesHarness:
    provider: KubernetesProvider
    kube: KubeApiServer
    mark: str
    missing_id: str = "uplodr-000000000000"
    list_price: float = 0.0
    foreigners: set[str] = field(default_factory=set)

    def spec(
        self, tags: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None
    ) -> MachineSpec:
        return _spec(tags, env, self.mark)

    async def crash(self, machine: Machine) -> None:
        assert self.kube.kill_process(machine.id)

    async def foreign(self, tags: Mapping[str, str]) -> str:
        """Someone else's pod in the same namespace, labelled with exactly these tags."""
        name = f"someone-else-{len(self.foreigners)}"
        self.kube.add_pod(
            self.kube.namespace,
            {
                "metadata": {"name": name, "labels": dict(tags)},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "someone/else:1",
                            "env": [{"name": LEAK_MARK, "value": self.mark}],
                        }
                    ]
                },
            },
        )
        self.foreigners.add(name)
        return name

    def slow_boot(self) -> None:
        self.kube.start_latency = 3.0

    def enforce_rate(self, rate: RateLimit) -> None:
        raise AssertionError("the kubernetes provider declares no rate limit")

    def rate_refusals(self) -> int:
        return 0

    async def leftovers(self) -> list[str]:
        return [
            p["metadata"]["name"]
            for p in self.kube.pods()
            if p["metadata"]["name"] not in self.foreigners
        ]


@contextlib.asynccontextmanager
async def kubernetes_harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    request.getfixturevalue("no_leftover_processes")
    mark: str = request.getfixturevalue("leak_mark")
    with KubeApiServer(process_factory=standin_process) as kube:
        config = KubernetesConfig(image="uplodr:test", memory_mb=64, grpc_port=free_port())
        provider = KubernetesProvider(config, KubeApi(kube.config(), kube.namespace))
        try:
            yield KubernetesHarness(provider, kube, mark)
        finally:
            await provider.aclose()
        assert kube.spec_errors == []


HARNESSES: dict[str, HarnessFactory] = {
    "local": local_harness,
    "fly": fly_harness,
    "memory": memory_harness,
    "docker": docker_harness,
    "kubernetes": kubernetes_harness,
}
