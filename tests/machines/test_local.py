"""The local provider against real processes: no mocks, a real memory cgroup, a second process."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil
import pytest

from uplodr.errors import ProviderError, WorkerUnavailable
from uplodr.machines import cgroup
from uplodr.machines.base import (
    MARKER_TAG,
    MARKER_VALUE,
    Machine,
    MachineSpec,
    StopKind,
    StopReason,
)
from uplodr.machines.local import LocalProvider, base_env, worker_command
from uplodr.machines.local_records import Record, RecordDir, process_start_time

pytestmark = pytest.mark.usefixtures("no_leftover_processes")

MARKED = {MARKER_TAG: MARKER_VALUE}

# Stand-in workers: Python one-liners that get the port as their last argument.
LISTEN = (
    "import socket, sys, time\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); time.sleep(600)"
)
SLEEP = "import time; time.sleep(600)"
SUICIDE = "import os, time; time.sleep(0.3); os.kill(os.getpid(), 9)"
EXIT_3 = (
    "import sys, time; time.sleep(0.3); print('boom: bad config', file=sys.stderr); sys.exit(3)"
)
IGNORE_TERM = (
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "print('ready', flush=True); time.sleep(600)"
)
HOG_1GB = (
    "import time\n"
    "chunks = []\n"
    "for _ in range(1024):\n"
    "    chunks.append(bytearray(b'x' * (1 << 20)))  # 1 MiB, every page written\n"
    "time.sleep(600)"
)


def standin(code: str) -> Callable[[int], list[str]]:
    return lambda port: [sys.executable, "-c", code, str(port)]


def pid_of(provider: LocalProvider, machine: Machine) -> int:
    record = provider.records.read(machine.id)
    assert record is not None
    return record.pid


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def eventually(check: Callable[[], Awaitable[object]], timeout: float = 15.0) -> object:
    deadline = time.monotonic() + timeout
    while not (result := await check()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
    return result


def can_connect(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


OTHER_PROCESS = """
import asyncio, json, sys
from uplodr.machines.local import LocalProvider

async def main() -> None:
    provider = LocalProvider(sys.argv[1], grace=1.0)
    if sys.argv[2] == "list":
        print(json.dumps([m.id for m in await provider.list({})]))
    else:
        await provider.destroy(sys.argv[3])
        print("[]")
    await provider.aclose()

asyncio.run(main())
"""


async def other_process(state_dir: Path, *args: str) -> list[str]:
    """Run list/destroy with a fresh LocalProvider in a separate Python process."""
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", OTHER_PROCESS, str(state_dir), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    result: list[str] = json.loads(done.stdout)
    return result


def spec(mark_env: dict[str, str], tags: dict[str, str] | None = None, **kw: object) -> MachineSpec:
    memory_mb = kw.pop("memory_mb", None)
    env = {**mark_env, **{k: str(v) for k, v in kw.items()}}
    assert memory_mb is None or isinstance(memory_mb, int)
    return MachineSpec(env=env, tags=MARKED if tags is None else tags, memory_mb=memory_mb)


async def create_ready(provider: LocalProvider, mark_env: dict[str, str]) -> Machine:
    """Create a stand-in machine and wait until it has printed "ready"."""
    machine = await provider.create(spec(mark_env))
    log = provider.log_path(machine.id)
    await eventually(lambda: asyncio.to_thread(lambda: "ready" in log.read_text()), 30)
    return machine


async def test_create_list_destroy_from_another_process(
    state_dir: Path, mark_env: dict[str, str]
) -> None:
    provider = LocalProvider(state_dir, command=standin(LISTEN), grace=1.0)
    machine = await provider.create(spec(mark_env, {**MARKED, "job": "j1"}))
    assert machine.id.startswith("uplodr-") and machine.address.startswith("127.0.0.1:")
    await provider.wait_started(machine, timeout=5)
    pid = pid_of(provider, machine)
    await eventually(lambda: asyncio.to_thread(can_connect, machine.address))

    listed = await provider.list({"job": "j1"})
    assert [m.id for m in listed] == [machine.id]
    assert listed[0].address == machine.address and listed[0].state == "started"
    assert await other_process(state_dir, "list") == [machine.id]

    await other_process(state_dir, "destroy", machine.id)
    assert not alive(pid)
    assert await provider.list({}) == []
    assert await other_process(state_dir, "list") == []
    await provider.destroy(machine.id)  # idempotent, here too
    await provider.aclose()


def port_is_free(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket() as trial:
        try:
            trial.bind((host, int(port)))
        except OSError:
            return False
        return True


async def test_a_machines_port_is_held_for_it_until_destroy(
    state_dir: Path, mark_env: dict[str, str]
) -> None:
    """No one else can bind the port between its choice and the worker's bind (two machines
    created at once never share one); the worker itself binds it fine."""
    provider = LocalProvider(state_dir, command=standin(SLEEP), grace=1.0)
    machines = await asyncio.gather(*(provider.create(spec(mark_env)) for _ in range(4)))
    assert len({m.address for m in machines}) == 4
    assert not any(port_is_free(m.address) for m in machines)  # the sleeper never binds it
    listener = LocalProvider(state_dir, command=standin(LISTEN), grace=1.0)
    listening = await listener.create(spec(mark_env))
    await eventually(lambda: asyncio.to_thread(can_connect, listening.address))
    for machine in machines:
        await provider.destroy(machine.id)
    assert all(port_is_free(m.address) for m in machines)
    await listener.aclose()


async def test_destroy_is_idempotent_and_checks_ids(
    state_dir: Path, mark_env: dict[str, str]
) -> None:
    provider = LocalProvider(state_dir, command=standin(SLEEP), grace=1.0)
    machine = await provider.create(spec(mark_env))
    pid = pid_of(provider, machine)
    await provider.destroy(machine.id)
    assert not alive(pid)
    await provider.destroy(machine.id)
    await provider.destroy("uplodr-000000000000")  # never existed
    with pytest.raises(ProviderError):
        await provider.destroy("../../etc/passwd")
    assert await provider.failure(machine.id) is None
    with pytest.raises(WorkerUnavailable, match="gone"):
        await provider.wait_started(machine, timeout=1)
    await provider.aclose()


async def test_worker_env_is_spec_env_over_a_minimal_base(
    state_dir: Path, mark_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UPLODR_GATEWAY_SECRET", "hunter2")
    provider = LocalProvider(state_dir, command=standin(SLEEP))
    machine = await provider.create(spec(mark_env, UPLODR_STORE="s3://bucket", LANG="de_DE"))
    process = psutil.Process(pid_of(provider, machine))
    # Popen returns once exec began; the kernel shows the new environment a moment later
    env = await eventually(lambda: asyncio.to_thread(process.environ))
    assert isinstance(env, dict)
    assert "UPLODR_GATEWAY_SECRET" not in env
    assert env["UPLODR_STORE"] == "s3://bucket"
    assert env["LANG"] == "de_DE"  # spec.env wins over the base
    assert env["MALLOC_ARENA_MAX"] == "2"
    assert set(env) == set(base_env()) | set(mark_env) | {"UPLODR_STORE"}
    await provider.aclose()


async def test_tags_filter_and_the_marker_is_required(
    state_dir: Path, mark_env: dict[str, str]
) -> None:
    provider = LocalProvider(state_dir, command=standin(SLEEP), grace=1.0)
    a = await provider.create(spec(mark_env, {**MARKED, "pool": "a"}))
    b = await provider.create(spec(mark_env, {"pool": "b"}))  # create adds the marker
    assert b.tags == {**MARKED, "pool": "b"}
    assert {m.id for m in await provider.list({})} == {a.id, b.id}
    assert [m.id for m in await provider.list({"pool": "a"})] == [a.id]
    assert [m.id for m in await provider.list({"pool": "c"})] == []
    # Asking for another marker value does not widen the search either.
    assert await provider.list({MARKER_TAG: "other"}) == []
    assert await other_process(state_dir, "list") == sorted([a.id, b.id])
    await provider.aclose()  # destroys what it started
    assert await provider.list({}) == []


async def test_process_that_dies_is_reported_and_cleaned(
    state_dir: Path, mark_env: dict[str, str]
) -> None:
    provider = LocalProvider(state_dir, command=standin(SUICIDE))
    machine = await provider.create(spec(mark_env))
    assert await provider.failure(machine.id) is None  # still running
    reason = await eventually(lambda: provider.failure(machine.id))
    assert reason == StopReason.killed(9)
    # Not listed (its creator, alive, destroys it), and listing changes nothing.
    assert await provider.list({}) == []
    assert provider.records.read(machine.id) is not None
    assert await provider.failure(machine.id) == StopReason.killed(9)  # still known
    with pytest.raises(WorkerUnavailable, match="killed by signal 9"):
        await provider.wait_started(machine, timeout=1)
    # Another process sees a dead machine whose creator lives: not its to reap either.
    assert await other_process(state_dir, "list") == []
    await provider.destroy(machine.id)  # cleaned by destroy
    assert provider.records.read(machine.id) is None
    await provider.destroy(machine.id)


async def test_exit_code_and_log_file(state_dir: Path, mark_env: dict[str, str]) -> None:
    provider = LocalProvider(state_dir, command=standin(EXIT_3))
    machine = await provider.create(spec(mark_env))
    log = provider.log_path(machine.id)
    await eventually(lambda: provider.failure(machine.id))
    assert await provider.failure(machine.id) == StopReason.exited(3)
    with pytest.raises(WorkerUnavailable, match="exited with code 3"):
        await provider.wait_started(machine, timeout=1)
    assert "boom: bad config" in log.read_text()
    assert log.stat().st_mode & 0o077 == 0  # logs may hold secrets: owner only
    await provider.destroy(machine.id)
    assert not log.exists()

    keeping = LocalProvider(state_dir, command=standin(EXIT_3), keep_logs=True)
    machine = await keeping.create(spec(mark_env))
    await eventually(lambda: keeping.failure(machine.id))
    await keeping.destroy(machine.id)
    assert "boom" in keeping.log_path(machine.id).read_text()
    keeping.log_path(machine.id).unlink()


async def test_a_clean_exit_past_the_machines_deadline_is_its_lifetimes_end(
    state_dir: Path, mark_env: dict[str, str]
) -> None:
    """The worker ends itself (exit 0) at its maximum lifetime, the span of its `deadline`
    tag: a typed DEADLINE, not an exit, so nobody mistakes it for a crash or the input's."""
    provider = LocalProvider(state_dir, command=standin("import sys; sys.exit(0)"))
    past = {**MARKED, "deadline": str(int(time.time()) - 1)}
    future = {**MARKED, "deadline": str(int(time.time()) + 600)}
    ended = await provider.create(spec(mark_env, past))
    exited = await provider.create(spec(mark_env, future))
    reason = await eventually(lambda: provider.failure(ended.id))
    assert isinstance(reason, StopReason) and reason.kind is StopKind.DEADLINE
    assert not reason.crashed and str(reason) == "it reached the end of its lifetime"
    assert await eventually(lambda: provider.failure(exited.id)) == StopReason.exited(0)
    await provider.aclose()


async def test_sigterm_ignored_then_sigkill_whole_group(
    state_dir: Path, mark_env: dict[str, str]
) -> None:
    provider = LocalProvider(state_dir, command=standin(IGNORE_TERM), grace=0.5)
    machine = await create_ready(provider, mark_env)
    pid = pid_of(provider, machine)
    grandchildren = psutil.Process(pid).children()
    assert len(grandchildren) == 1
    started = time.monotonic()
    await provider.destroy(machine.id)
    assert 0.4 < time.monotonic() - started < 4
    assert not alive(pid)
    await eventually(lambda: asyncio.sleep(0, not alive(grandchildren[0].pid)), timeout=3)
    await provider.aclose()


# Ignores SIGTERM and holds 1 GiB of written pages, so that dying after SIGKILL takes a moment.
BIG_IGNORE_TERM = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "chunks = [bytearray(b'x' * (1 << 20)) for _ in range(1024)]\n"
    "print('ready', flush=True); time.sleep(600)"
)


async def test_destroy_from_another_process_returns_only_once_the_process_is_gone(
    state_dir: Path, mark_env: dict[str, str]
) -> None:
    # The reaper's case: the machine is not the destroyer's child, and it ignores SIGTERM.
    provider = LocalProvider(state_dir, command=standin(BIG_IGNORE_TERM), grace=1.0)
    machine = await create_ready(provider, mark_env)
    pid = pid_of(provider, machine)
    await other_process(state_dir, "destroy", machine.id)
    assert not alive(pid)
    await provider.aclose()


async def test_destroy_does_not_block_the_event_loop(
    state_dir: Path, mark_env: dict[str, str]
) -> None:
    provider = LocalProvider(state_dir, command=standin(IGNORE_TERM), grace=1.0)
    machine = await create_ready(provider, mark_env)
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.05)

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    await provider.destroy(machine.id)
    ended = time.monotonic()
    task.cancel()
    assert ended - started >= 0.9  # it did wait out the 1 s grace
    # the loop kept running during it: no gap near the grace's length between two ticks
    gaps = [later - earlier for earlier, later in itertools.pairwise([started, *ticks, ended])]
    assert max(gaps) < 0.5, max(gaps)
    await provider.aclose()


def spy_on_signals(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every pid (or process group) the local provider signals from now on, recorded as it
    goes through: a check that nothing was signalled needs no sleep."""
    signalled: list[int] = []
    real_killpg, real_kill_all = os.killpg, cgroup.kill_all

    def killpg(pid: int, sig: int) -> None:
        signalled.append(pid)
        real_killpg(pid, sig)

    def kill_all(path: Path) -> None:
        with contextlib.suppress(OSError):
            signalled.extend(int(pid) for pid in (path / "cgroup.procs").read_text().split())
        real_kill_all(path)

    monkeypatch.setattr(os, "killpg", killpg)
    monkeypatch.setattr(cgroup, "kill_all", kill_all)
    return signalled


async def test_pid_reuse_guard(
    state_dir: Path, mark_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record whose process start time does not match is dropped, never killed."""
    stranger = subprocess.Popen(
        [sys.executable, "-c", SLEEP], env={**os.environ, **mark_env}, start_new_session=True
    )
    try:
        start = process_start_time(stranger.pid)
        assert start is not None
        records = RecordDir(state_dir / "machines")
        record = Record(
            id="uplodr-0123456789ab",
            pid=stranger.pid,
            start_time=start + 1000,  # the pid was "reused" by the stranger
            port=1,
            address="127.0.0.1:1",
            created_at=time.time(),
            tags=MARKED,
        )
        provider = LocalProvider(state_dir, grace=0.5)
        signalled = spy_on_signals(monkeypatch)
        records.write(record)
        # listed as stopped (its process is gone, nobody owns it): the reaper's to destroy
        (listed,) = await provider.list({})
        assert listed.id == record.id and listed.state == "stopped"
        assert records.read(record.id) is not None  # listing changes nothing
        await provider.destroy(record.id)
        assert records.read(record.id) is None
        assert stranger.pid not in signalled and stranger.poll() is None  # never signalled

        # A dead machine whose creator is still alive stays (unlisted) for its failure() call.
        records.write(
            Record(
                id="uplodr-ba9876543210",
                pid=stranger.pid,
                start_time=start + 1000,
                port=1,
                address="127.0.0.1:1",
                created_at=time.time(),
                tags=MARKED,
                owner_pid=stranger.pid,
                owner_start_time=start,
            )
        )
        assert await provider.list({}) == []
        assert records.read("uplodr-ba9876543210") is not None
        await provider.destroy("uplodr-ba9876543210")
        assert records.read("uplodr-ba9876543210") is None
        assert stranger.pid not in signalled and stranger.poll() is None
        await provider.aclose()
    finally:
        stranger.kill()
        stranger.wait()


async def test_destroy_never_kills_what_a_record_names_outside_the_cgroup_fs(
    state_dir: Path, mark_env: dict[str, str], tmp_path: Path
) -> None:
    """A record is a file: one that names a folder outside the cgroup filesystem as its
    machine's cgroup (its `cgroup.procs` listing a stranger's pid) gets nothing killed when
    the reaper destroys that machine (before: every pid listed there got SIGKILL)."""
    stranger = subprocess.Popen(
        [sys.executable, "-c", SLEEP], env={**os.environ, **mark_env}, start_new_session=True
    )
    try:
        fake = tmp_path / "not-a-cgroup" / "uplodr-0123456789ab"
        fake.mkdir(parents=True)
        (fake / "cgroup.procs").write_text(f"{stranger.pid}\n")
        records = RecordDir(state_dir / "machines")
        records.write(
            Record(
                id="uplodr-0123456789ab",
                pid=2**22 + 1,  # no such process: only the cgroup is left to kill
                start_time=1.0,
                port=1,
                address="127.0.0.1:1",
                created_at=time.time(),
                tags=MARKED,
                cgroup=str(fake),
            )
        )
        provider = LocalProvider(state_dir, grace=0.5)
        assert await provider.failure("uplodr-0123456789ab") is None  # its OOM count unread
        await provider.destroy("uplodr-0123456789ab")  # what the reaper does
        assert records.read("uplodr-0123456789ab") is None
        assert stranger.poll() is None  # never signalled
        assert fake.is_dir()  # never removed
        await provider.aclose()
    finally:
        stranger.kill()
        stranger.wait()


def test_cgroup_calls_refuse_paths_outside_the_cgroup_fs(tmp_path: Path) -> None:
    for call in (cgroup.kill_all, cgroup.remove, cgroup.pids, cgroup.oom_killed):
        with pytest.raises(ValueError, match="is not a cgroup"):
            call(tmp_path)
        with pytest.raises(ValueError, match="is not a cgroup"):
            call(cgroup.CGROUP_FS / ".." / ".." / tmp_path.relative_to("/"))


async def test_an_existing_state_dir_is_made_private(
    state_dir: Path, mark_env: dict[str, str]
) -> None:
    """Records name the pids and cgroups destroy kills: a machines folder that others may
    write is made 0700 (before: it kept its mode, 0777 here), one owned by someone else is
    refused in one line."""
    machines = state_dir / "machines"
    machines.mkdir(parents=True)
    machines.chmod(0o777)
    provider = LocalProvider(state_dir, command=standin(LISTEN), grace=1.0)
    machine = await provider.create(spec(mark_env))
    assert stat.S_IMODE(machines.stat().st_mode) == 0o700
    await provider.destroy(machine.id)

    if os.geteuid() == 0:  # only root can hand the folder to someone else
        os.chown(machines, 65534, 65534)
        try:
            with pytest.raises(ProviderError, match="belongs to uid 65534, not to this user"):
                await provider.check()
            with pytest.raises(WorkerUnavailable, match="belongs to uid 65534"):
                await provider.create(spec(mark_env))
        finally:
            os.chown(machines, 0, 0)
    await provider.aclose()


def test_default_command_is_the_real_worker(state_dir: Path) -> None:
    assert worker_command(4321) == [
        sys.executable,
        "-m",
        "uplodr",
        "worker",
        "--grpc-addr",
        "127.0.0.1:4321",
    ]
    assert LocalProvider(state_dir).command is worker_command


def test_state_dir_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("UPLODR_STATE_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert LocalProvider().records.directory == tmp_path / "xdg" / "uplodr" / "machines"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = tmp_path / "home" / ".local" / "state" / "uplodr" / "machines"
    assert LocalProvider().records.directory == expected
    monkeypatch.setenv("UPLODR_STATE_DIR", str(tmp_path / "env"))
    assert LocalProvider().records.directory == tmp_path / "env" / "machines"
    assert LocalProvider(tmp_path / "arg").records.directory == tmp_path / "arg" / "machines"


# -- memory cap ------------------------------------------------------------------------------

needs_cgroup = pytest.mark.skipif(
    cgroup.default_parent() is None or os.geteuid() != 0,
    reason="needs a writable memory cgroup hierarchy (root)",
)


def cgroup_of(pid: int) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, path = line.strip().split(":", 2)
            if "memory" in controllers.split(",") or controllers == "":
                return path
    return ""


@needs_cgroup
async def test_memory_cap_oom_kill_is_reported(state_dir: Path, mark_env: dict[str, str]) -> None:
    provider = LocalProvider(state_dir, command=standin(HOG_1GB), grace=1.0)
    machine = await provider.create(spec(mark_env, memory_mb=256))
    record = provider.records.read(machine.id)
    assert record is not None and record.cgroup is not None and record.memory_mb == 256
    path = Path(record.cgroup)
    limit_file = path / (
        "memory.limit_in_bytes" if (path / "memory.oom_control").exists() else "memory.max"
    )
    assert int(limit_file.read_text()) == 256 * 1024 * 1024
    reason = await eventually(lambda: provider.failure(machine.id), timeout=30)
    assert reason == StopReason.out_of_memory(256)
    assert str(reason) == "out of memory (256 MB limit)"
    with pytest.raises(WorkerUnavailable, match="out of memory"):
        await provider.wait_started(machine, timeout=1)
    await provider.destroy(machine.id)
    assert not path.exists()


@needs_cgroup
async def test_memory_cap_applies_from_the_start_and_is_removed(
    state_dir: Path, mark_env: dict[str, str]
) -> None:
    provider = LocalProvider(state_dir, command=standin(LISTEN), memory_mb=300, grace=1.0)
    machine = await provider.create(spec(mark_env))  # the provider default applies
    await eventually(lambda: asyncio.to_thread(can_connect, machine.address))
    record = provider.records.read(machine.id)
    assert record is not None and record.cgroup is not None and record.memory_mb == 300
    path = Path(record.cgroup)
    assert cgroup_of(record.pid).endswith(f"/uplodr/{machine.id}")
    assert psutil.Process(record.pid).cmdline()[:2] == [sys.executable, "-c"]  # exec'd
    assert await provider.failure(machine.id) is None
    # Destroy from another process: the cgroup goes too.
    await other_process(state_dir, "destroy", machine.id)
    assert not path.exists()
    assert await provider.list({}) == []
    await provider.aclose()


async def test_memory_limit_without_cgroups_is_a_clear_error(
    state_dir: Path, mark_env: dict[str, str], tmp_path: Path
) -> None:
    nowhere = tmp_path / "no-cgroup-fs" / "uplodr"
    with pytest.raises(ProviderError, match="memory cgroup"):
        LocalProvider(state_dir, memory_mb=512, cgroup_parent=nowhere)
    provider = LocalProvider(state_dir, command=standin(SLEEP), cgroup_parent=nowhere)
    with pytest.raises(ProviderError, match="memory cgroup"):
        await provider.create(spec(mark_env, memory_mb=512))
    assert await provider.list({}) == []
    await provider.aclose()


@needs_cgroup
async def test_aclose_cleans_up_a_crashed_machine_nobody_destroyed(
    state_dir: Path, mark_env: dict[str, str]
) -> None:
    provider = LocalProvider(state_dir, command=standin(EXIT_3), memory_mb=128)
    machine = await provider.create(spec(mark_env))
    record = provider.records.read(machine.id)
    assert record is not None and record.cgroup is not None
    assert await eventually(lambda: provider.failure(machine.id)) == StopReason.exited(3)
    await provider.aclose()
    assert not Path(record.cgroup).exists()
    assert provider.records.read(machine.id) is None
