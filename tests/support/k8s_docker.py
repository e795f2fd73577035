"""Pods as containers: what the Kubernetes API test server runs when a test gives it an engine.

    with KubeDockerPods(client, {IMAGE: images.uplodr}) as pods, \\
            KubeApiServer(containers=pods) as kube:
        ...                                 # each pod's container is a container of the image

Why it looks like this — each choice is what a kubelet and its container runtime do with the
pod spec (the Fly simulator's `fly_docker.py` does the same for a Fly machine config):
- **The pod spec is the container.** The image (through `images`, mapping the registry name the
  provider is configured with to the image built here; one neither mapped nor in the engine is
  an image pull that fails), `command` / `args` replacing the image's ENTRYPOINT / CMD,
  `env`, `resources.limits` memory (memory = memory+swap: no swap) and cpu as real limits, the
  container `securityContext` (runAsUser/runAsGroup as the user, readOnlyRootFilesystem, every
  dropped capability, allowPrivilegeEscalation false as no-new-privileges; Docker's default
  seccomp profile is RuntimeDefault), and each `emptyDir` mount as a tmpfs of its sizeLimit
  (medium Memory: it counts against the memory limit, as on a node). Nothing else of the host.
- **A pod network.** Containers join an IPv4 bridge network of their own; the pod IP is the
  container's address on it (known once the sandbox exists, as a kubelet reports it), which
  this host reaches directly (it is the bridge's gateway).
- **Exit, OOM kill and signals come from the container**: `poll()` is None until it exits,
  then its exit code; `oom_killed` is the engine's `State.OOMKilled`; `terminate()` sends
  SIGTERM (a graceful delete), `kill()` removes it.
- Every container and the network carry the label `uplodr.k8s-sim=<run>`; `close()` removes
  what is left.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import docker
from docker.errors import DockerException, ImageNotFound, NotFound

if TYPE_CHECKING:
    from .fly_api import WorkerLaunch

LABEL = "uplodr.k8s-sim"


def _bytes(quantity: str) -> int:
    """A Kubernetes memory quantity ("512Mi", "1Gi", "1G", "1048576") in bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    return int(quantity)


def _nano_cpus(quantity: str) -> int:
    if quantity.endswith("m"):
        return int(quantity[:-1]) * 1_000_000
    return int(float(quantity) * 1_000_000_000)


class KubeDockerPods:
    """The container runtime of a Kubernetes API test server (see the module docstring)."""

    def __init__(self, client: docker.DockerClient, images: Mapping[str, str]) -> None:
        self.client = client
        self.images = dict(images)
        self.run = f"{random.getrandbits(32):08x}"
        self.network_name = f"k8s-pods-{self.run}"
        self._network: Any = None

    def open(self) -> KubeDockerPods:
        self._network = self.client.networks.create(
            self.network_name, driver="bridge", labels={LABEL: self.run}
        )
        return self

    def close(self) -> None:
        with contextlib.suppress(DockerException):
            for container in self.client.containers.list(
                all=True, filters={"label": f"{LABEL}={self.run}"}
            ):
                with contextlib.suppress(DockerException):
                    container.remove(force=True)
        if self._network is not None:
            with contextlib.suppress(DockerException):
                self._network.remove()
            self._network = None

    def __enter__(self) -> KubeDockerPods:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def resolve(self, image: str) -> str | None:
        """The local image a pod's image runs as, or None when a pull would fail."""
        local = self.images.get(image, image)
        try:
            self.client.images.get(local)
        except ImageNotFound:
            return None
        return local

    def containers(self) -> list[str]:
        """Ids of this run's containers that exist in the engine (any state)."""
        found = self.client.containers.list(all=True, filters={"label": f"{LABEL}={self.run}"})
        return [str(c.id) for c in found]

    def start(self, launch: WorkerLaunch) -> PodContainer:
        """The pod's container, made and started in the background."""
        return PodContainer(self, launch)


class PodContainer:
    """One pod's container, with the part of `subprocess.Popen` the server uses, and its IP."""

    def __init__(self, owner: KubeDockerPods, launch: WorkerLaunch) -> None:
        self.owner = owner
        self.launch = launch
        self.container_id: str | None = None
        self.ip = ""  # its address on the pod network, once it runs
        self.returncode: int | None = None
        self.oom_killed = False
        self.error: str | None = None  # why the container could not be made or started
        self._lock = threading.Lock()
        self._killed = False
        self._thread = threading.Thread(target=self._life, name=f"pod-{launch.machine_id}")
        self._thread.daemon = True
        self._thread.start()

    # -- what the server uses ----------------------------------------------------------------

    def poll(self) -> int | None:
        return self.returncode

    def terminate(self) -> None:
        """SIGTERM to the container's process (a graceful delete)."""
        if self.container_id is not None and self.returncode is None:
            with contextlib.suppress(DockerException):
                self.owner.client.api.kill(self.container_id, signal="SIGTERM")

    def crash(self) -> bool:
        """SIGKILL the container's process, as a crash would; False if it is not running."""
        if self.container_id is None or self.returncode is not None:
            return False
        try:
            self.owner.client.api.kill(self.container_id, signal="SIGKILL")
        except DockerException:
            return False
        return True

    def kill(self) -> None:
        """Remove the container (now, or as soon as it exists)."""
        with self._lock:
            self._killed = True
            container_id = self.container_id
        if container_id is not None:
            self._remove(container_id)
        if self.returncode is None:
            self.returncode = -9

    def wait(self, timeout: float | None = None) -> int | None:
        self._thread.join(timeout)
        return self.returncode

    # -- the container's life, in its own thread --------------------------------------------

    def _life(self) -> None:
        api = self.owner.client.api
        try:
            container_id = self._create()
            with self._lock:
                self.container_id = container_id
                killed = self._killed
            if killed:
                self._remove(container_id)
                self.returncode = -9
                return
            api.start(container_id)
            networks = api.inspect_container(container_id)["NetworkSettings"]["Networks"]
            self.ip = str((networks.get(self.owner.network_name) or {}).get("IPAddress") or "")
            # blocks until the container stops (exit, OOM kill, removal); no client timeout
            api.wait(container_id, timeout=None)
            self._record_exit(container_id)
        except DockerException as error:
            self.error = " ".join(str(error).split())[:300]
            self.returncode = 128  # the runtime could not run it (a kubelet's StartError)

    def _create(self) -> str:
        api = self.owner.client.api
        pod: Mapping[str, Any] = self.launch.config
        spec = pod["spec"]
        container = spec["containers"][0]
        image = self.owner.resolve(str(container["image"]))
        if image is None:
            raise ImageNotFound(f"image {container['image']!r} is not in the engine")
        limits = (container.get("resources") or {}).get("limits") or {}
        context = container.get("securityContext") or {}
        pod_context = spec.get("securityContext") or {}
        user = context.get("runAsUser", pod_context.get("runAsUser"))
        group = context.get("runAsGroup", pod_context.get("runAsGroup"))
        memory = _bytes(str(limits["memory"])) if "memory" in limits else None
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        tmpfs = {}
        for mount in container.get("volumeMounts") or []:
            empty = volumes.get(mount["name"], {}).get("emptyDir")
            if empty is not None:
                size = _bytes(str(empty.get("sizeLimit") or limits.get("memory") or "64Mi"))
                tmpfs[mount["mountPath"]] = f"rw,nosuid,nodev,size={size},mode=1777"
        host_config = api.create_host_config(
            mem_limit=memory,
            memswap_limit=memory,
            nano_cpus=_nano_cpus(str(limits["cpu"])) if "cpu" in limits else None,
            network_mode=self.owner.network_name,
            read_only=bool(context.get("readOnlyRootFilesystem")),
            cap_drop=(context.get("capabilities") or {}).get("drop") or None,
            security_opt=(
                ["no-new-privileges"] if context.get("allowPrivilegeEscalation") is False else None
            ),
            tmpfs=tmpfs or None,
        )
        created = api.create_container(
            image,
            command=container.get("args") or None,
            entrypoint=container.get("command") or None,
            environment=dict(self.launch.env),
            user=f"{user}:{group}" if user is not None and group is not None else user,
            host_config=host_config,
            labels={LABEL: self.owner.run, f"{LABEL}.pod": self.launch.machine_id},
            healthcheck={"test": ["NONE"]},
            name=f"k8s-{self.owner.run}-{self.launch.machine_id}",
        )
        return str(created["Id"])

    def _record_exit(self, container_id: str) -> None:
        try:
            state = self.owner.client.api.inspect_container(container_id)["State"]
        except NotFound:  # removed (deleted) before it exited on its own
            self.returncode = -9
            return
        self.oom_killed = bool(state.get("OOMKilled"))
        self.returncode = int(state.get("ExitCode") or 0)

    def _remove(self, container_id: str) -> None:
        with contextlib.suppress(NotFound):
            self.owner.client.api.remove_container(container_id, force=True)
