"""Memory cgroups for local worker processes: one cgroup per machine, v1 or v2.

A cgroup is created with its limit set *before* the worker starts, and the worker joins it
through a tiny `/bin/sh` wrapper that writes its own pid to `cgroup.procs` and then `exec`s the
worker — so the worker is capped from its first allocation, and no `preexec_fn` (unsafe in a
threaded parent) is needed. Everything after creation (OOM check, kill, removal) works from the
cgroup's path alone, so another process holding only a registry record can do it.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

CGROUP_FS = Path("/sys/fs/cgroup")
# Exit code of the join wrapper when the pid could not be written to cgroup.procs.
JOIN_FAILED_EXIT = 125
_JOIN_SCRIPT = (
    'echo $$ > "$0" || { echo "uplodr: cannot join memory cgroup $0" >&2; exit 125; }; exec "$@"'
)


class CgroupUnavailable(Exception):
    """No writable memory cgroup hierarchy (neither v1 nor v2)."""


def _mounts() -> list[tuple[str, str, list[str]]]:
    """(mount point, fs type, options) of every mount (psutil reads /proc/self/mounts; imported
    here: it belongs to the `server` extra, and the CLI loads this module for its options)."""
    import psutil

    with contextlib.suppress(OSError):
        return [
            (part.mountpoint, part.fstype, part.opts.split(","))
            for part in psutil.disk_partitions(all=True)
        ]
    return []


def default_parent(name: str = "uplodr") -> Path | None:
    """`<memory hierarchy>/<name>`: the v1 memory controller's mount, else a cgroup2 mount that
    offers the memory controller; None when neither exists."""
    for point, fstype, options in _mounts():
        if fstype == "cgroup" and "memory" in options:
            return Path(point) / name
    for point, fstype, _ in _mounts():
        controllers = Path(point) / "cgroup.controllers"
        if fstype == "cgroup2" and controllers.exists():
            with contextlib.suppress(OSError):
                if "memory" in controllers.read_text().split():
                    return Path(point) / name
    return None


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


@dataclass(frozen=True)
class MemoryCgroups:
    """The parent cgroup under which each machine gets `<parent>/<machine id>`."""

    parent: Path
    version: Literal[1, 2]

    @classmethod
    def open(cls, parent: Path) -> MemoryCgroups:
        """Check that `parent`'s hierarchy is a usable memory cgroup and create `parent`.
        Raises CgroupUnavailable with the reason."""
        root = parent.parent
        if (root / "memory.limit_in_bytes").exists():
            version: Literal[1, 2] = 1
        elif (root / "cgroup.controllers").exists():
            version = 2
            if "memory" not in (root / "cgroup.controllers").read_text().split():
                raise CgroupUnavailable(f"{root}: the memory controller is not available")
        else:
            raise CgroupUnavailable(f"{root} is not a memory cgroup hierarchy")
        try:
            parent.mkdir(exist_ok=True)
            if version == 2:
                for level in (root, parent):
                    control = level / "cgroup.subtree_control"
                    if "memory" not in control.read_text().split():
                        _write(control, "+memory")
        except OSError as e:
            raise CgroupUnavailable(f"cannot set up memory cgroup {parent}: {e}") from e
        if not os.access(parent, os.W_OK):
            raise CgroupUnavailable(f"memory cgroup {parent} is not writable")
        return cls(parent, version)

    def create(self, name: str, limit_mb: int) -> Path:
        """Make `<parent>/<name>` limited to `limit_mb` (swap included). Raises OSError."""
        path = self.parent / name
        path.mkdir()
        limit = str(limit_mb * 1024 * 1024)
        try:
            if self.version == 1:
                _write(path / "memory.limit_in_bytes", limit)
                if (path / "memory.memsw.limit_in_bytes").exists():
                    _write(path / "memory.memsw.limit_in_bytes", limit)
            else:
                _write(path / "memory.max", limit)
                if (path / "memory.swap.max").exists():
                    _write(path / "memory.swap.max", "0")
                if (path / "memory.oom.group").exists():
                    _write(path / "memory.oom.group", "1")
        except OSError:
            with contextlib.suppress(OSError):
                path.rmdir()
            raise
        return path


def join_command(path: Path, argv: Sequence[str]) -> list[str]:
    """`argv` wrapped so that the process enters cgroup `path` before it execs."""
    return ["/bin/sh", "-c", _JOIN_SCRIPT, str(path / "cgroup.procs"), *argv]


def is_machine_cgroup(path: Path, name: str) -> bool:
    """True when `path` is a cgroup under the cgroup filesystem named `name` (a machine's
    own): what a record file names is checked before anything in it is killed or removed."""
    return path.name == name and _under_cgroup_fs(path)


def _under_cgroup_fs(path: Path) -> bool:
    # lexical, so `..` is refused rather than resolved (is_relative_to would let it through)
    return path.is_absolute() and ".." not in path.parts and path.is_relative_to(CGROUP_FS)


def _require_cgroup(path: Path) -> None:
    if not _under_cgroup_fs(path):
        raise ValueError(f"{path} is not a cgroup")


def _counter(file: Path, key: str) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in file.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    return 0


def oom_killed(path: Path) -> bool:
    """Whether the kernel's OOM killer killed a process in cgroup `path` (v1 or v2)."""
    _require_cgroup(path)
    if (path / "memory.oom_control").exists():  # v1, kernel >= 4.13 has the oom_kill counter
        return _counter(path / "memory.oom_control", "oom_kill") > 0
    return _counter(path / "memory.events", "oom_kill") > 0


def pids(path: Path) -> list[int]:
    _require_cgroup(path)
    with contextlib.suppress(OSError, ValueError):
        return [int(line) for line in (path / "cgroup.procs").read_text().split()]
    return []


def kill_all(path: Path) -> None:
    """SIGKILL every process in cgroup `path` (children that left the process group too);
    ValueError for a path outside the cgroup filesystem (never kill what a file lists)."""
    _require_cgroup(path)
    if (path / "cgroup.kill").exists():
        with contextlib.suppress(OSError):
            _write(path / "cgroup.kill", "1")
            return
    for pid in pids(path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def remove(path: Path) -> bool:
    """rmdir cgroup `path`; True when it is gone, False while processes remain in it."""
    _require_cgroup(path)
    try:
        path.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True
