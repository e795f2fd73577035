"""The fault-injection run (`python -m bench.faults`): 200 jobs with random faults end in
success or a clear error, and afterwards zero machines and zero worker processes exist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_200_jobs_with_random_faults_leave_nothing(tmp_path: Path) -> None:
    counts = tmp_path / "counts.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.faults",
            "--jobs",
            "200",
            "--seed",
            "7",
            "--json",
            str(counts),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=880,
        check=False,
    )
    print(done.stdout)
    assert counts.exists(), f"the run wrote no report; its stderr ends:\n{done.stderr[-4000:]}"
    report = json.loads(counts.read_text())
    outcomes: dict[str, int] = report["outcomes"]
    faults: dict[str, int] = report["faults"]
    # every job accounted for, each one a success or a clear outcome
    assert sum(outcomes.values()) == 200
    clear = {"ok", "client_gone", "cancelled", "gateway_killed"}
    assert all(o in clear or o.startswith("error:") for o in outcomes), outcomes
    assert "error:internal" not in outcomes and report["unclear"] == []
    assert outcomes["ok"] > 0
    # the faults happened
    for kind in (
        "worker_killed",
        "gateway_killed",
        "client_hung_up_mid_upload",
        "client_hung_up_mid_job",
        "fly_rate_limited",
        "fly_error_5xx",
        "fly_capacity",
        "fly_stuck_in_created",
    ):
        assert faults.get(kind, 0) > 0, f"no {kind} in {faults}"
    assert any(k.startswith("task_cancelled_in_") for k in faults)
    assert report["gateway_restarts"] == faults["gateway_killed"]
    # and nothing is left
    assert report["machines_left"] == 0
    assert report["processes_left"] == 0
    assert report["leaked_after_cancel"] == 0
    assert report["machines_created"] == sum(report["machines_destroyed"].values())
    assert report["ok"] is True
    assert done.returncode == 0, done.stderr[-3000:]
