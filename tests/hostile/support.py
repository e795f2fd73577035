"""Helpers of the hostile-input tests: peak memory of processes and machines, machine counts,
raw-socket requests, a metric of a running gateway, the spool folder watched during a burst."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.gateway import Gateway

_CREATED = re.compile(r"job \w+: machine (\S+) created")


def machines_created(gateway: Gateway) -> list[str]:
    """Ids of every machine the gateway created so far (its log says so for each)."""
    return _CREATED.findall(gateway.log_text())


def status_kb(pid: int, key: str) -> int:
    """A `kB` line of /proc/<pid>/status (VmHWM: peak RSS, VmRSS: current), 0 if gone."""
    with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    return 0


def cgroup_peak(path: Path) -> int:
    """High-water mark in bytes of a memory cgroup (v1 max_usage_in_bytes, v2 memory.peak)."""
    for name in ("memory.max_usage_in_bytes", "memory.peak"):
        with contextlib.suppress(OSError, ValueError):
            return int((path / name).read_text())
    return 0


def peak_rss_mb(pid: int) -> float:
    return status_kb(pid, "VmHWM") / 1024


@dataclass
class MachineMemory:
    """Samples the workers of a gateway while tests run: each worker's peak RSS (VmHWM, read
    until it exits) and, when machines have a memory cgroup, the cgroup's own high-water mark
    (memory.max_usage_in_bytes, which counts everything the machine touched)."""

    gateway: Gateway
    interval: float = 0.01
    worker_peak_kb: dict[int, int] = field(default_factory=dict)
    cgroup_peak_bytes: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> MachineMemory:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self.gateway.workers():
                kb = status_kb(pid, "VmHWM")
                self.worker_peak_kb[pid] = max(self.worker_peak_kb.get(pid, 0), kb)
            for record in self.gateway.machine_records():
                with contextlib.suppress(OSError, ValueError):
                    path = json.loads(record.read_text()).get("cgroup")
                    if path:
                        usage = cgroup_peak(Path(path))
                        previous = self.cgroup_peak_bytes.get(path, 0)
                        self.cgroup_peak_bytes[path] = max(previous, usage)
            time.sleep(self.interval)  # sampling interval of a monitor, not a wait

    @property
    def workers_seen(self) -> int:
        return len(self.worker_peak_kb)

    @property
    def worker_peak_mb(self) -> float:
        return max(self.worker_peak_kb.values(), default=0) / 1024

    @property
    def cgroup_peak_mb(self) -> float:
        return max(self.cgroup_peak_bytes.values(), default=0) / (1024 * 1024)


def metric(
    gateway: Gateway, name: str, headers: dict[str, str] | None = None, **labels: str
) -> float:
    """One sample of /metrics (0 when absent)."""
    text = httpx.get(f"{gateway.url}/metrics", headers=headers, timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


class SpoolWatch:
    """The most upload folders the spool held at once, sampled while a burst runs."""

    def __init__(self, spool: Path) -> None:
        self.spool = spool
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SpoolWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.most = max(self.most, len(list(self.spool.iterdir())))
            time.sleep(0.002)  # a sampling interval of a monitor, not a wait
