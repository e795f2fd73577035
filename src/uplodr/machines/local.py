"""The local provider: each machine is a worker process on this host.

A machine is `uplodr worker --grpc-addr 127.0.0.1:<free port>` started in its own session, with
only `spec.env` over a minimal base environment, its output in a log file, and — when a memory
limit is asked for — inside its own memory cgroup. A JSON record per machine in the state
directory (`local_records`) lets any process (the reaper, `uplodr machines`) list and destroy it
by id. What this process knows beyond the record — the child process, the port it holds for
it, why it stopped — is one small `_Local` state per machine.
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
from dataclasses import dataclass
from pathlib import Path

from uplodr.errors import ProviderError, WorkerUnavailable
from uplodr.machines import cgroup
from uplodr.machines.base import (
    Capabilities,
    Machine,
    MachineSpec,
    StopReason,
    has_tags,
    marked,
)
from uplodr.machines.local_records import (
    ID_PATTERN,
    Record,
    RecordDir,
    default_state_dir,
    new_machine_id,
    process_start_time,
)
from uplodr.machines.settings import ProviderOption, ProviderSettings

log = logging.getLogger(__name__)

# Builds the worker's argv from the port it must listen on (127.0.0.1:<port>).
CommandFactory = Callable[[int], Sequence[str]]

OPTIONS: tuple[ProviderOption, ...] = ()  # --state-dir and --machine-memory are shared settings
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


def describe_exit(returncode: int) -> StopReason:
    """A child's return code as a reason (Popen: negative = the signal that killed it)."""
    if returncode < 0:
        return StopReason.killed(-returncode)
    return StopReason.exited(returncode)


@dataclass
class _Local:
    """What this process knows of one machine beyond its record."""

    port: socket.socket | None = None  # our reservation of its port, held until destroy
    process: subprocess.Popen[bytes] | None = None  # our child
    cgroup: Path | None = None
    memory_mb: int | None = None
    tags: Mapping[str, str] | None = None  # its `deadline` tells a lifetime's end from an exit
    reason: StopReason | None = None  # why our child stopped, once it has
    sigkilled: bool = False  # destroyed once already and still not gone: no second grace

    @property
    def ours(self) -> bool:
        return self.port is not None

    def release_port(self) -> None:
        if self.port is not None:
            self.port.close()
            self.port = None


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
        self.records = RecordDir(root / "machines")
        self.command = command
        self.memory_mb = memory_mb
        self.grace = grace
        self.keep_logs = keep_logs
        self.env = dict(base_env() if env is None else env)
        # Local machines share this host: one per core (each peaks near 450 MB).
        self.capabilities = Capabilities(
            shares_host_files=True, default_max_machines=os.cpu_count() or 1
        )
        self._cgroup_parent = Path(cgroup_parent) if cgroup_parent else cgroup.default_parent()
        self._cgroups: cgroup.MemoryCgroups | None = None
        self._machines: dict[str, _Local] = {}
        self._creating: set[asyncio.Task[Machine]] = set()
        self._self_start = process_start_time(os.getpid()) or 0.0
        if memory_mb is not None:
            self._memory_cgroups()  # fail at construction, not at the first job

    # -- the Provider protocol -----------------------------------------------------------

    async def create(self, spec: MachineSpec) -> Machine:
        # Spawning and recording are one step that a cancellation cannot split: a process
        # without a record could not be found by its tags (the caller looks for the machine by
        # its lease tag when its create was cancelled).
        task = asyncio.create_task(self._create(spec))
        self._creating.add(task)
        task.add_done_callback(self._creating.discard)
        return await asyncio.shield(task)

    async def wait_started(self, machine: Machine, timeout: float) -> None:
        # A local process is started once spawned; readiness is the dispatcher's Ping.
        if (reason := await self.failure(machine.id)) is not None:
            raise WorkerUnavailable(f"worker {machine.id} stopped: {reason}")
        state = self._machines.get(machine.id)
        if state is not None and state.process is not None:
            return  # ours, and failure() found it running
        record = self.records.read(machine.id)
        if record is None or not record.running():
            raise WorkerUnavailable(f"worker {machine.id} is gone")

    async def list(self, tags: Mapping[str, str]) -> list[Machine]:
        """Running machines, and stopped ones nobody will destroy (their creator is gone);
        reading only: gone records are removed by destroy (the reaper's, or their owner's)."""
        machines: list[Machine] = []
        for record in self.records:
            if not has_tags(record.tags, tags):
                continue
            if record.running():
                machines.append(_machine(record, "started"))
            elif not self._ours(record) and not record.owner_running():
                machines.append(_machine(record, "stopped"))
        return machines

    async def destroy(self, machine_id: str) -> None:
        if not ID_PATTERN.fullmatch(machine_id):
            raise ProviderError(f"not a local machine id: {machine_id!r}")
        state = self._machines.get(machine_id)
        record = self.records.read(machine_id)
        process = state.process if state is not None else None
        pid = process.pid if process is not None else record.pid if record is not None else None

        def alive() -> bool:
            if process is not None:
                return process.poll() is None
            return record is not None and record.running()

        if pid is not None and alive():
            # Never signal a pid whose start time does not match: it is someone else now.
            if state is None or not state.sigkilled:  # a retry needs no second grace
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGTERM)
                await wait_exit(pid, alive, self.grace)
            # Whatever is left of its process group (the leader may be gone, the group stays).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        cgroup_path = self._cgroup_of(machine_id, state, record)
        if cgroup_path is not None:
            cgroup.kill_all(cgroup_path)
        # SIGKILL is delivered asynchronously and a large process takes a moment to tear down;
        # destroy returns only once it has exited, also when it is not our child (a reaper
        # destroying another gateway's orphan), and collects its exit status when it is.
        if pid is not None and not await wait_exit(pid, alive, 5.0):
            # Keep its record so that a retry, or the reaper, can still find it.
            self._machines.setdefault(machine_id, _Local()).sigkilled = True
            raise WorkerUnavailable(f"worker {machine_id} did not exit after SIGKILL")
        if state is not None:
            state.release_port()
            del self._machines[machine_id]
        await self._remove_cgroup(cgroup_path)
        self._drop_files(machine_id, record)
        log.info("destroyed local worker %s", machine_id)

    async def stop(self, machine_id: str) -> None:
        raise ProviderError("local machines cannot be stopped and started again")

    async def start(self, machine_id: str) -> Machine:
        raise ProviderError("local machines cannot be stopped and started again")

    async def failure(self, machine_id: str) -> StopReason | None:
        state = self._machines.get(machine_id)
        if state is not None and state.process is not None:
            return self._collect_exit(machine_id, state)
        if not ID_PATTERN.fullmatch(machine_id):
            return None
        record = self.records.read(machine_id)
        if record is None or record.running():
            return None
        # Another process's worker that is gone: only the cgroup can still tell why.
        return _oom_reason(record.memory_mb, self._cgroup_of(machine_id, None, record))

    async def check(self) -> None:
        """The state dir takes records, and a memory limit has its cgroup parent."""
        try:
            self.records.ensure()
            probe = self.records.directory / f".check-{os.getpid()}"
            probe.write_text("uplodr")
            probe.unlink()
        except OSError as e:
            raise ProviderError(
                f"state dir {self.records.directory} is not writable: {e.strerror or e}"
            ) from None
        if self.memory_mb is not None:
            self._memory_cgroups()

    async def aclose(self) -> None:
        """Destroy the machines this provider created and nobody destroyed yet, running or
        crashed (nothing is left running, no record or cgroup left, when the gateway stops)."""
        if self._creating:
            await asyncio.gather(*self._creating, return_exceptions=True)
        for machine_id in sorted(m for m, state in self._machines.items() if state.ours):
            try:
                await self.destroy(machine_id)
            except WorkerUnavailable as error:  # the others still go; the reaper finds this one
                log.error("could not destroy local worker %s: %s", machine_id, error)
        for state in self._machines.values():
            state.release_port()

    # -- extras ----------------------------------------------------------------------------

    def log_path(self, machine_id: str) -> Path:
        """Where the worker's stdout and stderr go (kept after destroy with `keep_logs`)."""
        return self.records.log_path(machine_id)

    # -- internals -------------------------------------------------------------------------

    async def _create(self, spec: MachineSpec) -> Machine:
        machine_id = new_machine_id()
        try:
            state = _Local(port=reserve_port())
        except OSError as e:
            raise WorkerUnavailable(f"cannot find a free local port: {e}") from e
        self._machines[machine_id] = state
        try:
            return await self._spawn(machine_id, state, spec)
        except BaseException:
            if state.process is None:  # else the machine exists: destroy releases it
                state.release_port()
                self._machines.pop(machine_id, None)
            raise

    async def _spawn(self, machine_id: str, state: _Local, spec: MachineSpec) -> Machine:
        memory_mb = spec.memory_mb if spec.memory_mb is not None else self.memory_mb
        if memory_mb is not None and memory_mb <= 0:
            raise ProviderError(f"memory limit must be positive, not {memory_mb} MB")
        if spec.cpus is not None:
            raise ProviderError("the local provider cannot limit a machine's CPUs")
        assert state.port is not None
        state.tags = marked(spec.tags)
        port = int(state.port.getsockname()[1])
        argv = list(self.command(port))
        if memory_mb is not None:
            state.memory_mb = memory_mb
            try:
                state.cgroup = self._memory_cgroups().create(machine_id, memory_mb)
            except OSError as e:
                raise WorkerUnavailable(f"cannot create a memory cgroup: {e}") from e
            argv = cgroup.join_command(state.cgroup, argv)
        try:
            state.process = await self._popen(machine_id, argv, spec.env)
        except OSError as e:
            await self._remove_cgroup(state.cgroup)
            self._drop_files(machine_id, None)
            raise WorkerUnavailable(f"cannot start a local worker: {e}") from e
        record = Record(
            id=machine_id,
            pid=state.process.pid,
            # Our child, not yet waited for, cannot vanish: its start time is read without a race.
            start_time=process_start_time(state.process.pid) or 0.0,
            port=port,
            address=f"127.0.0.1:{port}",
            created_at=time.time(),
            tags=marked(spec.tags),
            memory_mb=memory_mb,
            cgroup=None if state.cgroup is None else str(state.cgroup),
            log=str(self.records.log_path(machine_id)),
            owner_pid=os.getpid(),
            owner_start_time=self._self_start,
        )
        try:
            self.records.write(record)
        except OSError as e:
            await self.destroy(machine_id)
            raise WorkerUnavailable(f"cannot record local machine: {e}") from e
        log.info("started local worker %s (pid %d) on %s", machine_id, record.pid, record.address)
        return _machine(record, "started")

    async def _popen(
        self, machine_id: str, argv: Sequence[str], env: Mapping[str, str]
    ) -> subprocess.Popen[bytes]:
        self.records.ensure()
        log_fd = os.open(
            self.records.log_path(machine_id), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
        )
        try:
            return await asyncio.to_thread(
                subprocess.Popen,
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=subprocess.STDOUT,
                env={**self.env, **env},
                start_new_session=True,
                close_fds=True,
            )
        finally:
            os.close(log_fd)

    def _collect_exit(self, machine_id: str, state: _Local) -> StopReason | None:
        """Why our child stopped (None while it runs); its exit status is collected (no
        zombie) and the reason remembered while its cgroup can still tell."""
        assert state.process is not None
        returncode = state.process.poll()
        if returncode is None or state.reason is not None:
            return state.reason
        reason = describe_exit(returncode).at_deadline(state.tags or {}, time.time())
        if state.cgroup is not None:
            if returncode == cgroup.JOIN_FAILED_EXIT:
                reason = StopReason.exited(returncode, "could not join its memory cgroup")
            reason = _oom_reason(state.memory_mb, state.cgroup) or reason
        state.reason = reason
        log.warning("local worker %s stopped: %s", machine_id, reason)
        return reason

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

    def _ours(self, record: Record) -> bool:
        return record.owner_pid == os.getpid() and record.owner_start_time == self._self_start

    def _cgroup_of(
        self, machine_id: str, state: _Local | None, record: Record | None
    ) -> Path | None:
        if state is not None and state.cgroup is not None:
            return state.cgroup
        if record is not None:
            return self._recorded_cgroup(machine_id, record)
        # No record (e.g. writing it failed): the cgroup has a predictable name.
        if self._cgroups is not None and (self._cgroups.parent / machine_id).is_dir():
            return self._cgroups.parent / machine_id
        return None

    def _recorded_cgroup(self, machine_id: str, record: Record) -> Path | None:
        """The cgroup a record names, only if it is this machine's own: a record is a file
        anyone who can write the state dir can edit, and every process in the cgroup it names
        is killed on destroy (the reaper reads records of machines it did not make)."""
        if not record.cgroup:
            return None
        path = Path(record.cgroup)
        if not cgroup.is_machine_cgroup(path, machine_id):
            log.warning(
                "machine record %s names %s, not a cgroup of its own; ignoring it",
                machine_id,
                path,
            )
            return None
        return path

    async def _remove_cgroup(self, path: Path | None) -> None:
        if path is None:
            return
        for _ in range(int(2.0 / _POLL)):
            if cgroup.remove(path):
                return
            cgroup.kill_all(path)
            await asyncio.sleep(_POLL)
        log.warning("memory cgroup %s still busy; left in place", path)

    def _drop_files(self, machine_id: str, record: Record | None) -> None:
        """Remove the machine's record, and its log unless logs are kept."""
        self.records.remove(machine_id)
        log_path = Path(record.log) if record and record.log else self.log_path(machine_id)
        if not self.keep_logs and log_path.parent == self.records.directory:
            with contextlib.suppress(FileNotFoundError):
                log_path.unlink()


def from_settings(settings: ProviderSettings) -> LocalProvider:
    """The local provider of `uplodr serve/reap/machines`: records in `settings.state_dir`."""
    if settings.cpus is not None:
        raise ProviderError(
            "--machine-cpus: local machines share this host's cores; the local provider "
            "cannot limit them"
        )
    return LocalProvider(settings.state_dir, memory_mb=settings.memory_mb)


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
        alive()  # collects its exit status when it is our child
        return True
    finally:
        os.close(fd)


def _oom_reason(memory_mb: int | None, cgroup_path: Path | None) -> StopReason | None:
    if cgroup_path is not None and cgroup.oom_killed(cgroup_path):
        return StopReason.out_of_memory(memory_mb)
    return None


def _machine(record: Record, state: str) -> Machine:
    return Machine(
        id=record.id,
        address=record.address,
        tags=dict(record.tags),
        created_at=record.created_at,
        state=state,
    )
