"""Run `uplodr worker` by hand as a real process, for tests that speak gRPC to it directly.

A worker holds no store: it sends its outputs back on the Stream call. `Worker.answers` reads a
call's messages the way the gateway does (output chunks, then the file's answer) and writes the
outputs under `store` at `{folder}/{stem}{suffix}.{ext}`, setting each variant's `url` to
`http://files.test/` + that key, so tests can open what a worker made."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
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

    def answers(self, responses: Iterable[uplodr_pb2.UploadResp]) -> list[uplodr_pb2.UploadResp]:
        """Each file's answer, its outputs saved under `store` and named in its variants' urls."""
        answers: list[uplodr_pb2.UploadResp] = []
        outputs: list[bytes] = []
        current = b""
        for response in responses:
            if response.HasField("output"):
                current += response.output.data
                if response.output.done:
                    outputs.append(current)
                    current = b""
                continue
            assert len(outputs) == len(response.variants), "an output per variant"
            for variant, data in zip(response.variants, outputs, strict=True):
                self.save(response, variant, data)
            answers.append(response)
            outputs = []
        return answers

    def save(self, answer: uplodr_pb2.UploadResp, variant: uplodr_pb2.Variant, data: bytes) -> None:
        stem = Path(answer.file_name).stem
        key = f"{answer.folder}/{stem}{variant.key_suffix}.{variant.ext}".lstrip("/")
        (self.store / key).parent.mkdir(parents=True, exist_ok=True)
        (self.store / key).write_bytes(data)
        variant.url = f"http://files.test/{key}"


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
