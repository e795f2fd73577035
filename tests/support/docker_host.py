"""What a private Docker engine leaves on this host, and how it is found and removed.

dockerd puts things outside its own folders: a bridge link and its route, cgroups, mounts
(network namespaces, overlays), containerd shim processes and their sockets in
/run/containerd/s, and a few fixed paths (`/etc/docker/key.json`, `/run/docker`,
`/run/containerd`). This module finds each of them by what names the engine (its root folder,
its bridge, its containers' ids), removes them, cleans engines whose test process was SIGKILLed
(`clean_stale`; each live engine holds an flock on its root folder), and takes the snapshot the
tests compare before and after an engine's life (`host_state`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

BRIDGE_PREFIX = "uplodr-br"
ROOT_PREFIX = "uplodr-dockerd-"
# Paths dockerd 20.10 / its containerd create whatever their configuration says.
TRACES_RECORD = Path(tempfile.gettempdir()) / "uplodr-dockerd-host-traces.json"
HOST_TRACES = (
    Path("/etc/docker/key.json"),
    Path("/run/docker/plugins"),
    Path("/run/docker"),
    Path("/run/containerd/s"),
    Path("/run/containerd"),
)


class EngineUnavailable(RuntimeError):
    """The engine cannot run here; str() is one line saying why."""


def program(name: str) -> str | None:
    """A system program: on PATH, or in the sbin folders a root PATH may lack."""
    for folder in (None, "/usr/sbin", "/sbin"):
        found = shutil.which(name, path=folder)
        if found:
            return found
    return None


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


def _mounts_under(root: Path) -> list[str]:
    """Mount points at or below `root`, deepest first."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == str(root) or point.startswith(f"{root}/"):
            found.append(point)
    return sorted(found, key=len, reverse=True)


def unmount_all(root: Path) -> None:
    """Lazily unmount everything mounted at or below `root` (netns, overlays, /proc of a chroot)."""
    for point in _mounts_under(root):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def remove_cgroups(parent: str) -> None:
    """Kill what still runs in the engine's cgroups, then rmdir them, deepest first."""
    kill_and_reap(_pids_in_cgroups(parent))
    for base in cgroup_folders(parent):
        for folder in sorted(base.glob("**/"), key=lambda p: len(str(p)), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()


def pids_using(root: Path) -> list[int]:
    """Processes whose command line names `root`: dockerd, its containerd and shims."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if str(root).encode() in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
    return pids


def cgroup_folders(parent: str) -> list[Path]:
    """The engine's cgroup parent in every v1 hierarchy and in a v2 tree, when present."""
    base = Path("/sys/fs/cgroup")
    return [p for p in (base / parent, *(h / parent for h in base.glob("*/"))) if p.is_dir()]


def _pids_in_cgroups(parent: str) -> list[int]:
    """Container processes, found by the cgroups the engine put them in."""
    pids: set[int] = set()
    for folder in cgroup_folders(parent):
        for procs in folder.glob("**/cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(line) for line in procs.read_text().split())
    return sorted(pids)


def kill_and_reap(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
        time.sleep(0.02)  # polling processes' exit under a deadline


def _zombie(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    return True


def host_state() -> dict[str, object]:
    """What an engine could change on this host, to compare before and after its life:
    iptables and ip6tables rules, IP forwarding, link names, routes, containerd shim sockets and
    dockerd's fixed host paths. What belongs to engines running right now (another test
    session's) is left out — their links, routes and shim sockets, and the fixed paths they
    share (None then) — and so are veth links and their routes (each container's, checked on
    their own), so engines elsewhere do not make a comparison flaky."""
    others = [root for root in live_roots() if (root / "bridge").exists()]
    bridges = [name for root in others for name in _bridges_of(root)]
    sockets = {path.name for root in others for path in _shim_sockets(root)}

    def mine(line: str) -> bool:
        return not any(name and name in line for name in bridges)

    def rules(tool: str) -> list[str] | str:
        found = program(tool)
        if found is None:
            return f"{tool} is not installed"
        done = subprocess.run([found], capture_output=True, text=True, check=False)
        return firewall(done.stdout)

    links = [_link_name(line) for line in ip("-o", "link").stdout.splitlines()]
    routes = ip("route", "show", "table", "all").stdout.splitlines()
    shims = Path("/run/containerd/s")
    return {
        "iptables": rules("iptables-save"),
        "ip6tables": rules("ip6tables-save"),
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
        "links": sorted(name for name in links if mine(name) and not name.startswith("veth")),
        "routes": sorted(route for route in routes if mine(route) and " dev veth" not in route),
        "shim sockets": sorted(
            p.name for p in (shims.iterdir() if shims.is_dir() else ()) if p.name not in sockets
        ),
        "docker host paths": None if others else [str(p) for p in HOST_TRACES if p.exists()],
    }


# `[packets:bytes]`: iptables-nft prints these on every chain's policy line even without `-c`,
# and any packet on the host changes them — they are traffic, not what an engine changed.
_COUNTERS = re.compile(r"\s*\[\d+:\d+\]")


def firewall(saved: str) -> list[str]:
    """The tables, chains with their policies, and rules (in order: order is meaning) of an
    `iptables-save` text, without comments and counters: what an engine can change."""
    lines = (_COUNTERS.sub("", line).strip() for line in saved.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _bridges_of(root: Path) -> list[str]:
    """The bridge links of a live engine: its own bridge, and one per network made on it (a
    user-defined network is a `br-<id>` bridge with its own routes, e.g. `uplodr-workers`)."""
    names = [(root / "bridge").read_text().strip()]
    transport = httpx.HTTPTransport(uds=str(root / "docker.sock"))
    with (
        contextlib.suppress(httpx.HTTPError, ValueError, OSError),
        httpx.Client(transport=transport, base_url="http://docker", timeout=5) as http,
    ):
        for network in http.get("/networks").json():
            if network.get("Driver") == "bridge":
                options = network.get("Options") or {}
                names.append(
                    options.get("com.docker.network.bridge.name") or f"br-{network['Id'][:12]}"
                )
    return names


def host_changes(before: dict[str, object], after: dict[str, object]) -> dict[str, object]:
    """What differs between two `host_state` snapshots, as {part: (before, after)}. A part one
    of them could not judge (None: another engine ran then) is left out of the comparison."""
    return {
        part: (before[part], after[part])
        for part in before
        if before[part] is not None and after[part] is not None and before[part] != after[part]
    }


def _link_name(line: str) -> str:
    """`3: name@peer: <...` → name."""
    return line.split(":")[1].strip().split("@")[0]


def links_on(bridge: str) -> list[str]:
    """Names of the links attached to `bridge` (containers' veth ends)."""
    lines = ip("-o", "link", "show", "master", bridge).stdout.splitlines()
    return [_link_name(line) for line in lines]


def live_roots() -> list[Path]:
    """Engine roots on this host whose owner still holds their lock."""
    live = []
    for root in Path(tempfile.gettempdir()).glob(f"{ROOT_PREFIX}*"):
        with contextlib.suppress(OSError), (root / "lock").open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                live.append(root)
    return live


def record_host_traces() -> None:
    """Before the first engine of ours starts: note which of dockerd's fixed host paths exist
    already. The note outlives a killed test process, so what it says stays true."""
    if not TRACES_RECORD.exists() and not live_roots():
        TRACES_RECORD.write_text(json.dumps([str(p) for p in HOST_TRACES if p.exists()]))


def settle_host_traces() -> None:
    """Once no engine of ours runs: remove the fixed host paths our engines created."""
    if not TRACES_RECORD.exists() or live_roots():
        return
    existed = set(json.loads(TRACES_RECORD.read_text()))
    _remove_dead_shim_sockets()
    for path in HOST_TRACES:
        if str(path) in existed or not path.exists():
            continue
        with contextlib.suppress(OSError):
            path.rmdir() if path.is_dir() else path.unlink()
    TRACES_RECORD.unlink(missing_ok=True)


def _shim_sockets(root: Path) -> list[Path]:
    """Where the engine's containerd shims put their sockets (a killed shim leaves its socket
    behind): /run/containerd/s/sha256(`<containerd socket>/<namespace>/<container id>`)."""
    data_root = Path((root / "data-root").read_text()) if (root / "data-root").exists() else None
    if data_root is None or not (data_root / "containers").is_dir():
        return []
    address = root / "exec" / "containerd" / "containerd.sock"
    return [
        Path("/run/containerd/s") / hashlib.sha256(f"{address}/moby/{c.name}".encode()).hexdigest()
        for c in (data_root / "containers").iterdir()
    ]


def remove_shim_sockets(root: Path) -> None:
    for path in _shim_sockets(root):
        path.unlink(missing_ok=True)


def _remove_dead_shim_sockets() -> None:
    """A containerd shim killed with its engine leaves its socket in /run/containerd/s. Remove
    the sockets nobody listens on, unless some containerd (not ours) is running."""
    folder = Path("/run/containerd/s")
    if not folder.is_dir() or _processes_named("containerd", "containerd-shim"):
        return
    for entry in folder.iterdir():
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(entry))
            except ConnectionRefusedError:
                entry.unlink(missing_ok=True)
            except OSError:
                continue


def _processes_named(*names: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and (entry / "comm").read_text().strip() in names:
                found.append(int(entry.name))
    return found


def clean_stale() -> list[Path]:
    """Remove what engines whose test process died (SIGKILL) left: processes naming their root,
    mounts, bridge, cgroups, folder. Engines still running (their lock is held) are untouched."""
    cleaned = []
    for root in Path(tempfile.gettempdir()).glob(f"{ROOT_PREFIX}*"):
        lock = root / "lock"
        try:
            handle = lock.open("a")
        except OSError:
            continue
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live engine
            bridge = (root / "bridge").read_text().strip() if (root / "bridge").exists() else ""
            kill_and_reap(pids_using(root))
            remove_shim_sockets(root)
            unmount_all(root)
            if bridge.startswith(BRIDGE_PREFIX):
                ip("link", "del", bridge)
                remove_cgroups(bridge)
            shutil.rmtree(root, ignore_errors=True)
            cleaned.append(root)
    settle_host_traces()
    return cleaned
