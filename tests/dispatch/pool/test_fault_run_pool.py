"""The fault run (`python -m bench.faults`) with the pool on: 200 jobs with random faults — a
killed worker may now be an idle pooled one — end in success or a clear error, and afterwards
zero machines and zero worker processes exist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_200_jobs_with_random_faults_on_a_pool_leave_nothing(tmp_path: Path) -> None:
    counts = tmp_path / "counts.json"
    command = [sys.executable, "-m", "bench.faults", "--jobs", "200", "--seed", "7"]
    command += ["--pool-idle", "5", "--json", str(counts)]
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=880, check=False
    )
    print(done.stdout)
    assert counts.exists(), f"the run wrote no report; its stderr ends:\n{done.stderr[-4000:]}"
    report = json.loads(counts.read_text())
    assert sum(report["outcomes"].values()) == 200
    assert report["unclear"] == [] and "error:internal" not in report["outcomes"]
    assert report["outcomes"]["ok"] > 0 and report["faults"].get("worker_killed", 0) > 0
    assert report["machines_left"] == 0 and report["processes_left"] == 0
    assert report["machines_created"] < 150  # machines were reused (172 with one per job)
    assert done.returncode == 0
