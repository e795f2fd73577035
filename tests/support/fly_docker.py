"""Fly machines as containers: what the Fly API test server runs when a test gives it an engine.

    with FlyDockerMachines(client, {IMAGE: images.uplodr}) as machines, \\
            FlyApiServer(grpc_port=50051, machines=machines) as fly:
        ...                                 # each created machine is a container

Why it looks like this — each choice is what a Fly Machine does:
- **The create request is the container.** `config.image` (through `images`, which maps the
  registry name a gateway is configured with to the image built here; an image neither mapped nor
  in the engine is refused as Fly refuses one it cannot pull), `init.entrypoint` / `init.cmd`
  replacing the image's ENTRYPOINT / CMD (as on Fly), `env`, `guest.memory_mb` as the memory limit
  with no swap, `guest.cpus` as a CPU quota. Nothing else of the host: no mounts, no host env, and
  the image's HEALTHCHECK off (Fly does not run it).
- **A private IPv6 network, like Fly's 6PN.** Machines get static addresses in a ULA /64
  (`fdaa:0:XXXX::N`, Fly's prefix with a free random XXXX) on a network of their own, and
  `private_ip` in the create answer is that address — so a worker must listen on `[::]`, as on
  Fly. This host is the network's gateway (`gateway_ip`, `::1` of the /64): the gateway process
  reaches machines directly, and a service the machines need (S3) must listen there. Containers
  have no route beyond this host.
- **States and events come from the container.** `poll()` is None until the container exits,
  then its exit code; `oom_killed` is the engine's `State.OOMKilled` (the kernel's cgroup OOM
  kill). The server turns them into Fly's `exit` event. `kill()` removes the container
  (destroy); a kill that comes while the container is still being made removes it once made.
- The engine's network and every container carry the label `uplodr.fly-sim=<run>`; `close()`
  removes what is left and the network.
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
import subprocess
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import docker
from docker.errors import DockerException, ImageNotFound, NotFound

from .docker_engine import host_programs_image

if TYPE_CHECKING:
    from .fly_api import WorkerLaunch

LABEL = "uplodr.fly-sim"
ANCHOR_LABEL = "uplodr.fly-sim.anchor"
SIXPN = ipaddress.IPv6Network("fdaa::/16")


def _addresses(device: str) -> str:
    return subprocess.run(
        ["ip", "-6", "addr", "show", "dev", device], capture_output=True, text=True, check=False
    ).stdout


def _free_subnet() -> ipaddress.IPv6Network:
    """A /64 `fdaa:0:XXXX::/64` that no IPv6 route of this host overlaps."""
    routes = subprocess.run(
        ["ip", "-6", "route", "show", "table", "all"], capture_output=True, text=True, check=False
    ).stdout
    taken: list[ipaddress.IPv6Network] = []
    for line in routes.splitlines():
        with contextlib.suppress(ValueError):
            first = line.split(" ", 2)[0] if not line.startswith(("local", "multicast")) else ""
            if first and first != "default":
                taken.append(ipaddress.IPv6Network(first, strict=False))
    candidates = list(range(1, 0xFFFF))
    random.shuffle(candidates)
    for word in candidates:
        subnet = ipaddress.IPv6Network(f"fdaa:0:{word:x}::/64")
        if not any(subnet.overlaps(t) for t in taken):
            return subnet
    raise RuntimeError("no free fdaa:0:XXXX::/64 for the simulated private network")


class FlyDockerMachines:
    """The engine side of a Fly API test server in container mode (see the module docstring)."""

    def __init__(self, client: docker.DockerClient, images: Mapping[str, str]) -> None:
        self.client = client
        self.images = dict(images)
        self.run = f"{random.getrandbits(32):08x}"
        self.subnet = _free_subnet()
        self.network_name = f"fly-6pn-{self.run}"
        self._network: Any = None
        self._anchor: Any = None

    @property
    def gateway_ip(self) -> str:
        """This host's address on the machines' network."""
        return str(self.subnet.network_address + 1)

    def private_ip(self, index: int) -> str:
        """The address of the machine with this index (2 …)."""
        return str(self.subnet.network_address + index)

    def open(self) -> FlyDockerMachines:
        ipam = docker.types.IPAMConfig(
            pool_configs=[docker.types.IPAMPool(subnet=str(self.subnet), gateway=self.gateway_ip)]
        )
        self._network = self.client.networks.create(
            self.network_name,
            driver="bridge",
            enable_ipv6=True,
            ipam=ipam,
            labels={LABEL: self.run},
        )
        # A bridge with no port has no carrier, and its address stays "tentative" (IPv6
        # duplicate address detection), unusable by this host until a first machine plugs in.
        # Fly's 6PN is there before any machine: an anchor container (this host's `sleep`)
        # keeps the bridge up, and its address is made nodad.
        api = self.client.api
        anchor = api.create_container(
            host_programs_image(self.client, "sleep"),
            ["sleep", "infinity"],
            host_config=api.create_host_config(network_mode=self.network_name),
            networking_config={
                # far above the machines' addresses (index 2-254)
                "EndpointsConfig": {
                    self.network_name: api.create_endpoint_config(
                        ipv6_address=self.private_ip(0xFFFF)
                    )
                }
            },
            labels={ANCHOR_LABEL: self.run},
        )
        self._anchor = self.client.containers.get(anchor["Id"])
        self._anchor.start()
        bridge = f"br-{self._network.id[:12]}"
        subprocess.run(
            ["ip", "-6", "addr", "replace", f"{self.gateway_ip}/64", "dev", bridge, "nodad"],
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 10
        while "tentative" in _addresses(bridge):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.gateway_ip} on {bridge} stays tentative")
            time.sleep(0.02)  # polling the kernel's address state under a deadline
        return self

    def close(self) -> None:
        with contextlib.suppress(DockerException):
            for container in self.client.containers.list(
                all=True, filters={"label": f"{LABEL}={self.run}"}
            ):
                with contextlib.suppress(DockerException):
                    container.remove(force=True)
        if self._anchor is not None:
            with contextlib.suppress(DockerException):
                self._anchor.remove(force=True)
            self._anchor = None
        if self._network is not None:
            with contextlib.suppress(DockerException):
                self._network.remove()
            self._network = None

    def __enter__(self) -> FlyDockerMachines:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def resolve(self, image: str) -> str | None:
        """The local image a Fly image name runs as, or None when Fly could not pull it."""
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

    def start(self, launch: WorkerLaunch) -> ContainerMachine:
        """A container for the machine, made and started in the background."""
        return ContainerMachine(self, launch)


class ContainerMachine:
    """One machine's container, with the part of `subprocess.Popen` the server uses."""

    def __init__(self, owner: FlyDockerMachines, launch: WorkerLaunch) -> None:
        self.owner = owner
        self.launch = launch
        self.container_id: str | None = None
        self.returncode: int | None = None
        self.oom_killed = False
        self.error: str | None = None  # why the container could not be made or started
        self.running = threading.Event()
        self._lock = threading.Lock()
        self._killed = False
        self._thread = threading.Thread(target=self._life, name=f"fly-{launch.machine_id}")
        self._thread.daemon = True
        self._thread.start()

    # -- what the server uses ----------------------------------------------------------------

    def poll(self) -> int | None:
        return self.returncode

    def kill(self) -> None:
        """Destroy: remove the container (now, or as soon as it exists)."""
        with self._lock:
            self._killed = True
            container_id = self.container_id
        if container_id is not None:
            self._remove(container_id)
        if self.returncode is None:
            self.returncode = -9

    def crash(self) -> bool:
        """SIGKILL the container's process, as a crash would; False if it is not running."""
        container_id = self.container_id
        if container_id is None or self.returncode is not None:
            return False
        try:
            self.owner.client.api.kill(container_id, signal="SIGKILL")
        except DockerException:
            return False
        return True

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
            self.running.set()
            # blocks until the container stops (exit, OOM kill, removal); no client timeout
            api.wait(container_id, timeout=None)
            self._record_exit(container_id)
        except DockerException as error:
            self.error = " ".join(str(error).split())[:300]
            self.returncode = 125  # docker's own "could not run the container"

    def _create(self) -> str:
        api = self.owner.client.api
        config = self.launch.config
        guest = config.get("guest") or {}
        init = config.get("init") or {}
        image = self.owner.resolve(str(config.get("image") or ""))
        if image is None:
            raise ImageNotFound(f"image {config.get('image')!r} is not in the engine")
        memory = f"{int(guest.get('memory_mb') or 256)}m"
        host_config = api.create_host_config(
            mem_limit=memory,
            memswap_limit=memory,
            nano_cpus=int(guest.get("cpus") or 1) * 1_000_000_000,
            network_mode=self.owner.network_name,
        )
        endpoint = api.create_endpoint_config(ipv6_address=self.launch.host)
        created = api.create_container(
            image,
            command=init.get("cmd") or None,
            entrypoint=init.get("entrypoint") or None,
            environment=dict(self.launch.env),
            host_config=host_config,
            networking_config={"EndpointsConfig": {self.owner.network_name: endpoint}},
            labels={LABEL: self.owner.run, f"{LABEL}.machine": self.launch.machine_id},
            healthcheck={"test": ["NONE"]},
            name=f"fly-{self.owner.run}-{self.launch.machine_id}",
        )
        return str(created["Id"])

    def _record_exit(self, container_id: str) -> None:
        try:
            state = self.owner.client.api.inspect_container(container_id)["State"]
        except NotFound:  # removed (destroyed) before it exited on its own
            self.returncode = -9
            return
        self.oom_killed = bool(state.get("OOMKilled"))
        self.returncode = int(state.get("ExitCode") or 0)

    def _remove(self, container_id: str) -> None:
        with contextlib.suppress(NotFound):
            self.owner.client.api.remove_container(container_id, force=True)
