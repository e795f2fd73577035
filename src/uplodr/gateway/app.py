"""The HTTP API: POST /v1/images, GET /healthz, GET /metrics, the upload page, and the local
store's files under /files. Every error is JSON `{"error", "code"}` with the status from the
one table in uplodr.errors; tracebacks go to the log only."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import mimetypes
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from uplodr.errors import (
    Busy,
    InvalidRequest,
    TooLarge,
    Unauthenticated,
    UplodrError,
    status_of,
)
from uplodr.gateway import metrics
from uplodr.gateway.body_limit import BodyLimit
from uplodr.gateway.page import UPLOAD_PAGE
from uplodr.gateway.service import ConversionService
from uplodr.gateway.spool import Spooled, spool
from uplodr.names import safe_file_name, safe_folder
from uplodr.sniff import sniff_file

log = logging.getLogger("uplodr.gateway")
mimetypes.add_type("image/avif", ".avif")
mimetypes.add_type("image/webp", ".webp")

T = TypeVar("T")
MULTIPART_CHUNK = 256 * 1024


class ClientGone(Exception):
    """The HTTP client hung up before its answer was ready."""


def error_response(error: UplodrError) -> JSONResponse:
    metrics.ERRORS.labels(code=error.code).inc()
    headers: dict[str, str] = {}
    if isinstance(error, TooLarge):
        # A body cut off at the limit was not read to its end: the connection cannot carry
        # another request, so say it is closed (the server closes it after this answer).
        headers["connection"] = "close"
    if isinstance(error, Busy):
        headers["retry-after"] = str(error.retry_after)
    return JSONResponse(
        {"error": str(error), "code": error.code},
        status_code=status_of(error).http,
        headers=headers or None,
    )


def check_token(request: Request, tokens: Sequence[str]) -> None:
    if not tokens:
        return
    header = request.headers.get("authorization", "")
    given = header.removeprefix("Bearer ").encode() if header.startswith("Bearer ") else b""
    # compare_digest on every token, so timing says nothing about which one nearly matched.
    if not any([hmac.compare_digest(given, t.encode()) for t in tokens]):
        raise Unauthenticated("missing or wrong bearer token")


async def _multipart_file_chunks(request: Request) -> tuple[str, AsyncIterator[bytes]]:
    form = await request.form(max_files=1, max_fields=10)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidRequest("multipart upload needs a file in the field 'file'")

    async def chunks() -> AsyncIterator[bytes]:
        while data := await upload.read(MULTIPART_CHUNK):
            yield data

    return upload.filename or "", chunks()


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run `work`, cancelling it if the client hangs up first (its finally-blocks still run,
    so the job's machine is still destroyed)."""
    job = asyncio.ensure_future(work)

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({job, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not job.done():
        job.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await job
        raise ClientGone
    return job.result()


async def refused(request: Request, error: Exception) -> Response:
    """Every error a client can see (uplodr.errors) — raised by the endpoint, by the body limit
    while the upload arrives, or by the conversion — as `{"error", "code"}` with its status."""
    assert isinstance(error, UplodrError)
    log.info("upload refused: %s (%s)", error, error.code)
    return error_response(error)


async def client_gone(request: Request, error: Exception) -> Response:
    """The client hung up: its job was cancelled (and its machine destroyed). Nobody reads this
    answer; 499 is what the access log and the metrics see."""
    metrics.JOBS.labels(outcome="client_gone").inc()
    log.info("client hung up; job cancelled")
    return Response(status_code=499)


async def internal_error(request: Request, error: Exception) -> Response:
    """Anything unexpected: a one-line JSON 500; the traceback goes to the log only (Starlette
    re-raises the exception after this answer and the server logs it)."""
    return error_response(UplodrError("internal error"))


EXCEPTION_HANDLERS: dict[Any, Any] = {
    UplodrError: refused,
    ClientGone: client_gone,
    ClientDisconnect: client_gone,
    Exception: internal_error,
}


def create_app(
    service: ConversionService,
    *,
    tokens: Sequence[str],
    max_upload_bytes: int,
    files_root: Path | None,
    spool_dir: Path | None = None,
    on_startup: Callable[[], Awaitable[None]] | None = None,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
) -> Starlette:
    async def post_image(request: Request) -> Response:
        check_token(request, tokens)
        content_type = request.headers.get("content-type", "")
        with tempfile.TemporaryDirectory(prefix="uplodr-upload-", dir=spool_dir) as tmp:
            if content_type.startswith("multipart/form-data"):
                part_name, chunks = await _multipart_file_chunks(request)
                file_name = request.query_params.get("name") or part_name
            else:
                file_name = request.query_params.get("name", "")
                chunks = request.stream()
            if not file_name:
                raise InvalidRequest("give the file's name: ?name=photo.jpg")
            name = safe_file_name(file_name)
            folder = safe_folder(request.query_params.get("folder", ""))
            spooled: Spooled = await spool(chunks, Path(tmp) / "upload", max_upload_bytes)
            metrics.UPLOAD_BYTES.inc(spooled.size)
            if spooled.size == 0:
                raise InvalidRequest("the request body is empty: send the image's bytes")
            # Refuse a non-image (415) from its magic bytes before paying for a machine;
            # the worker sniffs again and libvips allows only the listed loaders.
            sniff_file(spooled.path)
            answer = await until_disconnect(request, service.convert(spooled, name, folder))
        return JSONResponse(answer.as_json())

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics_endpoint(_request: Request) -> Response:
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def page(_request: Request) -> Response:
        return HTMLResponse(UPLOAD_PAGE)

    routes: list[Any] = [
        Route("/", page),
        Route("/v1/images", post_image, methods=["POST"]),
        Route("/healthz", healthz),
        Route("/metrics", metrics_endpoint),
    ]
    if files_root is not None:
        files_root.mkdir(parents=True, exist_ok=True)
        routes.append(Mount("/files", app=StaticFiles(directory=files_root), name="files"))

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if on_startup:
            await on_startup()
        try:
            yield
        finally:
            if on_shutdown:
                await on_shutdown()

    return Starlette(
        routes=routes,
        middleware=[Middleware(BodyLimit, limit=max_upload_bytes)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
