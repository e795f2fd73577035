"""Machines uplodr did not make: a process with a record in a local state dir, as another tool
sharing the directory would leave it, so tests can prove uplodr never lists or reaps it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from uplodr.machines.local_records import Record, RecordDir, new_machine_id, process_start_time


@contextmanager
def stranger_machine(
    state_dir: Path, tags: Mapping[str, str], env: Mapping[str, str]
) -> Iterator[str]:
    """A sleeping process with a record (`tags` exactly, owned by itself) in `state_dir`; its
    machine id. Killed and its record removed afterwards."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"],
        env={**os.environ, **env},
        start_new_session=True,
    )
    started = process_start_time(process.pid) or 0.0
    records = RecordDir(state_dir / "machines")
    machine_id = new_machine_id()
    records.write(
        Record(
            id=machine_id,
            pid=process.pid,
            start_time=started,
            port=1,
            address="127.0.0.1:1",
            created_at=time.time(),
            tags=dict(tags),
            owner_pid=process.pid,
            owner_start_time=started,
        )
    )
    try:
        yield machine_id
    finally:
        process.kill()
        process.wait()
        records.remove(machine_id)
