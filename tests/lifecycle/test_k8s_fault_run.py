"""The fault run on Kubernetes (`python -m bench.k8s_faults`): jobs with random faults — workers
killed, pods deleted mid-job, the API server stopped mid-job, clients hanging up, the gateway
killed — end in success or a clear error, and afterwards zero pods and zero worker processes
exist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO

JOBS = 40


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_jobs_with_random_kubernetes_faults_leave_no_pod(tmp_path: Path) -> None:
    counts = tmp_path / "counts.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.k8s_faults", "--jobs", str(JOBS), "--seed", "3",
         "--json", str(counts)],
        cwd=REPO, capture_output=True, text=True, timeout=580, check=False,
    )  # fmt: skip
    print(done.stdout)
    assert counts.exists(), f"the run wrote no report; its stderr ends:\n{done.stderr[-4000:]}"
    report = json.loads(counts.read_text())
    outcomes: dict[str, int] = report["outcomes"]
    faults: dict[str, int] = report["faults"]
    assert sum(outcomes.values()) == JOBS
    clear = {"ok", "client_gone", "gateway_killed"}
    assert all(o in clear or o.startswith("error:") for o in outcomes), outcomes
    assert "error:internal" not in outcomes and report["unclear"] == []
    assert outcomes["ok"] > 0
    for kind in ("worker_killed", "pod_deleted", "api_outage", "gateway_killed"):
        assert faults.get(kind, 0) > 0, f"no {kind} in {faults}"
    assert report["machines_left"] == 0 and report["processes_left"] == 0
    assert report["machines_created"] == sum(report["machines_destroyed"].values())
    assert report["ok"] is True
    assert done.returncode == 0, done.stderr[-3000:]
