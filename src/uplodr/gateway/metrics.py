"""Prometheus metrics of the gateway, served at /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry()

JOBS = Counter("uplodr_jobs", "Uploads answered, by outcome", ["outcome"], registry=REGISTRY)
ERRORS = Counter(
    "uplodr_errors", "Uploads refused or failed, by error code", ["code"], registry=REGISTRY
)
PHASE_SECONDS = Histogram(
    "uplodr_job_phase_seconds",
    "Seconds per job phase (create, boot, transfer, convert, store, destroy, total)",
    ["phase"],
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
)
MACHINE_SECONDS = Counter(
    "uplodr_machine_seconds", "Machine-seconds used, from create to destroyed", registry=REGISTRY
)
COST = Counter(
    "uplodr_cost", "Cost of machine time, in the price table's currency", registry=REGISTRY
)
UPLOAD_BYTES = Counter("uplodr_upload_bytes", "Bytes of uploads received", registry=REGISTRY)
MACHINES_CREATED = Counter(
    "uplodr_machines_created",
    "Machines created for jobs (a deduplicated upload creates none)",
    registry=REGISTRY,
)


def observe_job(timings: dict[str, float], cost: float) -> None:
    JOBS.labels(outcome="converted").inc()
    for phase, seconds in timings.items():
        if phase != "machine_seconds":
            PHASE_SECONDS.labels(phase=phase).observe(seconds)
    MACHINE_SECONDS.inc(timings.get("machine_seconds", 0.0))
    COST.inc(cost)
