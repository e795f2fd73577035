"""Run `uplodr worker` by hand as a real process, for tests that speak gRPC to it directly."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from tests.support.procs import free_port
from uplodr.proto import uplodr_pb2, uplodr_pb2_grpc


@dataclass
class Worker:
    address: str
    process: subprocess.Popen[bytes]
    store: Path
    token: str | None
    log: Path

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


def wait_for_ping(address: str, token: str | None, timeout: float = 30.0) -> None:
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with grpc.insecure_channel(address) as channel:
        stub = uplodr_pb2_grpc.ImageStub(channel)
        stub.Ping(
            uplodr_pb2.Echo(nonce="ready"), wait_for_ready=True, timeout=timeout, metadata=metadata
        )


@contextmanager
def running_worker(
    root: Path, *args: str, token: str | None = "test-token", env: Mapping[str, str] | None = None
) -> Iterator[Worker]:
    root.mkdir(parents=True, exist_ok=True)
    store, log = root / "store", root / "worker.log"
    store.mkdir(exist_ok=True)
    address = f"127.0.0.1:{free_port()}"
    full_env = {**os.environ, **(env or {})}
    full_env.pop("UPLODR_WORKER_TOKEN", None)
    if token:
        full_env["UPLODR_WORKER_TOKEN"] = token
    command = [
        sys.executable,
        "-m",
        "uplodr",
        "worker",
        "--grpc-addr",
        address,
        "--store",
        str(store),
        "--public-url",
        "http://files.test/{key}",
        *args,
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=full_env, stdout=out, stderr=subprocess.STDOUT, cwd=root
        )
    try:
        try:
            wait_for_ping(address, token)
        except grpc.RpcError:
            raise RuntimeError(f"worker did not answer Ping:\n{log.read_text()}") from None
        yield Worker(address, process, store, token, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
