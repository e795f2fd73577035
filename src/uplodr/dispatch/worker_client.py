"""Talking to one worker over gRPC: wait until it answers, stream files, keep it alive.

One channel per machine. Boot waiting is a single Ping with `wait_for_ready` under the boot
deadline, with gRPC's reconnect backoff lowered (20 ms, at most 50 ms) so a worker that starts
listening is noticed within ~50 ms — no sleep loops (measured: a local worker's start → Ping went
0.28 → 0.22 s when the cap went 200 → 50 ms, bench/worker_boot.py). Uploads are never retried
by gRPC (a call is committed after 256 KiB); a failed upload fails the job clearly.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from uplodr.errors import ERRORS_BY_CODE, DeadlineExceeded, UplodrError, WorkerUnavailable
from uplodr.preset import ORIGINAL_MODES, OriginalMode
from uplodr.proto import uplodr_pb2, uplodr_pb2_grpc

# Measured: chunks of 64 KiB-1 MiB stream equally fast; 4 KiB chunks are several times slower.
DEFAULT_CHUNK_SIZE = 256 * 1024


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
        call = self._stub.Stream(self._messages(files), timeout=timeout, metadata=self._metadata)
        try:
            return [response async for response in call]
        except grpc.aio.AioRpcError as error:
            raise error_from_rpc(error, "converting") from None
        finally:
            call.cancel()

    async def close(self) -> None:
        await self._channel.close(grace=None)
