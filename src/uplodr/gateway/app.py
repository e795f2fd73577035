"""The HTTP API: POST /v1/images, GET /v1/presets, GET /healthz, GET /metrics, the upload page,
the local store's files under /files, and the OpenAPI document of all of them (/openapi.json,
/docs), made from the same route table. Every error is JSON `{"error", "code"}` with the status from
the one table in uplodr.errors, answered by Starlette exception handlers (one per family of
errors); tracebacks go to the log only."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import mimetypes
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Final, TypeVar

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute
from starlette.staticfiles import StaticFiles

from uplodr import formats
from uplodr.answer import CheckReport, Conversion, Health, PresetInfo, Presets, ReadinessReport
from uplodr.errors import (
    Busy,
    CorruptImage,
    InvalidRequest,
    LimitExceeded,
    ProviderError,
    StorageUnavailable,
    TooLarge,
    Unauthenticated,
    UnsupportedImage,
    UplodrError,
    WorkerUnavailable,
    status_of,
)
from uplodr.gateway import metrics
from uplodr.gateway.answers import answer_json
from uplodr.gateway.body_limit import BodyLimit
from uplodr.gateway.openapi import (
    ApiMount,
    ApiRoute,
    Operation,
    Param,
    json_content,
    openapi_document,
)
from uplodr.gateway.page import DOCS_PAGE, UPLOAD_PAGE
from uplodr.gateway.readiness import Readiness, failed_line
from uplodr.gateway.service import Choice, ConversionService
from uplodr.gateway.spool import Spooled, spool
from uplodr.names import MAX_FOLDER_CHARS, MAX_NAME_CHARS, safe_file_name, safe_folder
from uplodr.preset import OriginalMode
from uplodr.sniff import sniff_file

log = logging.getLogger("uplodr.gateway")
# /files serves the local store with the types of the one format table (Python's own table
# lacks AVIF and HEIF on some systems, and would then serve them as octet-stream).
for _format in formats.REGISTRY:
    mimetypes.add_type(_format.mime_type, f".{_format.ext}")

T = TypeVar("T")
MULTIPART_CHUNK = 256 * 1024
# ?alt= is a description of the image for people who cannot see it: a sentence or two (WCAG
# advises short text; a longer description belongs in the page). The cap keeps the answer's
# markup and the gateway's work bounded.
MAX_ALT_CHARS: Final = 1000
# ?original= as the API spells it -> the mode of uplodr.preset (absent: as the preset says).
ORIGINAL_CHOICES: Final[dict[str, OriginalMode]] = {"keep": "keep", "only": "only", "drop": "drop"}


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


def request_choice(request: Request, service: ConversionService) -> tuple[Choice, str]:
    """The request's `?preset=`, `?original=` and `?alt=`: the choice (InvalidRequest for an
    unknown preset or original) and the alt text."""
    query = request.query_params
    original = query.get("original")
    if original is not None and original not in ORIGINAL_CHOICES:
        shown = original if len(original) <= 20 else original[:19] + "…"
        raise InvalidRequest(
            f"original must be one of {', '.join(ORIGINAL_CHOICES)}, not {shown!r} "
            "(leave it out to do what the preset says)"
        )
    alt = query.get("alt", "")
    if len(alt) > MAX_ALT_CHARS:
        raise InvalidRequest(f"alt is {len(alt)} characters; at most {MAX_ALT_CHARS}")
    choice = service.choose(
        query.get("preset"), ORIGINAL_CHOICES[original] if original else "preset"
    )
    return choice, alt


async def _multipart_file_chunks(request: Request) -> tuple[str, AsyncIterator[bytes]]:
    try:
        form = await request.form(max_files=1, max_fields=10)
    except HTTPException as error:  # Starlette's own answer would be plain text
        raise InvalidRequest(f"malformed multipart upload: {error.detail}") from None
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


# What each route takes and answers: the OpenAPI document (/openapi.json) is made from these.
# The schemas state what the gateway always refuses (uplodr.names enforces more, e.g. no `..`).
NAME = Param(
    "name",
    "The file's name, e.g. photo.jpg: its stem names the stored variants. Required with a raw "
    "body; for a multipart upload it defaults to the part's file name. No `/`, `\\` or "
    "control characters.",
    schema={
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_NAME_CHARS,
        "pattern": r"^[^/\\\x00-\x1f\x7f]*$",
    },
)
FOLDER = Param(
    "folder",
    "Where the variants go, e.g. blog/2026: `/`-separated parts of letters, digits, `-`, `_` "
    "and `.`, each starting with a letter or digit, at most 8 deep; empty is the store's root.",
    schema={
        "type": "string",
        "maxLength": MAX_FOLDER_CHARS,
        "pattern": r"^(?!/)[^\\\x00-\x1f\x7f]*$",
    },
)
ORIGINAL = Param(
    "original",
    "What to store of the upload itself: `keep` — the uploaded bytes as they came, beside the "
    "variants (`role` original; **with their metadata, camera and GPS location included**); "
    "`only` — nothing but those bytes (no variant, no placeholder, `html` null); `drop` — no "
    "original whatever the preset says. Left out: as the preset says (`keep_original`).",
    schema={"type": "string", "enum": list(ORIGINAL_CHOICES)},
)
ALT = Param(
    "alt",
    "The image's text alternative for the `<img alt>` of `html` (escaped; control characters "
    "dropped). Default: empty.",
    schema={"type": "string", "maxLength": MAX_ALT_CHARS},
)


def preset_param(names: Sequence[str]) -> Param:
    return Param(
        "preset",
        "A named preset of this gateway (GET /v1/presets); `default` when left out. The preset "
        "and the original choice are part of the stored files' keys, so a repeat is answered "
        "from storage only with the same ones.",
        schema={"type": "string", "enum": list(names)},
    )


BINARY = {"type": "string", "format": "binary"}
CONVERT = Operation(
    summary="Convert an image to web variants and store them",
    description="The body is the image: raw bytes (any content type but multipart), or a "
    "multipart form with the image in the field `file`. Bytes that are not JPEG, PNG, WebP, "
    "GIF, AVIF or HEIF are refused (415) before any machine is created. The same bytes "
    "converted before in the same folder under the same name are answered from storage "
    "(`deduplicated`, no `job`) — the same answer, with the same preset and original choice. "
    "`html` is the `<picture>` markup of the variants.",
    params=(NAME, FOLDER),
    body={
        "required": True,
        "content": {
            "application/octet-stream": {"schema": BINARY},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": BINARY},
                    "required": ["file"],
                }
            },
        },
    },
    answer=Conversion,
    errors=(
        InvalidRequest,
        TooLarge,
        UnsupportedImage,
        CorruptImage,
        LimitExceeded,
        StorageUnavailable,
        WorkerUnavailable,
        Busy,
        ProviderError,
        UplodrError,
    ),
    authenticated=True,
)
PRESETS = Operation(
    summary="The presets a request may name with ?preset=, the default first",
    answer=Presets,
)


def convert_operation(preset_names: Sequence[str]) -> Operation:
    """POST /v1/images of a gateway with these presets (?preset= lists their names)."""
    return replace(CONVERT, params=(NAME, FOLDER, preset_param(preset_names), ORIGINAL, ALT))


HEALTHZ = Operation(summary="Liveness: the gateway answers", answer=Health, tag="operations")
READYZ = Operation(
    summary="Readiness: every store writable and the provider reachable",
    description="For load balancers and Fly health checks: 200 while a job can run; 503 with "
    "`error` naming the failed check (`store`, `provider`) while it cannot. Results are kept "
    "for 2 s; each check gives up after 4 s.",
    answer=ReadinessReport,
    other_responses={
        "503": {
            "description": "Not ready: a check failed",
            "content": json_content(ReadinessReport),
        }
    },
    tag="operations",
)
METRICS = Operation(
    summary="Prometheus metrics: jobs by outcome, errors by code, phase timings, machines, cost",
    answer={"text/plain": {"schema": {"type": "string"}}},
    tag="operations",
)
PAGE = Operation(
    summary="The upload page",
    answer={"text/html": {"schema": {"type": "string"}}},
    tag="pages",
)
FILES = Operation(
    summary="A stored file of the local store (only when the primary store is a local folder)",
    params=(Param("key", "The file's key, as in a variant's URL.", where="path"),),
    answer={"*/*": {"schema": BINARY}},
    other_responses={
        "404": {
            "description": "No such file",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
    tag="files",
)
OPENAPI = Operation(
    summary="This document (OpenAPI 3.1)",
    answer={"application/json": {"schema": {"type": "object"}}},
    tag="pages",
)
DOCS = Operation(
    summary="This document for people",
    answer={"text/html": {"schema": {"type": "string"}}},
    tag="pages",
)


def create_app(
    service: ConversionService,
    *,
    tokens: Sequence[str],
    max_upload_bytes: int,
    files_root: Path | None,
    spool_dir: Path | None = None,
    readiness: Readiness | None = None,
    on_startup: Callable[[], Awaitable[None]] | None = None,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
) -> Starlette:
    async def post_image(request: Request) -> Response:
        check_token(request, tokens)
        content_type = request.headers.get("content-type", "")
        with tempfile.TemporaryDirectory(prefix="uplodr-upload-", dir=spool_dir) as tmp:
            if content_type.startswith("multipart/form-data"):
                part_name, chunks = await _multipart_file_chunks(request)
                # An explicit ?name= wins, even an empty one (which is refused below).
                file_name = request.query_params.get("name", part_name)
            else:
                file_name = request.query_params.get("name", "")
                chunks = request.stream()
            if "name" not in request.query_params and not file_name:
                raise InvalidRequest("give the file's name: ?name=photo.jpg")
            name = safe_file_name(file_name)
            folder = safe_folder(request.query_params.get("folder", ""))
            choice, alt = request_choice(request, service)
            spooled: Spooled = await spool(chunks, Path(tmp) / "upload", max_upload_bytes)
            metrics.UPLOAD_BYTES.inc(spooled.size)
            if spooled.size == 0:
                raise InvalidRequest("the request body is empty: send the image's bytes")
            # Refuse a non-image (415) from its magic bytes before paying for a machine;
            # the worker sniffs again and libvips allows only the listed loaders.
            sniff_file(spooled.path)
            answer = await until_disconnect(
                request, service.convert(spooled, name, folder, choice, alt)
            )
        return JSONResponse(answer_json(answer))

    presets_answer = msgspec.to_builtins(
        Presets(
            tuple(
                PresetInfo(
                    name=name,
                    formats=preset.formats,
                    widths=preset.widths,
                    max_long_side=preset.max_long_side,
                    thumbnail_width=preset.thumbnail_width,
                    keep_original=preset.keep_original,
                )
                for name, preset in service.presets.items()
            )
        )
    )

    async def presets(_request: Request) -> Response:
        return JSONResponse(presets_answer)

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> Response:
        results = await readiness.results() if readiness else ()
        checks = tuple(CheckReport(r.name, r.ok, r.message) for r in results)
        failed = failed_line(results)
        if failed:
            report = ReadinessReport("unready", checks, error=failed, code="unready")
            return JSONResponse(msgspec.to_builtins(report), status_code=503)
        return JSONResponse(msgspec.to_builtins(ReadinessReport("ready", checks)))

    async def metrics_endpoint(_request: Request) -> Response:
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def page(_request: Request) -> Response:
        return HTMLResponse(UPLOAD_PAGE)

    routes: list[BaseRoute] = [
        ApiRoute("/", page, operation=PAGE),
        ApiRoute(
            "/v1/images",
            post_image,
            methods=["POST"],
            operation=replace(
                CONVERT,
                params=(*CONVERT.params, preset_param(list(service.presets)), ORIGINAL, ALT),
            ),
        ),
        ApiRoute("/v1/presets", presets, operation=PRESETS),
        ApiRoute("/healthz", healthz, operation=HEALTHZ),
        ApiRoute("/readyz", readyz, operation=READYZ),
        ApiRoute("/metrics", metrics_endpoint, operation=METRICS),
    ]
    if files_root is not None:
        files_root.mkdir(parents=True, exist_ok=True)
        files = StaticFiles(directory=files_root)
        routes.append(ApiMount("/files", app=files, operation=FILES, param="key"))

    @functools.cache
    def document() -> dict[str, Any]:
        # From the app's own route table, once: what is served is what is documented.
        return openapi_document(routes, authenticated=bool(tokens))

    async def openapi(_request: Request) -> Response:
        return JSONResponse(document())

    async def docs(_request: Request) -> Response:
        return HTMLResponse(DOCS_PAGE)

    routes += [
        ApiRoute("/openapi.json", openapi, operation=OPENAPI),
        ApiRoute("/docs", docs, operation=DOCS),
    ]

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
