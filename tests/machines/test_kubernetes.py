"""The Kubernetes provider against the Kubernetes API test server (tests/support/k8s_api.py):
the pod it asks for, how each way a pod fails reaches the gateway (typed: out of memory, an
image that cannot be pulled, no room, no quota, the API unreachable), `check()`, and what the
cluster does on its own (deadline, garbage collection). The contract suite covers the rest."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.machines.conftest import LEAK_MARK
from tests.support.fly_api import standin_process
from tests.support.k8s_api import KubeApiServer, restricted_violations
from tests.support.k8s_schema import problems
from tests.support.procs import free_port
from uplodr.errors import Busy, NotCreated, ProviderError, WorkerUnavailable
from uplodr.machines.base import MachineSpec, StopKind, StopReason
from uplodr.machines.kubernetes import (
    KubernetesConfig,
    KubernetesProvider,
    Owner,
    pod_manifest,
)
from uplodr.machines.kubernetes_api import KubeApi
from uplodr.machines.kubernetes_status import PodPhase, PodState, stop_reason
from uplodr.machines.settings import ProviderSettings

IMAGE = "registry.example/uplodr:test"
DEADLINE = 15.0


@pytest.fixture
def kube(no_leftover_processes: None) -> Iterator[KubeApiServer]:
    with KubeApiServer(images={IMAGE}, process_factory=standin_process) as server:
        yield server
        assert server.spec_errors == []


def provider_for(kube: KubeApiServer, **config: Any) -> KubernetesProvider:
    settings = KubernetesConfig(
        **{"image": IMAGE, "memory_mb": 512, "grpc_port": free_port(), **config}
    )
    return KubernetesProvider(settings, KubeApi(kube.config(), kube.namespace))


@pytest.fixture
async def provider(kube: KubeApiServer) -> AsyncIterator[KubernetesProvider]:
    made = provider_for(kube)
    yield made
    await made.aclose()


def spec(leak_mark: str, **tags: str) -> MachineSpec:
    return MachineSpec(env={LEAK_MARK: leak_mark}, tags=tags or {"job": "j"})


async def eventually(check: Any, what: str) -> Any:
    async with asyncio.timeout(DEADLINE):
        while not (result := await check()):
            await asyncio.sleep(0.02)
    assert result, what
    return result


def test_the_worker_pod_is_valid_restricted_sized_and_bounded() -> None:
    config = KubernetesConfig(
        image=IMAGE, memory_mb=512, cpus=2, owner=Owner("gateway-1", "u-1"), grpc_port=50051
    )
    made = pod_manifest(
        "uplodr-0123456789ab",
        MachineSpec(env={"UPLODR_TOKEN": "t"}, tags={"gateway": "g", "deadline": "9999999999"}),
        config,
    )
    pod = {"apiVersion": "v1", "kind": "Pod", **made.to_dict()}
    assert problems(pod) == []
    spec = pod["spec"]
    assert restricted_violations(spec) == []
    (container,) = spec["containers"]
    size = {"memory": "512Mi", "cpu": "2"}
    assert container["resources"] == {"requests": size, "limits": size}  # Guaranteed
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["volumeMounts"] == [{"name": "spool", "mountPath": "/tmp"}]
    assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
    assert spec["activeDeadlineSeconds"] > 0
    (owner,) = pod["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Pod", "gateway-1", "u-1")
    assert pod["metadata"]["labels"] == {
        "uplodr": "worker",
        "gateway": "g",
        "deadline": "9999999999",
    }


async def test_a_tag_that_is_not_a_label_value_is_kept_and_matched(
    kube: KubeApiServer, provider: KubernetesProvider, leak_mark: str
) -> None:
    odd = "a value with spaces/and slashes"
    machine = await provider.create(spec(leak_mark, job="j", note=odd))
    assert machine.tags["note"] == odd
    (listed,) = await provider.list({"note": odd})
    assert listed.id == machine.id and listed.tags["note"] == odd
    assert await provider.list({"note": "other"}) == []
    await provider.destroy(machine.id)


async def test_an_oom_killed_pod_is_out_of_memory_with_its_limit(
    kube: KubeApiServer, provider: KubernetesProvider, leak_mark: str
) -> None:
    machine = await provider.create(spec(leak_mark))
    await provider.wait_started(machine, DEADLINE)
    assert kube.kill_process(machine.id, oom=True)
    reason = await eventually(lambda: provider.failure(machine.id), "failure() to say why")
    assert reason == StopReason.out_of_memory(512)  # the lease answers it with the 422
    assert str(reason) == "out of memory (512 MB limit)"
    await provider.destroy(machine.id)


async def test_an_image_that_cannot_be_pulled_is_a_provider_error_naming_it(
    kube: KubeApiServer, leak_mark: str
) -> None:
    provider = provider_for(kube, image="registry.example/uplodr:gone")
    try:
        machine = await provider.create(spec(leak_mark))
        with pytest.raises(
            ProviderError, match=r"cannot pull its image \(registry.example/uplodr:gone: "
        ):
            await provider.wait_started(machine, DEADLINE)
        assert await provider.failure(machine.id) is None  # not stopped: waiting for its image
        await provider.destroy(machine.id)
    finally:
        await provider.aclose()
    assert kube.pods() == []


async def test_no_room_in_the_cluster_is_busy_and_leaves_nothing(
    kube: KubeApiServer, provider: KubernetesProvider, leak_mark: str
) -> None:
    kube.unschedulable = True
    with pytest.raises(Busy, match="no room for a worker pod: 0/1 nodes are available"):
        await provider.create(spec(leak_mark))
    assert kube.pods() == []


async def test_a_used_up_quota_is_busy_with_a_retry_after(
    kube: KubeApiServer, provider: KubernetesProvider, leak_mark: str
) -> None:
    kube.quota_pods = 1
    first = await provider.create(spec(leak_mark))
    with pytest.raises(Busy, match="exceeded quota") as refused:
        await provider.create(spec(leak_mark))
    assert refused.value.retry_after > 0
    await provider.destroy(first.id)
    assert kube.pods() == []


async def test_an_api_server_that_is_down_is_named_and_a_create_is_not_created(
    kube: KubeApiServer, provider: KubernetesProvider, leak_mark: str
) -> None:
    kube.stop_api()
    with pytest.raises(NotCreated, match=f"Kubernetes API at {kube.url} is unreachable"):
        await provider.create(spec(leak_mark))
    with pytest.raises(WorkerUnavailable, match=f"Kubernetes API at {kube.url} is unreachable"):
        await provider.list({})
    with pytest.raises(WorkerUnavailable, match="unreachable"):
        await provider.check()
    kube.start_api()
    assert await provider.list({}) == []


async def test_the_cluster_ends_a_pod_past_its_deadline(
    kube: KubeApiServer, provider: KubernetesProvider, leak_mark: str
) -> None:
    import time

    soon = str(int(time.time()) + 1)
    machine = await provider.create(spec(leak_mark, deadline=soon))
    reason = await eventually(lambda: provider.failure(machine.id), "the deadline to end it")
    assert reason.kind is StopKind.DEADLINE and "activeDeadlineSeconds" in str(reason)
    (listed,) = await provider.list({})
    assert listed.state == "exited"  # stopped, and still its lease's to diagnose and delete
    await provider.destroy(machine.id)


async def test_deleting_the_gateway_pod_garbage_collects_its_workers(
    kube: KubeApiServer, leak_mark: str
) -> None:
    gateway = kube.add_pod(
        kube.namespace,
        {
            "metadata": {"name": "gateway-1"},
            "spec": {
                "containers": [
                    {"name": "g", "image": IMAGE, "env": [{"name": LEAK_MARK, "value": leak_mark}]}
                ]
            },
        },
    )
    owner = Owner("gateway-1", gateway["metadata"]["uid"])
    provider = provider_for(kube, owner=owner)
    try:
        machines = await asyncio.gather(*(provider.create(spec(leak_mark)) for _ in range(2)))
        kube.delete_pod(kube.namespace, "gateway-1")

        async def collected() -> bool:
            return kube.pods() == []

        await eventually(collected, "the workers to be garbage-collected")
        assert kube.deleted["gc"] == len(machines)
    finally:
        await provider.aclose()


async def test_check_passes_with_the_roles_verbs_and_names_what_is_missing(
    kube: KubeApiServer, provider: KubernetesProvider
) -> None:
    await provider.check()
    assert kube.pods() == [] and kube.created == 0  # a dry run made nothing
    kube.verbs -= {"watch", "delete"}
    with pytest.raises(ProviderError, match="may not watch, delete pods in namespace uplodr"):
        await provider.check()


async def test_check_names_a_namespace_that_does_not_exist(kube: KubeApiServer) -> None:
    provider = KubernetesProvider(KubernetesConfig(image=IMAGE), KubeApi(kube.config(), "nowhere"))
    try:
        with pytest.raises(ProviderError, match='namespaces "nowhere" not found'):
            await provider.check()
    finally:
        await provider.aclose()


async def test_a_pod_the_restricted_profile_refuses_is_a_provider_error(
    kube: KubeApiServer, provider: KubernetesProvider, leak_mark: str
) -> None:
    """The server refuses what breaks Pod Security "restricted": shown with a pod that keeps
    its capabilities (the provider's own pods pass, test above)."""
    pod = pod_manifest("uplodr-0123456789ab", spec(leak_mark), provider.config)
    assert pod.spec is not None and pod.spec.containers[0].securityContext is not None
    pod.spec.containers[0].securityContext.capabilities = None
    with pytest.raises(ProviderError, match=r'violates PodSecurity "restricted:latest"'):
        await provider.api.create_pod(pod)
    assert kube.pods() == []


def test_how_a_stopped_pod_reads_as_a_typed_reason() -> None:
    ended = PodState(PodPhase.ENDED, "boom", exit_code=137)
    killed = stop_reason(ended, {}, 0.0)
    assert killed == StopReason.killed(9, "boom")  # the kubelet's 128 + SIGKILL
    assert killed is not None and killed.crashed
    clean = PodState(PodPhase.ENDED, exit_code=0)
    assert stop_reason(clean, {"deadline": "100"}, 50.0) == StopReason.exited(0)
    late = stop_reason(clean, {"deadline": "100"}, 150.0)  # its own end of life
    assert late is not None and late.kind is StopKind.DEADLINE
    evicted = stop_reason(PodState(PodPhase.ENDED, "The node was low on memory."), {}, 0.0)
    assert evicted is not None and evicted.kind is StopKind.GONE and not evicted.crashed
    for waiting in (PodPhase.PENDING, PodPhase.RUNNING, PodPhase.IMAGE, PodPhase.UNSCHEDULABLE):
        assert stop_reason(PodState(waiting), {}, 0.0) is None


def test_node_selector_and_tolerations_reach_the_pod() -> None:
    settings = ProviderSettings(
        options={
            "k8s_image": IMAGE,
            "k8s_node_selector": "pool=uplodr, disk=ssd",
            "k8s_tolerations": "dedicated=uplodr:NoSchedule,spot",
        },
        env={},
    )
    config = KubernetesConfig.from_settings(settings)
    pod = pod_manifest("uplodr-0123456789ab", MachineSpec(env={}, tags={}), config).to_dict()
    assert pod["spec"]["nodeSelector"] == {"pool": "uplodr", "disk": "ssd"}
    assert pod["spec"]["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "uplodr", "effect": "NoSchedule"},
        {"key": "spot", "operator": "Exists"},
    ]
    assert problems({"apiVersion": "v1", "kind": "Pod", **pod}) == []
    assert config.owner is None  # not in a cluster: no POD_NAME / POD_UID


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("k8s_node_selector", "pool", "--k8s-node-selector (UPLODR_K8S_NODE_SELECTOR) must be"),
        ("k8s_tolerations", "a:Sometimes", "--k8s-tolerations (UPLODR_K8S_TOLERATIONS) must be"),
        ("k8s_grpc_port", "70000", "--k8s-grpc-port (UPLODR_K8S_GRPC_PORT) must be a port"),
    ],
)
def test_options_that_do_not_fit_are_one_line(option: str, value: str, message: str) -> None:
    settings = ProviderSettings(options={option: value}, env={})
    with pytest.raises(ProviderError, match=re.escape(message)):
        KubernetesConfig.from_settings(settings)


def test_without_an_image_only_listing_works() -> None:
    with pytest.raises(ProviderError, match=r"needs --k8s-image \(UPLODR_K8S_IMAGE\)"):
        pod_manifest("uplodr-0123456789ab", MachineSpec(env={}, tags={}), KubernetesConfig(""))
