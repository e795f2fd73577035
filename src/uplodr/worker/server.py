"""The worker's gRPC server: Ping, Upload and Stream of `uplodr.v1.Image`, plus health and
reflection, and the rules for when the worker ends itself.

Boot time: the image stack (pyvips, Pillow, pillow-heif: about half of the worker's imports,
docs/benchmarks.md) is not needed to answer Ping, so it is imported in a thread once the server
listens (`load_image_stack`); the first file waits for that import if it arrives sooner.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from uplodr.errors import LimitExceeded, UplodrError, status_of
from uplodr.proto import uplodr_pb2, uplodr_pb2_grpc
from uplodr.worker.auth import TokenInterceptor
from uplodr.worker.config import WorkerConfig
from uplodr.worker.lifetime import Lifetime
from uplodr.worker.stream_protocol import Chunk, FileEnded, FileStarted, StreamProtocol

if TYPE_CHECKING:
    from uplodr.worker.file_job import FileJob, FileResult, Output

log = logging.getLogger("uplodr.worker")

SERVICE_NAME = uplodr_pb2.DESCRIPTOR.services_by_name["Image"].full_name


async def abort(context: grpc.aio.ServicerContext, error: UplodrError) -> NoReturn:
    context.set_trailing_metadata((("uplodr-error", error.code),))
    await context.abort(grpc.StatusCode[status_of(error).grpc], str(error))
    raise AssertionError("unreachable: abort raises")


# Outputs go back in chunks this size: far below the message limit, and the same size the
# gateway sends the upload in (measured: 64 KiB-1 MiB chunks stream equally fast).
OUTPUT_CHUNK_SIZE = 256 * 1024


def _variant(output: Output, inline: bool) -> uplodr_pb2.Variant:
    return uplodr_pb2.Variant(
        mime_type=output.mime_type,
        width=output.width,
        height=output.height,
        size_bytes=output.size,
        format=output.format,
        role=output.role,
        key_suffix=output.suffix,
        ext=output.ext,
        data=b"".join(output.chunks(OUTPUT_CHUNK_SIZE)) if inline else b"",
        quality=_quality(output),
    )


def _quality(output: Output) -> uplodr_pb2.Quality | None:
    receipt = output.quality
    if receipt is None:
        return None
    return uplodr_pb2.Quality(
        metric=receipt.metric,
        score=receipt.score,
        setting=receipt.setting,
        source=receipt.source,
        encodes=receipt.encodes,
        saved=receipt.saved,
    )


def to_response(result: FileResult, inline: bool = False) -> uplodr_pb2.UploadResp:
    """The file's final message: its outputs described (with their bytes when `inline`, the
    one-message Upload call), the size, placeholder and timings."""
    placeholder = result.placeholder
    return uplodr_pb2.UploadResp(
        file_name=result.file_name,
        folder=result.folder,
        timings=uplodr_pb2.Timings(
            receive=result.receive_seconds, convert=result.convert_seconds, store=0.0
        ),
        variants=[_variant(output, inline) for output in result.outputs],
        placeholder=uplodr_pb2.Placeholder(**placeholder) if placeholder else None,
        width=result.width,
        height=result.height,
        skipped=[uplodr_pb2.Skipped(format=s.format, reason=s.reason) for s in result.skipped],
    )


def output_messages(result: FileResult) -> Iterator[uplodr_pb2.UploadResp]:
    """Every output's bytes as `output` chunks (each output ended by `done`), then the file's
    final message describing them."""
    for output in result.outputs:
        pieces = output.chunks(OUTPUT_CHUNK_SIZE)
        piece = next(pieces)
        for following in pieces:
            yield uplodr_pb2.UploadResp(output=uplodr_pb2.Output(data=piece))
            piece = following
        yield uplodr_pb2.UploadResp(output=uplodr_pb2.Output(data=piece, done=True))
    yield to_response(result)


def load_image_stack() -> None:
    """Import the conversion code (and with it libvips) and configure libvips: what the first
    file needs and a Ping does not."""
    from uplodr.imaging import configure_vips
    from uplodr.worker import file_job  # noqa: F401

    configure_vips()


def start_job(config: WorkerConfig, event: FileStarted) -> FileJob:
    """The job of a file whose first message has arrived, with its per-file options."""
    from uplodr.worker.file_job import FileJob

    return FileJob(config, event.file_name, event.folder, event.preset, event.original)


class ImageService(uplodr_pb2_grpc.ImageServicer):
    def __init__(self, config: WorkerConfig, lifetime: Lifetime) -> None:
        self._config = config
        self._lifetime = lifetime

    @asynccontextmanager
    async def _job_slot(self, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        """One job slot, or RESOURCE_EXHAUSTED at once; any failure becomes a clean status."""
        self._lifetime.touch()
        if self._lifetime.in_flight >= self._config.max_concurrent_jobs:
            await abort(
                context,
                LimitExceeded(
                    f"worker is busy: at most {self._config.max_concurrent_jobs} job(s) at once"
                ),
            )
        self._lifetime.in_flight += 1
        try:
            yield
        except UplodrError as error:
            log.info("job refused: %s (%s)", error, error.code)
            await abort(context, error)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception:
            # The detail goes to the log; the client gets a status without a traceback.
            log.exception("job failed")
            context.set_trailing_metadata((("uplodr-error", "internal"),))
            await context.abort(grpc.StatusCode.INTERNAL, "internal error while converting")
        finally:
            self._lifetime.in_flight -= 1
            self._lifetime.touch()

    async def Ping(
        self, request: uplodr_pb2.Echo, context: grpc.aio.ServicerContext
    ) -> uplodr_pb2.Echo:
        self._lifetime.touch()
        return uplodr_pb2.Echo(nonce=request.nonce)

    async def Upload(
        self, request: uplodr_pb2.UploadReq, context: grpc.aio.ServicerContext
    ) -> uplodr_pb2.UploadResp:
        async with self._job_slot(context):
            protocol = StreamProtocol(self._config.max_file_bytes)
            whole = uplodr_pb2.UploadReq()
            whole.CopyFrom(request)
            whole.done = True
            job: FileJob | None = None
            try:
                for event in protocol.feed(whole):
                    if isinstance(event, FileStarted):
                        job = start_job(self._config, event)
                    elif isinstance(event, Chunk) and job is not None:
                        job.write(event.data)
                assert job is not None
                return to_response(await job.finish(), inline=True)
            finally:
                if job is not None:
                    job.close()
        raise AssertionError("unreachable")

    async def Stream(
        self,
        request_iterator: AsyncIterator[uplodr_pb2.UploadReq],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[uplodr_pb2.UploadResp]:
        async with self._job_slot(context):
            protocol = StreamProtocol(self._config.max_file_bytes)
            job: FileJob | None = None
            try:
                async for message in request_iterator:
                    self._lifetime.touch()
                    for event in protocol.feed(message):
                        if isinstance(event, FileStarted):
                            job = start_job(self._config, event)
                        elif isinstance(event, Chunk) and job is not None:
                            job.write(event.data)
                        elif isinstance(event, FileEnded) and job is not None:
                            result = await job.finish()
                            for answer in output_messages(result):
                                yield answer
                            job.close()
                            job = None
                protocol.end()
            finally:
                if job is not None:
                    job.close()


def grpc_options(msg_size: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", msg_size),
        ("grpc.max_send_message_length", msg_size),
        # gRPC sets SO_REUSEPORT by default: a second worker on a taken port would silently
        # share it and get half of another worker's calls. Fail to start instead.
        ("grpc.so_reuseport", 0),
    ]


async def serve(config: WorkerConfig) -> str:
    """Run until a stop reason; return it."""
    lifetime = Lifetime(config.max_lifetime, config.idle_timeout, config.shutdown_grace)
    interceptors = [TokenInterceptor(config.token)] if config.token else []
    server = grpc.aio.server(interceptors=interceptors, options=grpc_options(config.msg_size))
    uplodr_pb2_grpc.add_ImageServicer_to_server(ImageService(config, lifetime), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:
        port = server.add_insecure_port(config.grpc_addr)
    except RuntimeError:  # grpc's way of saying the bind failed
        port = 0
    if port == 0:
        raise OSError(f"cannot listen on {config.grpc_addr} (address in use or not available)")
    await server.start()
    threading.Thread(target=load_image_stack, name="image-stack", daemon=True).start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    lifetime.install_signal_handlers()
    log.info("worker listening on %s", config.grpc_addr)
    try:
        reason = await lifetime.wait()
    finally:
        await health_servicer.enter_graceful_shutdown()
        await server.stop(config.shutdown_grace)
    return reason
