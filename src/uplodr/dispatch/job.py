"""A job: one Stream call on a leased machine — the upload's files to its worker, one answer per
file back — and what it cost.

The machine belongs to the lease (`uplodr.dispatch.lease`), which creates, keeps and destroys
it; a job only uses it. A worker that stops mid-job gives the provider's reason (out of memory
→ `limit_exceeded`), never a bare "connection lost".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from uplodr.dispatch.clock import PhaseTimer
from uplodr.dispatch.lease import MachineLease
from uplodr.dispatch.worker_client import UploadSource
from uplodr.errors import WorkerUnavailable
from uplodr.proto import uplodr_pb2


async def run_job(
    lease: MachineLease, job_id: str, files: Sequence[UploadSource], timeout: float
) -> list[uplodr_pb2.UploadResp]:
    """Stream `files` to the leased machine's worker; its answers, one per file, in order."""
    async with lease.job(job_id) as worker:
        try:
            responses = await worker.stream(files, timeout)
        except WorkerUnavailable as error:
            raise await lease.explain(error) from None
        if len(responses) != len(files):
            raise WorkerUnavailable(
                f"worker answered {len(responses)} file(s) for the {len(files)} it was sent"
            )
    return responses


@dataclass
class JobTimings:
    """Seconds per phase of one job. A job with a machine of its own (no pool) has its
    machine's `create`, `boot` and `destroy`; a pooled job has `wait` instead (for a machine
    with room: nothing when one was idle, its create and boot when it was made for the job),
    since the machine's create and destroy belong to no one job (they are on /metrics)."""

    wait: float | None = None
    create: float | None = None
    boot: float | None = None
    transfer: float = 0.0
    convert: float = 0.0
    store: float = 0.0
    destroy: float | None = None
    total: float = 0.0
    machine_seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in self.__dict__.items() if v is not None}


@dataclass
class JobResult:
    job_id: str
    machine_id: str
    responses: list[uplodr_pb2.UploadResp]
    timings: JobTimings
    cost: float = 0.0

    @classmethod
    def of_own_lease(
        cls,
        job_id: str,
        lease: MachineLease,
        responses: list[uplodr_pb2.UploadResp],
        timer: PhaseTimer,
        price_per_second: float,
    ) -> JobResult:
        """A job that had its lease to itself (released by now): the machine's whole life is
        the job's — its create, boot and destroy, and every machine-second."""
        assert lease.machine is not None
        convert = sum(r.timings.convert for r in responses)
        store = sum(r.timings.store for r in responses)
        timings = JobTimings(
            create=lease.timer.get("create"),
            boot=lease.timer.get("boot"),
            transfer=timer.get("stream") - convert - store,
            convert=convert,
            store=store,
            destroy=lease.timer.get("destroy"),
            total=timer.elapsed(),
            machine_seconds=lease.machine_seconds,
        )
        cost = lease.machine_seconds * price_per_second
        return cls(job_id, lease.machine.id, responses, timings, cost)
