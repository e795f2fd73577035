"""A fake worker: a real gRPC server (Ping and Stream of `uplodr.v1.Image`, on a real loopback
socket, in the test's own event loop) that converts nothing, for fast tests of the dispatcher
and gateway on the in-process `MemoryProvider`:

    worker = FakeWorker()
    provider = MemoryProvider(worker.start)

It checks the per-machine token from the machine's environment like the real worker, answers
each file with one made-up variant, and misbehaves on request (`FakeBehaviour`, changeable at
any time): slow or silent Pings, a wrong nonce, slow or hanging conversions, an uplodr error for
each file, too many answers, or dying mid-stream (the "process" exits with a reason the memory
provider then reports through `failure()`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc

from uplodr.errors import UplodrError, status_of
from uplodr.machines.base import MachineSpec, StopReason
from uplodr.machines.memory import RunningWorker
from uplodr.proto import uplodr_pb2, uplodr_pb2_grpc
from uplodr.worker_env import WorkerEnv


@dataclass
class FakeBehaviour:
    ping_delay: float = 0.0  # every Ping answers this late (a slow boot)
    ping_hangs: bool = False  # Pings are never answered (a worker that never gets ready)
    wrong_nonce: bool = False  # Pings are answered with another nonce
    convert_seconds: float = 0.0  # each file takes this long before its answer
    stream_hangs: bool = False  # a Stream is never answered
    die_mid_stream: StopReason | None = (
        None  # once a file's first chunk arrived, exit for this reason
    )
    error: UplodrError | None = None  # each file is answered with this error
    extra_answers: int = 0  # this many answers more than files sent
    # a taken-over worker: its output claims this key suffix (honest: "")
    output_suffix: str = ""


@dataclass
class FakeWorker:
    behaviour: FakeBehaviour = field(default_factory=FakeBehaviour)
    pings: int = 0
    streams: int = 0
    bytes_received: int = 0
    refused_calls: int = 0  # calls without the machine's token
    envs: list[WorkerEnv] = field(default_factory=list)  # what each machine was told
    streaming: asyncio.Event = field(default_factory=asyncio.Event)  # a Stream got a chunk
    _servers: list[grpc.aio.Server] = field(default_factory=list)

    async def start(self, spec: MachineSpec) -> RunningWorker:
        """The MemoryProvider hook: a server for one machine, configured by its env."""
        env = WorkerEnv.from_env(spec.env)
        self.envs.append(env)
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[StopReason] = loop.create_future()
        server = grpc.aio.server()
        uplodr_pb2_grpc.add_ImageServicer_to_server(_Servicer(self, env.token, exited), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._servers.append(server)

        async def stop() -> None:
            await _stop(server)

        return RunningWorker(f"127.0.0.1:{port}", stop, exited)

    async def aclose(self) -> None:
        for server in self._servers:
            await _stop(server)


async def _stop(server: grpc.aio.Server) -> None:
    """Stop a server; grpc's shutdown may raise the CancelledError of an RPC it cancelled
    (a handler still running when its call is cut: seen in CI at a test's teardown), which is
    not this task being cancelled — that one is raised."""
    try:
        await server.stop(None)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


class _Servicer(uplodr_pb2_grpc.ImageServicer):
    def __init__(
        self, worker: FakeWorker, token: str | None, exited: asyncio.Future[StopReason]
    ) -> None:
        self.worker = worker
        self.token = token
        self.exited = exited

    async def _check_token(self, context: grpc.aio.ServicerContext) -> None:
        metadata = dict(context.invocation_metadata() or ())
        if self.token and metadata.get("authorization") != f"Bearer {self.token}":
            self.worker.refused_calls += 1
            context.set_trailing_metadata((("uplodr-error", "unauthenticated"),))
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token")

    async def Ping(
        self, request: uplodr_pb2.Echo, context: grpc.aio.ServicerContext
    ) -> uplodr_pb2.Echo:
        await self._check_token(context)
        behaviour = self.worker.behaviour
        self.worker.pings += 1
        if behaviour.ping_hangs:
            await asyncio.Event().wait()
        await asyncio.sleep(behaviour.ping_delay)
        nonce = "not-" + request.nonce if behaviour.wrong_nonce else request.nonce
        return uplodr_pb2.Echo(nonce=nonce)

    async def Upload(
        self, request: uplodr_pb2.UploadReq, context: grpc.aio.ServicerContext
    ) -> uplodr_pb2.UploadResp:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the fake worker only streams")
        raise AssertionError("unreachable: abort raises")

    async def Stream(
        self, requests: AsyncIterator[uplodr_pb2.UploadReq], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[uplodr_pb2.UploadResp]:
        await self._check_token(context)
        worker, behaviour = self.worker, self.worker.behaviour
        worker.streams += 1
        name, folder = "", ""
        async for request in requests:
            worker.streaming.set()
            worker.bytes_received += len(request.data)
            if request.file_name:
                name, folder = request.file_name, request.folder
            if behaviour.die_mid_stream is not None:
                await self._die(behaviour.die_mid_stream)
            if behaviour.stream_hangs:
                await asyncio.Event().wait()
            if not request.done:
                continue
            await asyncio.sleep(behaviour.convert_seconds)
            if behaviour.error is not None:
                context.set_trailing_metadata((("uplodr-error", behaviour.error.code),))
                await context.abort(
                    grpc.StatusCode[status_of(behaviour.error).grpc], str(behaviour.error)
                )
            for _ in range(1 + behaviour.extra_answers):
                # like a real worker: the output's bytes, then the answer describing it
                yield uplodr_pb2.UploadResp(output=uplodr_pb2.Output(data=OUTPUT, done=True))
                yield _answer(name, folder, behaviour.convert_seconds, behaviour.output_suffix)

    async def _die(self, reason: StopReason) -> None:
        """The worker process exits: the provider learns why and stops this server, which cuts
        the call (this waits until then)."""
        if not self.exited.done():
            self.exited.set_result(reason)
        await asyncio.Event().wait()


# The one output of every fake conversion (the gateway stores what it is sent, unread).
OUTPUT = b"RIFF" + bytes(96)


def _answer(name: str, folder: str, convert: float, suffix: str = "") -> uplodr_pb2.UploadResp:
    variant = uplodr_pb2.Variant(
        mime_type="image/webp",
        width=64,
        height=64,
        size_bytes=len(OUTPUT),
        format="webp",
        role="full",
        key_suffix=suffix,
        ext="webp",
    )
    return uplodr_pb2.UploadResp(
        file_name=name,
        folder=folder,
        variants=[variant],
        timings=uplodr_pb2.Timings(receive=0.0, convert=convert, store=0.0),
    )
