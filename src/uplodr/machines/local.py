"""The local provider: each machine is a worker process on this host.

A machine is `uplodr worker --grpc-addr 127.0.0.1:<free port>` started in its own session, with
only `spec.env` over a minimal base environment, its output in a log file, and — when a memory
limit is asked for — inside its own memory cgroup. A JSON record per machine in the state
directory lets any process (the reaper, `uplodr machines`) list and destroy it by id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from uplodr.errors import ProviderError, WorkerUnavailable
from uplodr.machines import cgroup
from uplodr.machines.base import MARKER_TAG, MARKER_VALUE, Machine, MachineSpec
from uplodr.machines.registry import (
    ID_PATTERN,
    Record,
    Registry,
    default_state_dir,
    is_running,
    new_machine_id,
    process_start_time,
)

log = logging.getLogger(__name__)

# Builds the worker's argv from the port it must listen on (127.0.0.1:<port>).
CommandFactory = Callable[[int], Sequence[str]]

_POLL = 0.05  # seconds between checks while waiting for a process to exit


def worker_command(port: int) -> list[str]:
    """The real worker: `python -m uplodr worker --grpc-addr 127.0.0.1:<port>`."""
    return [sys.executable, "-m", "uplodr", "worker", "--grpc-addr", f"127.0.0.1:{port}"]


def base_env() -> dict[str, str]:
    """The minimal environment every worker gets; nothing else of ours leaks (no secrets)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "MALLOC_ARENA_MAX": "2",
        "PYTHONUNBUFFERED": "1",  # so the log file explains a crash up to its last line
    }


def reserve_port() -> socket.socket:
    """A free loopback port, held by a bound socket that never listens.

    Both it and gRPC set SO_REUSEADDR, so the worker can bind and listen on the port while this
    socket holds it, but the kernel never hands it out to another `bind(port 0)`: another
    machine created at the same moment cannot get the same port between our choice and the
    worker's bind. The holder keeps it until the machine is destroyed."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))
    except OSError:
        holder.close()
        raise
    return holder


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


class LocalProvider:
    """Worker processes on this host, found by id from any process through the state dir.

    - `state_dir`: the uplodr state directory; records and logs live in `<state_dir>/machines`.
      Default `$UPLODR_STATE_DIR`, else `$XDG_STATE_HOME/uplodr`, else `~/.local/state/uplodr`.
    - `command`: the worker's argv for a port (default `worker_command`).
    - `memory_mb`: the memory limit when a spec gives none (None: unlimited).
    - `grace`: seconds between SIGTERM and SIGKILL on destroy.
    - `keep_logs`: keep `<id>.log` after destroy (for debugging crashes).
    - `cgroup_parent`: where per-machine memory cgroups are made (default `uplodr` under the
      memory hierarchy, e.g. /sys/fs/cgroup/memory/uplodr).
    - `env`: the base environment under `spec.env` (default `base_env()`).
    """

    name = "local"

    def __init__(
        self,
        state_dir: Path | str | None = None,
        *,
        command: CommandFactory = worker_command,
        memory_mb: int | None = None,
        grace: float = 5.0,
        keep_logs: bool = False,
        cgroup_parent: Path | str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        root = Path(state_dir) if state_dir is not None else default_state_dir()
        self.registry = Registry(root / "machines")
        self.command = command
        self.memory_mb = memory_mb
        self.grace = grace
        self.keep_logs = keep_logs
        self.env = dict(base_env() if env is None else env)
        self._cgroup_parent = Path(cgroup_parent) if cgroup_parent else cgroup.default_parent()
        self._cgroups: cgroup.MemoryCgroups | None = None
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._reasons: dict[str, str] = {}  # why our exited children stopped
        self._created: set[str] = set()  # ours and not destroyed yet (running or not)
        self._creating: set[asyncio.Task[Machine]] = set()  # creates still running
        self._ports: dict[str, socket.socket] = {}  # port reservations of our machines
        self._sigkilled: set[str] = set()  # destroyed once already, and still not gone
        self._self_start = process_start_time(os.getpid()) or 0
        if memory_mb is not None:
            self._memory_cgroups()  # fail at construction, not at the first job

    # -- the Provider protocol -----------------------------------------------------------

    async def create(self, spec: MachineSpec) -> Machine:
        # Spawning and recording are one step that a cancellation cannot split: a process
        # without a record could not be found by its tags (the caller looks for the machine by
        # its job tag when its create was cancelled).
        task = asyncio.create_task(self._create(spec))
        self._creating.add(task)
        task.add_done_callback(self._creating.discard)
        return await asyncio.shield(task)

    async def _create(self, spec: MachineSpec) -> Machine:
        machine_id = new_machine_id()
        try:
            self._ports[machine_id] = reserve_port()
        except OSError as e:
            raise WorkerUnavailable(f"cannot find a free local port: {e}") from e
        try:
            return await self._spawn(machine_id, spec)
        except BaseException:
            if machine_id not in self._created:  # else destroy releases it
                self._release_port(machine_id)
            raise

    async def _spawn(self, machine_id: str, spec: MachineSpec) -> Machine:
        memory_mb = spec.memory_mb if spec.memory_mb is not None else self.memory_mb
        if memory_mb is not None and memory_mb <= 0:
            raise ProviderError(f"memory limit must be positive, not {memory_mb} MB")
        port = int(self._ports[machine_id].getsockname()[1])
        address = f"127.0.0.1:{port}"
        argv = list(self.command(port))
        cgroup_path: Path | None = None
        if memory_mb is not None:
            try:
                cgroup_path = self._memory_cgroups().create(machine_id, memory_mb)
            except OSError as e:
                raise WorkerUnavailable(f"cannot create a memory cgroup: {e}") from e
            argv = cgroup.join_command(cgroup_path, argv)
        self.registry.ensure()
        log_path = self.registry.log_path(machine_id)
        try:
            log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                proc = await asyncio.to_thread(
                    subprocess.Popen,
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log_fd,
                    stderr=subprocess.STDOUT,
                    env={**self.env, **spec.env},
                    start_new_session=True,
                    close_fds=True,
                )
            finally:
                os.close(log_fd)
        except OSError as e:
            self._drop_files(machine_id, cgroup_path, log_path)
            raise WorkerUnavailable(f"cannot start a local worker: {e}") from e
        # Our unreaped child cannot vanish, so its start time is read without a race.
        start_time = process_start_time(proc.pid) or 0
        record = Record(
            id=machine_id,
            pid=proc.pid,
            start_time=start_time,
            port=port,
            address=address,
            created_at=time.time(),
            tags=dict(spec.tags),
            memory_mb=memory_mb,
            cgroup=None if cgroup_path is None else str(cgroup_path),
            log=str(log_path),
            owner_pid=os.getpid(),
            owner_start_time=self._self_start,
        )
        self._children[machine_id] = proc
        self._created.add(machine_id)
        try:
            self.registry.write(record)
        except OSError as e:
            await self.destroy(machine_id)
            raise WorkerUnavailable(f"cannot record local machine: {e}") from e
        log.info("started local worker %s (pid %d) on %s", machine_id, proc.pid, address)
        return _machine(record)

    async def wait_started(self, machine: Machine, timeout: float) -> None:
        # A local process is started once spawned; readiness is the dispatcher's Ping.
        if (reason := await self.failure(machine.id)) is not None:
            raise WorkerUnavailable(f"worker {machine.id} {reason}")
        record = self.registry.read(machine.id)
        if machine.id not in self._children and (record is None or not record.running()):
            raise WorkerUnavailable(f"worker {machine.id} is gone")

    async def list(self, tags: Mapping[str, str]) -> list[Machine]:
        self._reap()
        machines: list[Machine] = []
        for record in self.registry:
            if not record.running():
                # Gone: clean it up, unless a live creator may still ask failure() of it.
                if self._ours(record) or not record.owner_running():
                    self._settle(record.id, record)
                    self._cleanup(record)
                continue
            if _matches(record.tags, tags):
                machines.append(_machine(record))
        return machines

    async def destroy(self, machine_id: str) -> None:
        if not ID_PATTERN.fullmatch(machine_id):
            raise ProviderError(f"not a local machine id: {machine_id!r}")
        record = self.registry.read(machine_id)
        proc = self._children.get(machine_id)
        pid = proc.pid if proc is not None else record.pid if record is not None else None

        def alive() -> bool:
            return self._alive(machine_id, record)

        if pid is not None and alive():
            # Never signal a pid whose start time does not match: it is someone else now.
            if machine_id not in self._sigkilled:  # a retry needs no second grace
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGTERM)
                await wait_exit(pid, alive, self.grace)
            # Whatever is left of its process group (the leader may be gone, the group stays).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        cgroup_path = self._cgroup_of(machine_id, record)
        if cgroup_path is not None:
            cgroup.kill_all(cgroup_path)
        # SIGKILL is delivered asynchronously and a large process takes a moment to tear down;
        # destroy returns only once it has exited, also when it is not our child (a reaper
        # destroying another gateway's orphan), and reaps it when it is.
        if pid is not None and not await wait_exit(pid, alive, 5.0):
            # Keep its record so that a retry, or the reaper, can still find it.
            self._sigkilled.add(machine_id)
            raise WorkerUnavailable(f"worker {machine_id} did not exit after SIGKILL")
        self._sigkilled.discard(machine_id)
        self._children.pop(machine_id, None)
        self._reasons.pop(machine_id, None)
        self._created.discard(machine_id)
        self._release_port(machine_id)
        await self._remove_cgroup(cgroup_path)
        if record is not None:
            self._cleanup(record, cgroup_removed=True)
        else:
            self._drop_files(machine_id, None, self.registry.log_path(machine_id))
        log.info("destroyed local worker %s", machine_id)

    async def failure(self, machine_id: str) -> str | None:
        self._reap()
        if (reason := self._reasons.get(machine_id)) is not None:
            return reason
        if machine_id in self._children:
            return None  # ours and still running
        if not ID_PATTERN.fullmatch(machine_id):
            return None
        record = self.registry.read(machine_id)
        if record is None or record.running():
            return None
        # Another process's worker that is gone: only the cgroup can still tell why.
        return _oom_reason(record) if record.cgroup else None

    async def aclose(self) -> None:
        """Destroy the machines this provider created and nobody destroyed yet, running or
        crashed (nothing is left running, no record or cgroup left, when the gateway stops)."""
        if self._creating:
            await asyncio.gather(*self._creating, return_exceptions=True)
        for machine_id in sorted(self._created):
            try:
                await self.destroy(machine_id)
            except WorkerUnavailable as error:  # the others still go; the reaper finds this one
                log.error("could not destroy local worker %s: %s", machine_id, error)
        for machine_id in list(self._ports):
            self._release_port(machine_id)

    # -- extras ----------------------------------------------------------------------------

    def log_path(self, machine_id: str) -> Path:
        """Where the worker's stdout and stderr go (kept after destroy with `keep_logs`)."""
        return self.registry.log_path(machine_id)

    # -- internals -------------------------------------------------------------------------

    def _memory_cgroups(self) -> cgroup.MemoryCgroups:
        if self._cgroups is None:
            if self._cgroup_parent is None:
                raise ProviderError(
                    "a memory limit needs a memory cgroup, and this host has none "
                    "(no cgroup v1 memory controller, no cgroup v2 with memory)"
                )
            try:
                self._cgroups = cgroup.MemoryCgroups.open(self._cgroup_parent)
            except (cgroup.CgroupUnavailable, OSError) as e:
                raise ProviderError(f"a memory limit needs a memory cgroup: {e}") from e
        return self._cgroups

    def _release_port(self, machine_id: str) -> None:
        holder = self._ports.pop(machine_id, None)
        if holder is not None:
            holder.close()

    def _ours(self, record: Record) -> bool:
        return record.owner_pid == os.getpid() and record.owner_start_time == self._self_start

    def _cgroup_of(self, machine_id: str, record: Record | None) -> Path | None:
        if record is not None:
            return Path(record.cgroup) if record.cgroup else None
        # No record (e.g. writing it failed): the cgroup has a predictable name.
        if self._cgroups is not None and (self._cgroups.parent / machine_id).is_dir():
            return self._cgroups.parent / machine_id
        return None

    def _alive(self, machine_id: str, record: Record | None) -> bool:
        proc = self._children.get(machine_id)
        if proc is not None:
            return proc.poll() is None
        return record is not None and is_running(record.pid, record.start_time)

    def _reap(self) -> None:
        """Collect the exit status of our children that have stopped (no zombies)."""
        for machine_id, proc in list(self._children.items()):
            if proc.poll() is not None:
                self._settle(machine_id, self.registry.read(machine_id))

    def _settle(self, machine_id: str, record: Record | None) -> None:
        """Remember why our exited child stopped, while its cgroup can still tell."""
        proc = self._children.pop(machine_id, None)
        if proc is None or proc.returncode is None or machine_id in self._reasons:
            return
        reason = describe_exit(proc.returncode)
        if record is not None and record.cgroup:
            reason = _oom_reason(record) or reason
        if proc.returncode == cgroup.JOIN_FAILED_EXIT and record is not None and record.cgroup:
            reason += " (could not join its memory cgroup)"
        self._reasons[machine_id] = reason
        log.warning("local worker %s stopped: %s", machine_id, reason)

    async def _remove_cgroup(self, path: Path | None) -> None:
        if path is None:
            return
        for _ in range(int(2.0 / _POLL)):
            if cgroup.remove(path):
                return
            cgroup.kill_all(path)
            await asyncio.sleep(_POLL)
        log.warning("memory cgroup %s still busy; left in place", path)

    def _cleanup(self, record: Record, *, cgroup_removed: bool = False) -> None:
        cgroup_path = Path(record.cgroup) if record.cgroup and not cgroup_removed else None
        log_path = Path(record.log) if record.log else self.registry.log_path(record.id)
        self._drop_files(record.id, cgroup_path, log_path)

    def _drop_files(self, machine_id: str, cgroup_path: Path | None, log_path: Path) -> None:
        self.registry.remove(machine_id)
        if not self.keep_logs and log_path.parent == self.registry.directory:
            with contextlib.suppress(FileNotFoundError):
                log_path.unlink()
        if cgroup_path is not None:
            with contextlib.suppress(ValueError):
                cgroup.remove(cgroup_path)


async def wait_exit(pid: int, alive: Callable[[], bool], timeout: float) -> bool:
    """Wait up to `timeout` s for process `pid` to exit, without blocking the loop; True when
    it has. `alive()` tells whether it still runs (and that `pid` is still the same process)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except OSError:  # no pidfd (old kernel): poll
        for _ in range(int(timeout / _POLL) + 1):
            if not alive():
                return True
            await asyncio.sleep(_POLL)
        return not alive()
    try:
        if not alive():  # checked after opening: the fd is the process we checked
            return True
        loop = asyncio.get_running_loop()
        exited = asyncio.Event()
        loop.add_reader(fd, exited.set)  # a pidfd becomes readable when its process exits
        try:
            await asyncio.wait_for(exited.wait(), timeout)
        except TimeoutError:
            return not alive()
        finally:
            loop.remove_reader(fd)
        alive()  # reaps it when it is our child
        return True
    finally:
        os.close(fd)


def _matches(have: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    """All of `wanted`, and always the uplodr marker (asking for another value cannot widen)."""
    if have.get(MARKER_TAG) != MARKER_VALUE:
        return False
    return all(have.get(k) == v for k, v in wanted.items())


def _oom_reason(record: Record) -> str | None:
    if record.cgroup and cgroup.oom_killed(Path(record.cgroup)):
        return f"out of memory ({record.memory_mb} MB limit)"
    return None


def _machine(record: Record) -> Machine:
    return Machine(
        id=record.id,
        address=record.address,
        tags=dict(record.tags),
        created_at=record.created_at,
        state="started",
    )
