"""The Kubernetes provider: each machine is a pod of uplodr's image running `uplodr worker`.

A machine is a pod named `uplodr-<12 hex>` (its id) in `--k8s-namespace` (default: the
service account's or the kubeconfig context's namespace), from `--k8s-image`, made through the
API server that the in-cluster service account or the kubeconfig names (lightkube, through
`kubernetes_api.KubeApi`, where every API error is mapped once). Why it looks like this:

- **The pod is the machine's size and no more**: requests = limits for memory (`--machine-memory`,
  default 1G) and CPU (`--machine-cpus`, default 1), so the pod is in the Guaranteed QoS class
  and its memory limit is the kernel's: an OOM kill is `containerStatuses[].state.terminated.
  reason: OOMKilled`, reported as "out of memory (N MB limit)", which the gateway answers with
  its 422.
- **It ends by itself**: `restartPolicy: Never` (a worker that exits is done) and
  `activeDeadlineSeconds` = the machine's lifetime (its `deadline` tag), so the cluster ends a
  lost pod even when every uplodr process is gone; and, when the gateway runs in the cluster
  (POD_NAME and POD_UID from the downward API), `ownerReferences` to the gateway's pod, so the
  garbage collector deletes its workers with it.
- **It holds nothing**: the restricted Pod Security profile (runAsNonRoot, every capability
  dropped, no privilege escalation, `seccompProfile: RuntimeDefault`), a read-only root
  filesystem with a memory-backed emptyDir at /tmp for the spool (it counts against the memory
  limit, as the Docker provider's tmpfs does), no service-account token mounted, the
  environment only the worker's own settings and per-machine token (`spec.env`).
- **Labels are the tags** (`uplodr=worker`, `gateway`, `lease`, `created_at`, `deadline`), so
  `kubectl get pods -l uplodr=worker` shows them and `list` selects by label on the server;
  a tag whose value is not a valid label value is kept as an annotation and matched here.
  `destroy` refuses a pod without the marker.
- **Readiness is watched, not polled**: `create` returns once the pod has an IP (scheduled,
  its sandbox made: the address is `podIP:50051`), `wait_started` once its container runs;
  the lease then Pings the worker.
- **Failures are named** (`kubernetes_status.pod_state`: a pod's status as a typed state):
  OOMKilled → out of memory (422); ErrImagePull/ImagePullBackOff → ProviderError naming the
  image (502); Unschedulable or a quota refusal → Busy (503 with Retry-After); the API server
  unreachable → WorkerUnavailable naming it (503).
- **Cannot stop**: a pod with `restartPolicy: Never` cannot be started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from uplodr.errors import Busy, NotCreated, ProviderError, UplodrError, WorkerUnavailable
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
from uplodr.machines.kubernetes_status import PodPhase, PodState, pod_state, stop_reason
from uplodr.machines.settings import ProviderOption, ProviderSettings

if TYPE_CHECKING:  # lightkube belongs to the `server` extra: imported when first used
    from lightkube.resources.core_v1 import Pod

    from uplodr.machines.kubernetes_api import KubeApi

log = logging.getLogger(__name__)

GRPC_PORT = 50051
DEFAULT_MEMORY_MB = 1024
DEFAULT_CPUS = 1
# Where the worker spools uploads: an emptyDir in memory, the root filesystem is read-only.
SPOOL = "/tmp"  # noqa: S108
# The image's user (Dockerfile: useradd --uid 10001); runAsNonRoot needs a numeric user.
WORKER_UID = 10001
# Seconds a destroyed pod's worker has between SIGTERM and SIGKILL: it keeps nothing.
GRACE_SECONDS = 1
# How long a pod may take to be scheduled and given an IP before create gives up.
SCHEDULE_TIMEOUT = 60.0
# A machine without a `deadline` tag lives at most this long (activeDeadlineSeconds).
DEFAULT_LIFETIME = 3600
CHECK_TIMEOUT = 5.0  # seconds `check()` may take in all
# Annotation prefix for tags whose value is not a valid label value.
TAG_ANNOTATION = "tags.uplodr.dev/"
VERBS = ("create", "get", "list", "watch", "delete")
# The state `list` gives a stopped pod this provider still owns (see `list`).
OWNED_EXITED = "exited"

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")

OPTION_NAMESPACE = ProviderOption(
    "k8s_namespace",
    "--k8s-namespace",
    "UPLODR_K8S_NAMESPACE",
    "Kubernetes provider: namespace of the worker pods (default: the service account's, or "
    "the kubeconfig context's); the API server is the in-cluster one or $KUBECONFIG's.",
)
OPTION_IMAGE = ProviderOption(
    "k8s_image",
    "--k8s-image",
    "UPLODR_K8S_IMAGE",
    "Kubernetes provider: image of the worker pods, as the cluster pulls it "
    "(this repository's Dockerfile).",
)
OPTION_NODE_SELECTOR = ProviderOption(
    "k8s_node_selector",
    "--k8s-node-selector",
    "UPLODR_K8S_NODE_SELECTOR",
    "Kubernetes provider: comma-separated key=value labels a worker pod's node must have.",
)
OPTION_TOLERATIONS = ProviderOption(
    "k8s_tolerations",
    "--k8s-tolerations",
    "UPLODR_K8S_TOLERATIONS",
    "Kubernetes provider: comma-separated taints the worker pods tolerate, as "
    "key[=value][:effect] (e.g. dedicated=uplodr:NoSchedule).",
)
OPTION_GRPC_PORT = ProviderOption(
    "k8s_grpc_port",
    "--k8s-grpc-port",
    "UPLODR_K8S_GRPC_PORT",
    f"Kubernetes provider: port the worker listens on at its pod IP (default {GRPC_PORT}).",
)
OPTIONS = (
    OPTION_NAMESPACE,
    OPTION_IMAGE,
    OPTION_NODE_SELECTOR,
    OPTION_TOLERATIONS,
    OPTION_GRPC_PORT,
)


def _pairs(text: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key or not _LABEL_VALUE.match(value):
            raise ValueError(item)
        pairs[key] = value
    return pairs


@dataclass(frozen=True)
class Taint:
    """A taint the worker pods tolerate (`key[=value][:effect]`)."""

    key: str
    value: str | None = None  # None: any value (operator Exists)
    effect: str | None = None  # None: any effect


def _tolerations(text: str) -> tuple[Taint, ...]:
    found = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        pair, _, effect = item.partition(":")
        key, sep, value = pair.partition("=")
        if not key or effect not in ("", "NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise ValueError(item)
        found.append(Taint(key, value if sep else None, effect or None))
    return tuple(found)


def _port(text: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise ValueError(text)
    return port


@dataclass(frozen=True)
class Owner:
    """The gateway's own pod, when it runs in the cluster: its workers die with it."""

    name: str
    uid: str


@dataclass(frozen=True)
class KubernetesConfig:
    image: str  # "": only listing and deleting pods (machines ls, reap)
    namespace: str | None = None  # None: the configuration's
    memory_mb: int = DEFAULT_MEMORY_MB
    cpus: int = DEFAULT_CPUS
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Taint, ...] = ()
    grpc_port: int = GRPC_PORT
    owner: Owner | None = None
    kubeconfig: str | None = None  # None: in-cluster, else $KUBECONFIG or ~/.kube/config
    schedule_timeout: float = SCHEDULE_TIMEOUT
    grace_seconds: int = GRACE_SECONDS

    def require_image(self) -> str:
        if not self.image:
            raise ProviderError(
                f"the Kubernetes provider needs {OPTION_IMAGE.flag} ({OPTION_IMAGE.envvar}) to "
                "start machines: the uplodr image as the cluster pulls it"
            )
        return self.image

    @classmethod
    def from_settings(cls, settings: ProviderSettings) -> KubernetesConfig:
        env = settings.env
        name, uid = env.get("POD_NAME", ""), env.get("POD_UID", "")
        return cls(
            image=OPTION_IMAGE.read(settings, str, ""),
            namespace=OPTION_NAMESPACE.read(settings, str, "") or None,
            memory_mb=settings.memory_mb or DEFAULT_MEMORY_MB,
            cpus=settings.cpus or DEFAULT_CPUS,
            node_selector=OPTION_NODE_SELECTOR.read(
                settings, _pairs, {}, what="comma-separated key=value labels"
            ),
            tolerations=OPTION_TOLERATIONS.read(
                settings, _tolerations, (), what="comma-separated key[=value][:effect] taints"
            ),
            grpc_port=OPTION_GRPC_PORT.read(settings, _port, GRPC_PORT, what="a port"),
            owner=Owner(name, uid) if name and uid else None,
            kubeconfig=(env.get("KUBECONFIG") or "").split(":")[0] or None,
        )


# -- the pod -----------------------------------------------------------------------------------


def _valid_label(key: str, value: str) -> bool:
    return (
        bool(_LABEL_NAME.match(key))
        and len(key) <= 63
        and len(value) <= 63
        and bool(_LABEL_VALUE.match(value))
    )


def _lifetime(tags: Mapping[str, str]) -> int:
    with contextlib.suppress(ValueError):
        return max(1, int(tags.get("deadline", "")) - int(time.time()))
    return DEFAULT_LIFETIME


def pod_manifest(name: str, spec: MachineSpec, config: KubernetesConfig) -> Pod:
    """The pod of one machine (see the module docstring for each choice)."""
    from lightkube.models.core_v1 import Capabilities as LinuxCapabilities
    from lightkube.models.core_v1 import (
        Container,
        ContainerPort,
        EmptyDirVolumeSource,
        EnvVar,
        PodSecurityContext,
        PodSpec,
        ResourceRequirements,
        SeccompProfile,
        SecurityContext,
        Toleration,
        Volume,
        VolumeMount,
    )
    from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
    from lightkube.resources.core_v1 import Pod

    tags = marked(spec.tags)
    for key in tags:
        if not _LABEL_NAME.match(key) or len(key) > 63:
            raise ProviderError(f"tag {key!r} is not a valid Kubernetes label name")
    labels = {k: v for k, v in tags.items() if _valid_label(k, v)}
    annotations = {TAG_ANNOTATION + k: v for k, v in tags.items() if k not in labels}
    memory_mb = spec.memory_mb or config.memory_mb
    cpus = spec.cpus or config.cpus
    size = {"memory": f"{memory_mb}Mi", "cpu": str(cpus)}
    owner = config.owner
    return Pod(
        metadata=ObjectMeta(
            name=name,
            labels=labels,
            annotations=annotations or None,
            ownerReferences=(
                [OwnerReference(apiVersion="v1", kind="Pod", name=owner.name, uid=owner.uid)]
                if owner is not None
                else None
            ),
        ),
        spec=PodSpec(
            restartPolicy="Never",
            activeDeadlineSeconds=_lifetime(tags),
            automountServiceAccountToken=False,
            enableServiceLinks=False,
            terminationGracePeriodSeconds=config.grace_seconds,
            nodeSelector=dict(config.node_selector) or None,
            tolerations=[
                Toleration(
                    key=taint.key,
                    operator="Exists" if taint.value is None else "Equal",
                    value=taint.value,
                    effect=taint.effect,
                )
                for taint in config.tolerations
            ]
            or None,
            securityContext=PodSecurityContext(
                runAsNonRoot=True,
                runAsUser=WORKER_UID,
                runAsGroup=WORKER_UID,
                seccompProfile=SeccompProfile(type="RuntimeDefault"),
            ),
            containers=[
                Container(
                    name="worker",
                    image=config.require_image(),
                    args=["worker", "--grpc-addr", f"0.0.0.0:{config.grpc_port}"],
                    env=[EnvVar(name=str(k), value=str(v)) for k, v in spec.env.items()],
                    ports=[ContainerPort(containerPort=config.grpc_port, name="grpc")],
                    resources=ResourceRequirements(requests=size, limits=size),
                    securityContext=SecurityContext(
                        allowPrivilegeEscalation=False,
                        readOnlyRootFilesystem=True,
                        runAsNonRoot=True,
                        capabilities=LinuxCapabilities(drop=["ALL"]),
                        seccompProfile=SeccompProfile(type="RuntimeDefault"),
                    ),
                    volumeMounts=[VolumeMount(name="spool", mountPath=SPOOL)],
                )
            ],
            volumes=[
                Volume(
                    name="spool",
                    emptyDir=EmptyDirVolumeSource(medium="Memory", sizeLimit=f"{memory_mb}Mi"),
                )
            ],
        ),
    )


def pod_tags(pod: Pod) -> dict[str, str]:
    """The machine's tags: its labels, and the tags kept as annotations."""
    meta = pod.metadata
    if meta is None:
        return {}
    tags = {
        k.removeprefix(TAG_ANNOTATION): v
        for k, v in (meta.annotations or {}).items()
        if k.startswith(TAG_ANNOTATION)
    }
    return {**tags, **(meta.labels or {})}


def _machine(pod: Pod, grpc_port: int) -> Machine:
    meta = pod.metadata
    state = pod_state(pod, grpc_port)
    created = meta.creationTimestamp if meta is not None else None
    deleting = meta is not None and meta.deletionTimestamp is not None
    return Machine(
        id=(meta.name if meta is not None else None) or "",
        address=state.address,
        tags=pod_tags(pod),
        created_at=created.timestamp() if created is not None else 0.0,
        state=(
            "destroying"
            if deleting
            else "stopped"
            if state.stopped
            else "started"
            if state.phase is PodPhase.RUNNING
            else "starting"
        ),
    )


# -- the provider ------------------------------------------------------------------------------


class KubernetesProvider:
    """The Provider protocol on a Kubernetes cluster (see the module docstring)."""

    name = "kubernetes"

    def __init__(self, config: KubernetesConfig, api: KubeApi) -> None:
        self.config = config
        self.api = api
        self.capabilities = Capabilities(
            # A pod runs on any node: it cannot see this host's folders.
            shares_host_files=False,
            default_max_machines=8,
        )
        self._ours: set[str] = set()  # created here, not destroyed yet
        self._creating: set[asyncio.Task[Machine]] = set()

    # -- the Provider protocol -----------------------------------------------------------

    async def check(self) -> None:
        """This account may use pods in the namespace, and the namespace takes a worker pod
        (a server-side dry run: the namespace exists, admission and quota accept the pod)."""
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                # first: the namespace exists and admission takes a worker pod (a 404 or
                # 403 here names the namespace or the policy), then the other verbs
                probe = MachineSpec(env={}, tags={"check": "dry-run"})
                pod = pod_manifest(f"uplodr-check-{secrets.token_hex(4)}", probe, self.config)
                await self.api.create_pod(pod, dry_run=True)
                allowed = await asyncio.gather(*(self.api.may(verb) for verb in VERBS))
                missing = [verb for verb, ok in zip(VERBS, allowed, strict=True) if not ok]
                if missing:
                    raise ProviderError(
                        f"the Kubernetes account may not {', '.join(missing)} pods in "
                        f"namespace {self.api.namespace} (see deploy/kubernetes/rbac.yaml)"
                    )
        except TimeoutError:
            raise WorkerUnavailable(
                f"Kubernetes API at {self.api.server} did not answer within {CHECK_TIMEOUT:g} s"
            ) from None
        except NotCreated as error:  # a dry run's connection error is an outage all the same
            raise WorkerUnavailable(str(error)) from None

    async def create(self, spec: MachineSpec) -> Machine:
        if spec.host_paths:
            raise ProviderError("a Kubernetes pod cannot mount a local folder; use an s3:// store")
        name = f"uplodr-{secrets.token_hex(6)}"
        pod = pod_manifest(name, spec, self.config)  # refuses a bad tag before anything is made
        # Create and wait-for-an-IP are one step a cancellation cannot split: a caller that
        # leaves finds the pod by its lease tag, and aclose() still deletes it.
        task = asyncio.create_task(self._create(name, pod))
        self._creating.add(task)
        task.add_done_callback(self._creating.discard)
        return await asyncio.shield(task)

    async def wait_started(self, machine: Machine, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                state = await self._watch(
                    machine.id, lambda s: s.phase is PodPhase.RUNNING or s.ended
                )
        except TimeoutError:
            raise WorkerUnavailable(
                f"pod {machine.id} did not start within {timeout:g} s"
            ) from None
        if state is None:
            raise WorkerUnavailable(f"pod {machine.id} is gone")
        if state.ended:
            raise _not_started(machine.id, state, machine.tags)

    async def list(self, tags: Mapping[str, str]) -> list[Machine]:
        selector = {k: v for k, v in tags.items() if _valid_label(k, v)}
        pods = await self.api.list_pods({**selector, MARKER_TAG: MARKER_VALUE})
        machines = [_machine(pod, self.config.grpc_port) for pod in pods]
        # A stopped pod made here and not deleted yet is its lease's to diagnose and delete
        # (as the Docker provider's): "exited", not "stopped", so the reaper cannot delete it
        # before the lease's `failure()` reads its OOM kill (a 422 turned into a 503).
        return [
            replace(m, state=OWNED_EXITED) if m.state == "stopped" and m.id in self._ours else m
            for m in machines
            if has_tags(m.tags, tags)
        ]

    async def destroy(self, machine_id: str) -> None:
        pod = await self.api.get_pod(machine_id)
        if pod is None:
            self._ours.discard(machine_id)
            return
        if pod_tags(pod).get(MARKER_TAG) != MARKER_VALUE:
            raise ProviderError(f"pod {machine_id} is not an uplodr machine; not deleting it")
        if await self.api.delete_pod(machine_id, self.config.grace_seconds):
            try:
                async with asyncio.timeout(self.config.grace_seconds + 30):
                    await self._watch(machine_id, lambda _: False)  # until DELETED
            except TimeoutError:
                raise WorkerUnavailable(f"pod {machine_id} was not deleted within 30 s") from None
        self._ours.discard(machine_id)
        log.info("deleted worker pod %s", machine_id)

    async def failure(self, machine_id: str) -> StopReason | None:
        pod = await self.api.get_pod(machine_id)
        if pod is None:
            return StopReason.gone("the pod no longer exists")
        return stop_reason(pod_state(pod, self.config.grpc_port), pod_tags(pod), time.time())

    async def stop(self, machine_id: str) -> None:
        raise ProviderError("Kubernetes pods cannot be stopped and started again")

    async def start(self, machine_id: str) -> Machine:
        raise ProviderError("Kubernetes pods cannot be stopped and started again")

    async def aclose(self) -> None:
        """Delete the pods created here that nobody destroyed, then close the client."""
        await destroy_leftovers(self._creating, self._ours, self.destroy, "worker pod", log)
        await self.api.aclose()

    # -- internals -------------------------------------------------------------------------

    async def _watch(self, name: str, until: Callable[[PodState], bool]) -> PodState | None:
        """Pod `name`'s first state for which `until` is true, read then watched from that
        resourceVersion (nothing is missed in between); None once it is deleted, or if it was
        never there."""
        pod = await self.api.get_pod(name)
        if pod is None:
            return None
        state = pod_state(pod, self.config.grpc_port)
        if until(state):
            return state
        version = pod.metadata.resourceVersion if pod.metadata is not None else None
        async for kind, changed in self.api.watch_pod(name, version):
            if kind == "DELETED":
                return None
            state = pod_state(changed, self.config.grpc_port)
            if until(state):
                return state
        return None

    async def _create(self, name: str, pod: Pod) -> Machine:
        self._ours.add(name)
        try:
            created = await self.api.create_pod(pod)
        except (ProviderError, NotCreated, Busy):
            self._ours.discard(name)  # refused or never sent: nothing was made
            raise
        try:
            async with asyncio.timeout(self.config.schedule_timeout):
                state = await self._watch(name, lambda s: bool(s.address) or s.ended)
        except TimeoutError:
            state = PodState(PodPhase.UNSCHEDULABLE, "no IP within the schedule timeout")
        if state is None:
            self._ours.discard(name)
            raise WorkerUnavailable(f"pod {name} was deleted while it was being scheduled")
        if state.ended or not state.address:  # say why, leave nothing
            await self.destroy(name)
            raise _not_started(name, state, pod_tags(created))
        log.info("created worker pod %s at %s", name, state.address)
        meta = created.metadata
        stamp = meta.creationTimestamp if meta is not None else None
        return Machine(
            id=name,
            address=state.address,
            tags=pod_tags(created),
            created_at=stamp.timestamp() if stamp is not None else time.time(),
            state="starting",
        )


def _not_started(name: str, state: PodState, tags: Mapping[str, str]) -> UplodrError:
    """The error for a pod that will not run its worker: no room is Busy (503 with
    Retry-After), an image that cannot be pulled a ProviderError (502) naming it, a pod that
    stopped WorkerUnavailable with why (the lease then asks `failure()`)."""
    if state.phase is PodPhase.UNSCHEDULABLE:
        return Busy(f"Kubernetes has no room for a worker pod: {state.detail}")
    if state.phase is PodPhase.IMAGE:
        return ProviderError(f"pod {name} {state.why_not_started()}")
    reason = stop_reason(state, tags, time.time())
    return WorkerUnavailable(f"pod {name} stopped: {reason}" if reason else f"pod {name} is gone")


def from_settings(settings: ProviderSettings) -> KubernetesProvider:
    from uplodr.machines.kubernetes_api import KubeApi, load_config

    config = KubernetesConfig.from_settings(settings)
    return KubernetesProvider(config, KubeApi(load_config(config.kubeconfig), config.namespace))
