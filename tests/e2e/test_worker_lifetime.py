"""A worker ends itself: after --max-lifetime, after --idle-timeout without calls, and on
SIGTERM — finishing the job in flight first."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import psutil
import pytest

from tests.support.made import of_proto
from tests.support.paths import corpus_file
from tests.support.worker import running_worker
from uplodr.proto import uplodr_pb2, uplodr_pb2_grpc


def exit_code_within(process: subprocess.Popen[bytes], seconds: float) -> int:
    try:
        return process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        pytest.fail(f"worker still running after {seconds}s")


def converting(pid: int) -> None:
    """Return once the worker has spent real CPU time on the job (it is converting)."""
    process = psutil.Process(pid)
    start = sum(process.cpu_times()[:2])
    deadline = time.monotonic() + 60
    while sum(process.cpu_times()[:2]) - start < 1.0:
        assert time.monotonic() < deadline, "the worker never started converting"
        time.sleep(0.02)  # polling a condition under a deadline


def test_max_lifetime_ends_the_worker(tmp_path: Path) -> None:
    with running_worker(tmp_path, "--max-lifetime", "5s") as worker:
        assert exit_code_within(worker.process, 15) == 0
        assert "max lifetime of 5s reached" in worker.log.read_text()


def test_idle_worker_ends_itself(tmp_path: Path) -> None:
    with running_worker(tmp_path, "--idle-timeout", "2s") as worker:
        assert exit_code_within(worker.process, 15) == 0
        assert "the gateway is gone" in worker.log.read_text()


def test_sigterm_lets_the_job_in_flight_finish(tmp_path: Path) -> None:
    photo = corpus_file("craft-beer.jpg").read_bytes()
    with running_worker(tmp_path) as worker:
        answers: list[uplodr_pb2.UploadResp] = []
        errors: list[grpc.RpcError] = []
        started = threading.Event()

        def messages() -> Iterator[uplodr_pb2.UploadReq]:
            yield uplodr_pb2.UploadReq(file_name="beer.jpg", data=photo, done=True)
            started.set()

        def upload() -> None:
            with grpc.insecure_channel(worker.address) as channel:
                stub = uplodr_pb2_grpc.ImageStub(channel)
                try:
                    call = stub.Stream(messages(), metadata=worker.metadata(), timeout=120)
                    answers.extend(worker.answers(call))
                except grpc.RpcError as error:
                    errors.append(error)

        thread = threading.Thread(target=upload)
        thread.start()
        assert started.wait(30)
        converting(worker.process.pid)
        worker.process.send_signal(signal.SIGTERM)
        thread.join(120)
        assert errors == []
        assert len(answers) == 1
        assert len(answers[0].variants) == len(of_proto(answers[0])) + 1  # the winners, a thumbnail
        assert exit_code_within(worker.process, 30) == 0
        assert "received SIGTERM" in worker.log.read_text()
