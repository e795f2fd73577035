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
- Every container and the network carry the Fly simulator's label (`uplodr.fly-sim=<run>`):
  this is its engine side (`FlyDockerMachines`, `ContainerMachine`) with a pod network and a
  pod spec; `close()` removes what is left.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import docker
from docker.errors import DockerException, ImageNotFound

from .fly_docker import LABEL, ContainerMachine, FlyDockerMachines

if TYPE_CHECKING:
    from .fly_api import WorkerLaunch


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


class KubeDockerPods(FlyDockerMachines):
    """The container runtime of a Kubernetes API test server (see the module docstring): the
    Fly simulator's engine side, on an IPv4 pod network, making pods' containers."""

    def __init__(self, client: docker.DockerClient, images: Mapping[str, str]) -> None:
        super().__init__(client, images)
        self.network_name = f"k8s-pods-{self.run}"

    def open(self) -> KubeDockerPods:
        self._network = self.client.networks.create(
            self.network_name, driver="bridge", labels={LABEL: self.run}
        )
        return self

    def __enter__(self) -> KubeDockerPods:
        return self.open()

    def start(self, launch: WorkerLaunch) -> PodContainer:
        """The pod's container, made and started in the background."""
        return PodContainer(self, launch)


class PodContainer(ContainerMachine):
    """One pod's container (the Fly simulator's machine container, made from a pod spec), with
    its IP on the pod network once it runs."""

    def __init__(self, owner: KubeDockerPods, launch: WorkerLaunch) -> None:
        self._ip = ""
        super().__init__(owner, launch)

    @property
    def ip(self) -> str:
        """Its address on the pod network once it runs ("" before)."""
        if not self._ip and self.running.is_set() and self.container_id is not None:
            with contextlib.suppress(DockerException):
                attrs = self.owner.client.api.inspect_container(self.container_id)
                network = attrs["NetworkSettings"]["Networks"].get(self.owner.network_name)
                self._ip = str((network or {}).get("IPAddress") or "")
        return self._ip

    def terminate(self) -> None:
        """SIGTERM to the container's process (a graceful delete)."""
        if self.container_id is not None and self.returncode is None:
            with contextlib.suppress(DockerException):
                self.owner.client.api.kill(self.container_id, signal="SIGTERM")

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
            labels={LABEL: self.owner.run, f"{LABEL}.machine": self.launch.machine_id},
            healthcheck={"test": ["NONE"]},
            name=f"k8s-{self.owner.run}-{self.launch.machine_id}",
        )
        return str(created["Id"])
