"""The local provider's machine records: one JSON file per worker process, readable by any
process (the reaper, `uplodr machines`, a restarted gateway).

A record names a process by pid *and* start time (psutil's create time), so a recycled pid is
never mistaken for a worker. psutil is imported when first needed: the command line loads the
provider modules for their option declarations, and psutil belongs to the `server` extra.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import stat
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ID_PATTERN = re.compile(r"uplodr-[0-9a-f]{12}")


def new_machine_id() -> str:
    return f"uplodr-{secrets.token_hex(6)}"


def default_state_dir() -> Path:
    """`$UPLODR_STATE_DIR`, else `$XDG_STATE_HOME/uplodr`, else `~/.local/state/uplodr`."""
    if env := os.environ.get("UPLODR_STATE_DIR"):
        return Path(env)
    if xdg := os.environ.get("XDG_STATE_HOME"):
        return Path(xdg) / "uplodr"
    return Path.home() / ".local" / "state" / "uplodr"


def process_start_time(pid: int) -> float | None:
    """When process `pid` started (unix time, as psutil reports it), None when there is none."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def is_running(pid: int, start_time: float) -> bool:
    """True when `pid` is the same process that started at `start_time` and is not a zombie."""
    import psutil

    try:
        process = psutil.Process(pid)
        ended = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
        return process.create_time() == start_time and process.status() not in ended
    except psutil.Error:
        return False


@dataclass(frozen=True)
class Record:
    id: str
    pid: int
    start_time: float
    port: int
    address: str
    created_at: float
    tags: Mapping[str, str] = field(default_factory=dict)
    memory_mb: int | None = None
    cgroup: str | None = None  # path of the machine's memory cgroup
    log: str | None = None  # path of the worker's stdout/stderr
    # The process that created the machine (it may still want failure() before destroy).
    owner_pid: int = 0
    owner_start_time: float = 0.0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Record:
        return cls(
            id=str(data["id"]),
            pid=int(data["pid"]),
            start_time=float(data["start_time"]),
            port=int(data["port"]),
            address=str(data["address"]),
            created_at=float(data["created_at"]),
            tags={str(k): str(v) for k, v in dict(data.get("tags") or {}).items()},
            memory_mb=None if data.get("memory_mb") is None else int(data["memory_mb"]),
            cgroup=None if data.get("cgroup") is None else str(data["cgroup"]),
            log=None if data.get("log") is None else str(data["log"]),
            owner_pid=int(data.get("owner_pid", 0)),
            owner_start_time=float(data.get("owner_start_time", 0)),
        )

    def running(self) -> bool:
        return is_running(self.pid, self.start_time)

    def owner_running(self) -> bool:
        return is_running(self.owner_pid, self.owner_start_time)


class RecordDir:
    """A directory of `<machine id>.json` records (0700, files 0600), written atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def ensure(self) -> None:
        """Make the directory, or make an existing one private: 0700 and ours. Records name
        the pids and cgroups that destroy kills, and logs hold what workers printed, so
        nobody else may write (or read) them. OSError (one line) for a directory that is
        not ours or not a directory (a symlink included): refused, never taken over."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = os.lstat(self.directory)
        if not stat.S_ISDIR(info.st_mode):
            raise NotADirectoryError(f"{self.directory} is not a directory")
        if info.st_uid != os.geteuid():
            raise PermissionError(
                f"{self.directory} belongs to uid {info.st_uid}, not to this user "
                f"(uid {os.geteuid()}): refusing to keep machine records there"
            )
        if stat.S_IMODE(info.st_mode) != 0o700:
            self.directory.chmod(0o700)

    def path(self, machine_id: str) -> Path:
        if not ID_PATTERN.fullmatch(machine_id):
            raise ValueError(f"not a local machine id: {machine_id!r}")
        return self.directory / f"{machine_id}.json"

    def log_path(self, machine_id: str) -> Path:
        return self.path(machine_id).with_suffix(".log")

    def write(self, record: Record) -> None:
        self.ensure()
        target = self.path(record.id)
        tmp = target.with_suffix(f".tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({**asdict(record), "tags": dict(record.tags)}, f)
        tmp.replace(target)

    def read(self, machine_id: str) -> Record | None:
        try:
            with open(self.path(machine_id)) as f:
                return Record.from_json(json.load(f))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("unreadable machine record %s: %s", machine_id, e)
            return None

    def remove(self, machine_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(machine_id).unlink()

    def __iter__(self) -> Iterator[Record]:
        try:
            names = sorted(self.directory.glob("uplodr-*.json"))
        except OSError:
            return
        for file in names:
            record = self.read(file.stem) if ID_PATTERN.fullmatch(file.stem) else None
            if record is not None and record.id == file.stem:
                yield record
