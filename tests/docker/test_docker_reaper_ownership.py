"""The reaper and a lease's diagnosis of its own container: a container that exited (the OOM
killer, a crash) while its gateway still holds it is the lease's to ask `failure()` about and
to destroy. The gateway's reaper (the same provider) leaves it; before, it removed every
exited container at once and the lease's question found it gone — a 422 "needs more memory"
turned into a 503."""

from __future__ import annotations

import asyncio

from tests.support.docker_engine import DockerEngine
from tests.support.docker_standin import standin_image
from tests.support.waiting import wait_for
from uplodr.dispatch.reaper import reap
from uplodr.machines.base import MachineSpec, StopReason
from uplodr.machines.docker import DockerConfig, DockerProvider


async def test_the_reaper_leaves_an_exited_container_its_lease_still_holds(
    docker_engine: DockerEngine,
) -> None:
    with docker_engine.client() as client:
        image = standin_image(client)
    config = DockerConfig(image=image, memory_mb=64, engine_env=docker_engine.env())
    provider, stranger = DockerProvider(config), DockerProvider(config)
    try:
        machine = await provider.create(MachineSpec(env={}, tags={"job": "oom"}))
        await provider.wait_started(machine, timeout=15)
        with docker_engine.client() as client:
            await asyncio.to_thread(client.api.kill, machine.id, "SIGKILL")
        await asyncio.to_thread(
            wait_for,
            lambda: client_state(docker_engine, machine.id) == "exited",
            "the container to exit",
        )
        result = await reap(provider, older_than=None)  # the gateway's own reaper pass
        assert await provider.failure(machine.id) == StopReason.killed(9)  # not "gone"
        assert result.stale == [] and result.destroyed == []
        (listed,) = await provider.list({})
        assert listed.state == "exited"  # its owner's, not "stopped" for the reaper
        # another process (`uplodr reap`) cannot know its owner lives: to it, it is stopped
        (seen,) = await stranger.list({})
        assert seen.state == "stopped"
        await provider.destroy(machine.id)
        assert await provider.list({}) == []
    finally:
        await provider.aclose()
        await stranger.aclose()


def client_state(engine: DockerEngine, name: str) -> str:
    with engine.client() as client:
        return str(client.api.inspect_container(name)["State"]["Status"])
