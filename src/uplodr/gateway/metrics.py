"""Prometheus metrics of the gateway, served at /metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from uplodr.answer import Quality
from uplodr.dispatch.dispatcher import DispatchTotals
from uplodr.dispatch.pool import PoolStats

REGISTRY = CollectorRegistry()

UPLOADS = Counter(
    "uplodr_uploads",
    "Uploads answered, by outcome (converted, deduplicated, busy, client_gone)",
    ["outcome"],
    registry=REGISTRY,
)
ERRORS = Counter(
    "uplodr_errors", "Uploads refused or failed, by error code", ["code"], registry=REGISTRY
)
# The one route whose refusals are upload errors.
UPLOADS_PATH = "/v1/images"


def count_error(method: str, path: str, code: str) -> None:
    """Count a refusal in `uplodr_errors_total` if it refused an upload: a stray request
    elsewhere (a browser's /favicon.ico, a scanner's probe of /wp-login.php, a missing file under
    /files), or a look-up of a stored image (GET /v1/images), is no upload error and would drown
    the real ones."""
    if method == "POST" and path == UPLOADS_PATH:
        ERRORS.labels(code=code).inc()


PHASE_SECONDS = Histogram(
    "uplodr_job_phase_seconds",
    "Seconds per job phase (wait for a pooled machine; or create, boot and destroy of a "
    "machine of the job's own; transfer, convert, store, total)",
    ["phase"],
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
)
QUALITY_SCORE = Histogram(
    "uplodr_variant_quality_score",
    "Perceptual score of each variant made at a quality target, by metric and format "
    "(SSIMULACRA2: 100 identical, ~70 high-quality web)",
    ["metric", "format"],
    registry=REGISTRY,
    buckets=(50, 60, 65, 70, 72, 74, 76, 78, 80, 85, 90, 100),
)
BYTES_SAVED = Histogram(
    "uplodr_variant_bytes_saved_ratio",
    "Share of bytes each targeted variant saved against the preset's fixed setting, by format "
    "(negative: the target needed more)",
    ["format"],
    registry=REGISTRY,
    buckets=(-0.5, -0.25, -0.1, 0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1),
)
WAITING = Gauge(
    "uplodr_jobs_waiting",
    "Uploads waiting for a job slot (--pool-max × --jobs-per-machine)",
    registry=REGISTRY,
)
RUNNING = Gauge("uplodr_jobs_running", "Jobs holding a machine slot", registry=REGISTRY)
UPLOAD_BYTES = Counter(
    "uplodr_upload_bytes", "Bytes of uploads received (spooled)", registry=REGISTRY
)
IN_FLIGHT = Gauge(
    "uplodr_uploads_in_flight",
    "Uploads admitted and not yet answered: spooling, waiting for a machine or converting "
    "(at most --max-in-flight)",
    registry=REGISTRY,
)
SPOOL_RESERVED = Gauge(
    "uplodr_spool_reserved_bytes",
    "Bytes of the spool disk reserved by uploads in flight (at most --spool-budget)",
    registry=REGISTRY,
)
ADMISSION_REFUSED = Counter(
    "uplodr_admission_refused",
    "Uploads answered 503 busy before their body was read, by the bound they met "
    "(in_flight, token_in_flight, spool_budget)",
    ["reason"],
    registry=REGISTRY,
)
TOKEN_UPLOADS = Counter(
    "uplodr_token_uploads",
    "Upload requests by token name (never the secret) and answer code (ok or an error code)",
    ["token", "code"],
    registry=REGISTRY,
)


class DispatchCollector(Collector):
    """Machine counts, machine-seconds and cost straight from the dispatcher's totals, so that
    failed and cancelled jobs — whose machines billed too — are counted like successful ones."""

    def __init__(self, totals: Callable[[], DispatchTotals]) -> None:
        self._totals = totals

    def collect(self) -> Iterator[Metric]:
        totals = self._totals()
        for name, documentation, value in (
            (
                "uplodr_machines_created",
                "Machines created for jobs (a deduplicated upload creates none)",
                totals.machines_created,
            ),
            (
                "uplodr_machines_destroyed",
                "Machines destroyed by the gateway (after their job, idle window or job limit)",
                totals.machines_destroyed,
            ),
            (
                "uplodr_machine_destroy_failures",
                "Destroys that failed (left to the reaper)",
                totals.destroy_failures,
            ),
            (
                "uplodr_machine_seconds",
                "Machine-seconds used, from create to destroyed",
                totals.machine_seconds,
            ),
            (
                "uplodr_machine_boot_seconds",
                "Seconds machines spent being created and booted (create requested → ready)",
                totals.boot_seconds,
            ),
            ("uplodr_cost", "Cost of machine time, in the price table's currency", totals.cost),
        ):
            yield CounterMetricFamily(name, documentation, value=value)


class PoolCollector(Collector):
    """The pool's machines now (size, booting, busy, idle) and the machine-seconds they spent
    idle: what the pool costs while nobody uploads."""

    def __init__(self, stats: Callable[[], PoolStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        yield CounterMetricFamily(
            "uplodr_machine_idle_seconds",
            "Machine-seconds pooled machines spent ready with no job (billed, unused)",
            value=stats.idle_seconds,
        )
        retired = CounterMetricFamily(
            "uplodr_machines_retired_bad_input",
            "Pool machines destroyed, never reused, after a job on them failed on its input, "
            "by the error's kind (corrupt_image, out_of_memory, crash, deadline, ...)",
            labels=["reason"],
        )
        for reason, count in sorted(stats.retired_bad_input.items()):
            retired.add_metric([reason], count)
        yield retired
        for name, documentation, value in (
            ("uplodr_pool_machines", "Machines in the pool (booting or ready)", stats.machines),
            ("uplodr_pool_machines_booting", "Pool machines being created", stats.booting),
            ("uplodr_pool_machines_busy", "Pool machines running a job", stats.busy),
            ("uplodr_pool_machines_idle", "Pool machines ready with no job", stats.idle),
            (
                "uplodr_pool_machines_stopped",
                "Pool machines stopped for later (--pool-keep-stopped)",
                stats.stopped,
            ),
        ):
            yield GaugeMetricFamily(name, documentation, value=value)


def observe_job(timings: dict[str, float], receipts: Iterable[tuple[str, Quality]] = ()) -> None:
    """A converted upload: its phases, and each (format, receipt) of its targeted variants."""
    UPLOADS.labels(outcome="converted").inc()
    for phase, seconds in timings.items():
        if phase != "machine_seconds":
            PHASE_SECONDS.labels(phase=phase).observe(seconds)
    for fmt, receipt in receipts:
        QUALITY_SCORE.labels(metric=receipt.metric, format=fmt).observe(receipt.score)
        BYTES_SAVED.labels(format=fmt).observe(receipt.saved)
