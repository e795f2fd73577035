"""What a pod's status says, as typed data: the one place that reads a pod's `status`.

`pod_state` turns a pod (lightkube's typed `Pod`) into a `PodState`: a `PodPhase` (pending,
running, out of memory, image cannot be pulled, unschedulable, past its deadline, ended), the
status's own words, and the address once the pod has an IP. The Kubernetes provider decides
from it what to raise (`create`, `wait_started`) and what `Provider.failure` answers
(`failure_reason`); nothing else reads status fields. Why each mapping:

- `terminated.reason: OOMKilled` is the kernel's OOM kill under the pod's memory limit → "out of
  memory (N MB limit)", which the lease answers with the 422;
- a container waiting with ErrImagePull / ImagePullBackOff / InvalidImageName will not start
  by waiting → the image and the runtime's message;
- `PodScheduled=False, reason Unschedulable` → no node has room (or fits the selector);
- `phase: Failed, reason: DeadlineExceeded` comes first: the kubelet kills the container for
  it, and the container's own exit (137) would otherwise read as a crash;
- any other exit: "killed by signal N" (the kubelet reports 128 + N) or "exited with code N".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

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
    detail: str = ""  # the status's own words: exit code, message
    address: str = ""  # podIP:port once it has one

    @property
    def ended(self) -> bool:
        """It will not run a worker (it stopped, or cannot start)."""
        return self.phase not in (PodPhase.PENDING, PodPhase.RUNNING)

    @property
    def stopped(self) -> bool:
        """Its container ran and is gone (as against waiting to start)."""
        return self.phase in (PodPhase.OUT_OF_MEMORY, PodPhase.DEADLINE, PodPhase.ENDED)

    def reason(self) -> str | None:
        """Why the machine stopped (or will not start), one line; None while it is fine."""
        if self.phase in (PodPhase.PENDING, PodPhase.RUNNING):
            return None
        return {
            PodPhase.OUT_OF_MEMORY: "out of memory",
            PodPhase.IMAGE: "cannot pull its image",
            PodPhase.UNSCHEDULABLE: "cannot be scheduled",
            PodPhase.DEADLINE: "ran past its deadline (activeDeadlineSeconds)",
            PodPhase.ENDED: "exited",
        }[self.phase] + (f" ({self.detail})" if self.detail else "")


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
                limit = f"{memory} MB limit" if memory else ""
                return PodState(PodPhase.OUT_OF_MEMORY, limit, address)
            return PodState(
                PodPhase.ENDED,
                _exit_detail(terminated.exitCode, terminated.signal, terminated.message),
                address,
            )
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


def failure_reason(state: PodState) -> str | None:
    """What `Provider.failure` answers for a state (the lease reads "out of memory")."""
    if state.phase is PodPhase.OUT_OF_MEMORY:
        return f"out of memory ({state.detail})" if state.detail else "out of memory"
    if state.phase is PodPhase.ENDED:
        return state.detail or "exited"
    return state.reason()


def _exit_detail(code: int | None, signal: int | None, message: str | None) -> str:
    code = int(code or 0)
    if signal:
        reason = f"killed by signal {signal}"
    elif code > 128:  # the kubelet reports a signal's death as 128 + its number
        reason = f"killed by signal {code - 128}"
    elif code:
        reason = f"exited with code {code}"
    else:
        reason = "exited"
    detail = _one_line(message or "")
    return f"{reason}: {detail}" if detail else reason


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
