"""Run `uplodr serve` as a real process on a free port, the way a user does: once
(`running_gateway`), or killable and restartable on the same port (`GatewayProcess`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.support.procs import free_port, worker_processes

READY_DEADLINE = 30.0


@contextmanager
def hang_up_after_upload(url: str, body: bytes, name: str = "gone.jpg") -> Iterator[None]:
    """Send a whole upload to the gateway at `url` over a raw socket, then hang up when the
    block ends, never reading the answer: the client that leaves mid-conversion."""
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        sock.sendall(
            f"POST /v1/images?name={name} HTTP/1.1\r\nHost: x\r\n".encode()
            + b"Content-Type: application/octet-stream\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        yield


@dataclass
class Gateway:
    url: str
    process: subprocess.Popen[bytes]
    root: Path
    cwd: Path
    store: Path
    state: Path
    log: Path

    def workers(self) -> list[int]:
        return [p.pid for p in worker_processes(self.cwd)]

    def machine_records(self) -> list[Path]:
        machines = self.state / "machines"
        return sorted(machines.glob("*.json")) if machines.exists() else []

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def wait_until_healthy(
    url: str, process: subprocess.Popen[bytes], log: Path, within: float = READY_DEADLINE
) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"uplodr serve exited {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # polling a real request under a deadline, not standing in for one
    raise RuntimeError(f"uplodr serve did not answer /healthz in {within:g}s:\n{log.read_text()}")


def start_gateway(
    root: Path, *args: str, env: Mapping[str, str] | None = None, store: Path | None = None
) -> Gateway:
    root.mkdir(parents=True, exist_ok=True)
    cwd, state, log = root / "cwd", root / "state", root / "gateway.log"
    cwd.mkdir(exist_ok=True)
    store = store or root / "store"
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uplodr",
        "serve",
        "--port",
        str(port),
        "--state-dir",
        str(state),
    ]
    if not any(a == "--store" for a in args):
        command += ["--store", str(store)]
    # Machine per job unless a test asks for the pool (`--pool-idle`, or this variable in
    # `env`): the tests written before the pool check that no machine outlives its job.
    full_env = {
        "UPLODR_POOL_IDLE": "0",
        **os.environ,
        "UPLODR_DATA_DIR": str(root / "data"),
        **(env or {}),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, *args], cwd=cwd, env=full_env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process, log)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return Gateway(url, process, root, cwd, store, state, log)


def stop_gateway(gateway: Gateway) -> None:
    if gateway.process.poll() is None:
        gateway.process.send_signal(signal.SIGTERM)
        try:
            gateway.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            gateway.process.kill()
            gateway.process.wait()


@contextmanager
def running_gateway(
    root: Path, *args: str, env: Mapping[str, str] | None = None, store: Path | None = None
) -> Iterator[Gateway]:
    gateway = start_gateway(root, *args, env=env, store=store)
    try:
        yield gateway
    finally:
        stop_gateway(gateway)


class GatewayProcess:
    """`uplodr serve ARGS` as a real process on a fixed port, killable and restartable (each
    start is a new incarnation with its own log file in `workdir`)."""

    def __init__(self, args: list[str], env: Mapping[str, str], workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = args
        self.env = {"UPLODR_POOL_IDLE": "0", **env}  # machine per job unless env says
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.incarnation = 0
        self.logs: list[Path] = []

    def start(self) -> None:
        self.incarnation += 1
        log = self.workdir / f"gateway-{self.incarnation}.log"
        self.logs.append(log)
        command = [sys.executable, "-m", "uplodr", "serve", "--port", str(self.port), *self.args]
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                command, cwd=self.workdir, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        wait_until_healthy(self.url, self.process, log, within=60.0)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_text(self) -> str:
        return "".join(log.read_text(errors="replace") for log in self.logs if log.exists())
