"""Talking to one worker over gRPC: wait until it answers, stream files, keep it alive.

One channel per machine. Boot waiting is a single Ping with `wait_for_ready` under the boot
deadline, with gRPC's reconnect backoff lowered (20 ms, at most 50 ms) so a worker that starts
listening is noticed within ~50 ms — no sleep loops (measured: a local worker's start → Ping went
0.28 → 0.22 s when the cap went 200 → 50 ms, bench/worker_boot.py). Uploads are never retried
by gRPC (a call is committed after 256 KiB); a failed upload fails the job clearly.

A worker holds no store: it sends each file's outputs back on the same call, as `output` chunks
before the file's final answer. They are written to the file's `outputs` folder as they arrive
(`0`, `1`, … in the order of the answer's `variants`), never held whole in memory, and bounded
(`MAX_OUTPUTS`, `MAX_OUTPUT_BYTES`): a worker a crafted file took over cannot fill the gateway's
memory or disk. Each output must be a kind an encoder makes (`uplodr.formats.output_kind`) of
the size it announced, else the job fails here with BadOutput — before the machine is given back,
so the pool does not keep a worker that lied. The keys are the gateway's (`gateway/outputs.py`).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import grpc

from uplodr.errors import ERRORS_BY_CODE, DeadlineExceeded, UplodrError, WorkerUnavailable
from uplodr.formats import output_kind
from uplodr.preset import ORIGINAL_MODES, OriginalMode
from uplodr.proto import uplodr_pb2, uplodr_pb2_grpc

# Measured: chunks of 64 KiB-1 MiB stream equally fast; 4 KiB chunks are several times slower.
DEFAULT_CHUNK_SIZE = 256 * 1024
# A file's outputs: far more than any preset makes (2 formats x 6 widths + thumbnail + original
# is 15), and bytes far beyond any honest set (a 64 MB original and its variants).
MAX_OUTPUTS = 64
MAX_OUTPUT_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class UploadSource:
    """A file already spooled to disk by the gateway, with its validated name and folder, and
    the per-file options the worker reads from its first message: the preset to convert it
    with (every setting as JSON, `Preset.to_json`; "" = the worker's own) and what to do with
    the uploaded bytes themselves."""

    path: Path
    file_name: str
    folder: str
    preset: str = ""
    original: OriginalMode = "preset"
    # Where the worker's outputs of this file are written (an empty folder the caller owns);
    # None: they are received and dropped (a bench or test of dispatch alone).
    outputs: Path | None = None

    def first_message(self, **fields: Any) -> uplodr_pb2.UploadReq:
        """The file's first message: its name, folder and options, with `fields` (data or done)."""
        return uplodr_pb2.UploadReq(
            file_name=self.file_name,
            folder=self.folder,
            preset=self.preset,
            # The contract's Original enum numbers the modes in ORIGINAL_MODES' order.
            original=uplodr_pb2.Original.ValueType(ORIGINAL_MODES.index(self.original)),
            **fields,
        )


def error_from_rpc(error: grpc.aio.AioRpcError, doing: str) -> UplodrError:
    """Turn a worker's status back into the error it stood for; anything without uplodr's
    error code (connection lost, deadline) means the worker itself failed."""
    trailing = dict(error.trailing_metadata() or ())
    code = str(trailing.get("uplodr-error", ""))
    if code in ERRORS_BY_CODE and code != "internal":
        return ERRORS_BY_CODE[code](error.details() or code)
    if code == "internal":
        return UplodrError(f"worker failed while {doing}")
    if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"worker did not answer in time while {doing}")
    return WorkerUnavailable(f"worker stopped answering while {doing}")


class WorkerClient:
    def __init__(self, address: str, token: str | None, msg_size: int, chunk_size: int) -> None:
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._chunk_size = chunk_size
        self._channel = grpc.aio.insecure_channel(
            address,
            options=[
                ("grpc.max_send_message_length", msg_size),
                ("grpc.max_receive_message_length", msg_size),
                ("grpc.initial_reconnect_backoff_ms", 20),
                ("grpc.min_reconnect_backoff_ms", 20),
                ("grpc.max_reconnect_backoff_ms", 50),
                ("grpc.enable_retries", 0),
            ],
        )
        self._stub: Any = uplodr_pb2_grpc.ImageStub(self._channel)

    async def wait_ready(self, timeout: float) -> None:
        await self.ping(timeout, wait_for_ready=True)

    async def ping(self, timeout: float, wait_for_ready: bool = False) -> None:
        nonce = secrets.token_hex(8)
        try:
            echo = await self._stub.Ping(
                uplodr_pb2.Echo(nonce=nonce),
                timeout=timeout,
                wait_for_ready=wait_for_ready,
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as error:
            raise error_from_rpc(error, "booting") from None
        if echo.nonce != nonce:
            raise WorkerUnavailable("worker answered Ping with the wrong nonce")

    async def _messages(self, files: Sequence[UploadSource]) -> AsyncIterator[uplodr_pb2.UploadReq]:
        for source in files:
            first = True
            with source.path.open("rb") as handle:
                while chunk := handle.read(self._chunk_size):
                    if first:
                        yield source.first_message(data=chunk)
                        first = False
                    else:
                        yield uplodr_pb2.UploadReq(data=chunk)
            if first:  # an empty file: let the worker refuse it with its own message
                yield source.first_message(done=True)
            else:
                yield uplodr_pb2.UploadReq(done=True)

    async def stream(
        self, files: Sequence[UploadSource], timeout: float
    ) -> list[uplodr_pb2.UploadResp]:
        """Each file's final answer, in order; its outputs written to its `outputs` folder."""
        call = self._stub.Stream(self._messages(files), timeout=timeout, metadata=self._metadata)
        answers: list[uplodr_pb2.UploadResp] = []
        sink: _OutputSink | None = None
        try:
            async for response in call:
                if response.HasField("output"):
                    if sink is None:
                        if len(answers) == len(files):
                            raise WorkerUnavailable("worker sent outputs of a file it was not sent")
                        sink = _OutputSink(files[len(answers)].outputs)
                    await asyncio.to_thread(sink.write, response.output)
                    continue
                if sink is not None:
                    sink.close()
                count = sink.count if sink is not None else 0
                sink = None
                if count != len(response.variants):
                    raise BadOutput(
                        f"worker sent {count} output(s) for {len(response.variants)} variant(s)"
                    )
                check_outputs(response.variants, files[len(answers)].outputs)
                answers.append(response)
            return answers
        except grpc.aio.AioRpcError as error:
            raise error_from_rpc(error, "converting") from None
        finally:
            if sink is not None:
                sink.close()
            call.cancel()

    async def close(self) -> None:
        await self._channel.close(grace=None)


class BadOutput(WorkerUnavailable):
    """A worker's outputs are not what any encoder writes: the job fails, nothing is stored."""


def check_outputs(variants: Sequence[uplodr_pb2.Variant], folder: Path | None) -> None:
    """BadOutput unless every output is a kind an encoder makes and (when kept in `folder`) of
    the size its answer says."""
    for index, variant in enumerate(variants):
        try:
            output_kind(
                variant.role, variant.format, variant.key_suffix, variant.ext, variant.mime_type
            )
        except ValueError as error:
            raise BadOutput(f"worker sent {error}") from None
        if folder is not None and (folder / str(index)).stat().st_size != variant.size_bytes:
            raise BadOutput("worker sent an output whose size is not the one it announced")


class _OutputSink:
    """One file's outputs, written to numbered files in its folder as their chunks arrive."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.count = 0
        self.total = 0
        self._file: BinaryIO | None = None

    def write(self, output: uplodr_pb2.Output) -> None:
        self.total += len(output.data)
        if self.total > MAX_OUTPUT_BYTES:
            raise BadOutput(f"worker sent more than {MAX_OUTPUT_BYTES} bytes of outputs")
        if self.count >= MAX_OUTPUTS:
            raise BadOutput(f"worker sent more than {MAX_OUTPUTS} outputs")
        if self._file is None and self.folder is not None:
            self._file = (self.folder / str(self.count)).open("xb")
        if self._file is not None:
            self._file.write(output.data)
        if output.done:
            self.close()
            self.count += 1

    def close(self) -> None:
        """Stop writing; an output without its `done` is incomplete and does not count."""
        if self._file is not None:
            self._file.close()
            self._file = None
