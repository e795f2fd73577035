"""What a pod's status says, as typed data: the one place that reads a pod's `status`.

`pod_state` turns a pod (lightkube's typed `Pod`) into a `PodState`: a `PodPhase` (pending,
running, out of memory, image cannot be pulled, unschedulable, past its deadline, ended), the
container's exit, the status's own words, and the address once the pod has an IP. The
Kubernetes provider decides from it what to raise (`create`, `wait_started`), and `stop_reason`
makes it the `StopReason` that `Provider.failure` answers; nothing else reads status fields.
Why each mapping:

- `terminated.reason: OOMKilled` is the kernel's OOM kill under the pod's memory limit →
  `StopReason.out_of_memory(limit)`, which the lease answers with the 422;
- a container waiting with ErrImagePull / ImagePullBackOff / InvalidImageName will not start
  by waiting → the image and the runtime's message (the provider's ProviderError, a 502);
- `PodScheduled=False, reason Unschedulable` → no node has room (or fits the selector): Busy;
  neither of these two has stopped, so `stop_reason` is None for them;
- `phase: Failed, reason: DeadlineExceeded` comes first: the kubelet kills the container for
  it, and the container's own exit (137) would otherwise read as a crash;
- any other exit: `killed(N)` (the kubelet reports a signal's death as 128 + N) or `exited(N)`,
  a clean exit after the `deadline` tag being the worker's own end of life (`at_deadline`);
- a pod that failed without a container exit (evicted, its node lost) is `gone`: the machine
  went away, nothing says the input did it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from uplodr.machines.base import StopReason

if TYPE_CHECKING:  # lightkube belongs to the `server` extra
    from lightkube.resources.core_v1 import Pod


class PodPhase(enum.Enum):
    """What the provider makes of a pod's status (`pod_state`)."""

    PENDING = "pending"  # not scheduled, or its container is being made
    RUNNING = "running"
    OUT_OF_MEMORY = "out_of_memory"  # its container was OOM-killed
    IMAGE = "image"  # its image cannot be pulled
    UNSCHEDULABLE = "unschedulable"  # no node has room (or fits its selector)
    DEADLINE = "deadline"  # it ran past activeDeadlineSeconds
    ENDED = "ended"  # its container exited (or the pod failed another way)


@dataclass(frozen=True)
class PodState:
    phase: PodPhase
    detail: str = ""  # the status's own words (a message), one line
    address: str = ""  # podIP:port once it has one
    exit_code: int | None = None  # ENDED: the container's exit code, when it had one
    memory_mb: int = 0  # the container's memory limit (OUT_OF_MEMORY says it)

    @property
    def ended(self) -> bool:
        """It will not run a worker (it stopped, or cannot start)."""
        return self.phase not in (PodPhase.PENDING, PodPhase.RUNNING)

    @property
    def stopped(self) -> bool:
        """Its container ran and is gone (as against waiting to start)."""
        return self.phase in (PodPhase.OUT_OF_MEMORY, PodPhase.DEADLINE, PodPhase.ENDED)

    def why_not_started(self) -> str:
        """One line for a pod that will not start (IMAGE, UNSCHEDULABLE)."""
        what = "cannot pull its image" if self.phase is PodPhase.IMAGE else "cannot be scheduled"
        return f"{what} ({self.detail})" if self.detail else what


_IMAGE_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName"})


def pod_state(pod: Pod, grpc_port: int) -> PodState:
    """One pod's status as a typed state: the one place that reads status fields."""
    status = pod.status
    if status is None:
        return PodState(PodPhase.PENDING)
    ip = status.podIP or ""
    address = (f"[{ip}]:{grpc_port}" if ":" in ip else f"{ip}:{grpc_port}") if ip else ""
    memory = _memory_mb(pod)
    if status.phase == "Failed" and status.reason == "DeadlineExceeded":
        return PodState(PodPhase.DEADLINE, "", address)  # its container was killed for it
    for container in status.containerStatuses or []:
        state = container.state
        terminated = state.terminated if state is not None else None
        waiting = state.waiting if state is not None else None
        if terminated is not None:
            if terminated.reason == "OOMKilled":
                return PodState(PodPhase.OUT_OF_MEMORY, "", address, memory_mb=memory)
            code = terminated.signal + 128 if terminated.signal else terminated.exitCode
            detail = _one_line(terminated.message or "")
            return PodState(PodPhase.ENDED, detail, address, exit_code=int(code or 0))
        if waiting is not None and waiting.reason in _IMAGE_REASONS:
            image = container.image or (pod.spec.containers[0].image if pod.spec else "")
            detail = f"{image}: {_one_line(waiting.message or waiting.reason)}"
            return PodState(PodPhase.IMAGE, detail, address)
    if status.phase in ("Failed", "Succeeded"):
        return PodState(PodPhase.ENDED, _one_line(status.message or status.reason or ""), address)
    for condition in status.conditions or []:
        if (
            condition.type == "PodScheduled"
            and condition.status == "False"
            and condition.reason == "Unschedulable"
        ):
            return PodState(PodPhase.UNSCHEDULABLE, _one_line(condition.message or ""), address)
    running = any(
        c.state is not None and c.state.running is not None for c in status.containerStatuses or []
    )
    if status.phase == "Running" and running:
        return PodState(PodPhase.RUNNING, "", address)
    return PodState(PodPhase.PENDING, "", address)


def stop_reason(state: PodState, tags: Mapping[str, str], now: float) -> StopReason | None:
    """What `Provider.failure` answers for a pod in `state` with these tags (its labels) at
    `now`; None while it runs or has not started."""
    if state.phase is PodPhase.OUT_OF_MEMORY:
        return StopReason.out_of_memory(state.memory_mb)
    if state.phase is PodPhase.DEADLINE:
        return StopReason.deadline("it ran past its deadline (activeDeadlineSeconds)")
    if state.phase is not PodPhase.ENDED:
        return None
    code = state.exit_code
    if code is None:  # the pod failed without a container exit: evicted, its node lost
        return StopReason.gone(
            f"the pod failed: {state.detail}" if state.detail else "the pod failed"
        )
    if code > 128:  # the kubelet reports a signal's death as 128 + its number
        return StopReason.killed(code - 128, state.detail)
    return StopReason.exited(code, state.detail).at_deadline(tags, now)


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    return " ".join(lines[-1].split())[:300] if lines else ""


def _memory_mb(pod: Pod) -> int:
    if pod.spec is None or not pod.spec.containers:
        return 0
    resources = pod.spec.containers[0].resources
    limit = str(((resources.limits if resources else None) or {}).get("memory") or "")
    if limit.endswith("Mi") and limit[:-2].isdigit():
        return int(limit[:-2])
    return 0
