"""The HTTP API: POST /v1/images, the stored images (GET and DELETE /v1/images/{id}, GET
/v1/images: `uplodr.gateway.images`), POST /v1/rebuilds and GET /v1/rebuilds/{id}, GET
/v1/presets, GET /healthz and /readyz, GET /metrics, the upload page, the local store's files
under /files, and the OpenAPI document of all of them (/openapi.json, /docs), made from the
same route table (`routes`; what each route takes and answers is in
`uplodr.gateway.operations`). Handlers are plain functions that read the app's `GatewayState`.
Every error is JSON `{"error", "code"}` with the status from the one table in uplodr.errors,
answered by Starlette exception handlers (one per family of errors); tracebacks go to the log
only."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import mimetypes
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
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
from starlette.routing import BaseRoute, Route

from uplodr import formats
from uplodr.answer import CheckReport, PresetInfo, Presets, ReadinessReport
from uplodr.errors import (
    Busy,
    InvalidRequest,
    TooLarge,
    UploadTimeout,
    UplodrError,
    status_of,
)
from uplodr.gateway import metrics
from uplodr.gateway.admission import Admission, Ticket
from uplodr.gateway.answers import answer_json
from uplodr.gateway.body_limit import BodyLimit
from uplodr.gateway.delete_tokens import DeleteTokens
from uplodr.gateway.docs_page import docs_page
from uplodr.gateway.files import StoreFiles
from uplodr.gateway.head_limit import HeadLimit
from uplodr.gateway.images import delete_image_route, get_image, list_images
from uplodr.gateway.openapi import ApiMount, ApiRoute, openapi_document
from uplodr.gateway.operations import (
    DELETE_IMAGE,
    DOCS,
    FILES,
    GET_IMAGE,
    HEALTHZ,
    LIST_IMAGES,
    METRICS,
    OPENAPI,
    ORIGINAL_CHOICES,
    PAGE,
    PRESETS,
    READYZ,
    REBUILD_BODY_BYTES,
    REBUILD_STATUS,
    UPLOAD_PARAMS,
    convert_operation,
    rebuild_operation,
)
from uplodr.gateway.page import FAVICON, UPLOAD_PAGE
from uplodr.gateway.query import refuse_unknown_params
from uplodr.gateway.readiness import Readiness, failed_line
from uplodr.gateway.rebuild import Rebuilds
from uplodr.gateway.service import Choice, ConversionService
from uplodr.gateway.spool import Spooled, spool, spool_folder
from uplodr.gateway.tokens import Tokens
from uplodr.markup import MAX_ALT_CHARS
from uplodr.names import safe_file_name, safe_folder
from uplodr.sniff import sniff_file

log = logging.getLogger("uplodr.gateway")
# /files serves the local store with the types of the one format table (Python's own table
# lacks AVIF and HEIF on some systems, and would then serve them as octet-stream).
for _format in formats.REGISTRY:
    mimetypes.add_type(_format.mime_type, f".{_format.ext}")

T = TypeVar("T")
MULTIPART_CHUNK = 256 * 1024


class ClientGone(Exception):
    """The HTTP client hung up before its answer was ready."""


def error_response(request: Request, error: UplodrError) -> JSONResponse:
    metrics.count_error(request.method, request.url.path, error.code)
    headers: dict[str, str] = {}
    if isinstance(error, (TooLarge, UploadTimeout)):
        # A body cut off at the limit (or its deadline) was not read to its end: the connection
        # cannot carry another request, so say it is closed (the server closes it after this
        # answer).
        headers["connection"] = "close"
    if isinstance(error, Busy):
        headers["retry-after"] = str(error.retry_after)
    return JSONResponse(
        {"error": str(error), "code": error.code},
        status_code=status_of(error).http,
        headers=headers or None,
    )


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
    token = getattr(request.state, "token", None)
    if token is not None:  # its name, never its secret
        metrics.TOKEN_UPLOADS.labels(token=token, code=error.code).inc()
        log.info("upload refused (token %s): %s (%s)", token, error, error.code)
    elif request.method == "POST":
        log.info("upload refused: %s (%s)", error, error.code)
    else:
        log.info("%s %s refused: %s (%s)", request.method, request.url.path[:80], error, error.code)
    return error_response(request, error)


async def client_gone(request: Request, error: Exception) -> Response:
    """The client hung up: its job was cancelled (and its machine destroyed). Nobody reads this
    answer; 499 is what the access log and the metrics see."""
    metrics.UPLOADS.labels(outcome="client_gone").inc()
    log.info("client hung up; job cancelled")
    return Response(status_code=499)


# Starlette's own refusals (no such route, a method the route does not take, a missing file of
# /files) as the same JSON shape as every other error.
HTTP_CODES: Final[dict[int, str]] = {404: "not_found", 405: "method_not_allowed"}


async def http_refusal(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    code = HTTP_CODES.get(error.status_code, "invalid_request")
    if error.status_code == 404:
        message = f"nothing at {request.url.path[:200]!r}"
    elif error.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path[:200]!r}"
    else:
        message = " ".join(str(error.detail).split())[:200]
    metrics.count_error(request.method, request.url.path, code)
    return JSONResponse(
        {"error": message, "code": code}, status_code=error.status_code, headers=error.headers
    )


async def internal_error(request: Request, error: Exception) -> Response:
    """Anything unexpected: a one-line JSON 500; the traceback goes to the log only (Starlette
    re-raises the exception after this answer and the server logs it)."""
    return error_response(request, UplodrError("internal error"))


EXCEPTION_HANDLERS: dict[Any, Any] = {
    UplodrError: refused,
    ClientGone: client_gone,
    ClientDisconnect: client_gone,
    HTTPException: http_refusal,
    Exception: internal_error,
}


@dataclass(frozen=True)
class GatewayState:
    """What the handlers read (the app's `state.gateway`): one per app."""

    service: ConversionService
    tokens: Tokens
    delete_tokens: DeleteTokens
    admission: Admission
    max_upload_bytes: int
    body_timeout: float  # seconds a body may take to arrive (408 after)
    spool_dir: Path | None
    readiness: Readiness | None
    presets_answer: Any  # GET /v1/presets, made once
    rebuilds: Rebuilds
    document: dict[str, Any] = field(default_factory=dict)  # /openapi.json, made once
    docs_page: str = ""  # /docs: the document as HTML, made once


def _state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


def declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


async def post_image(request: Request) -> Response:
    """Everything that can refuse an upload without its body comes first — its token (401), its
    name and folder (400), whether the token may write there (403), admission (503 `busy`) —
    then the body is read under the body deadline (408) and spooled within the spool budget."""
    gateway = _state(request)
    token = gateway.tokens.for_upload(request.headers.get("authorization", ""))
    if token is not None:
        request.state.token = token.name
    refuse_unknown_params(request, UPLOAD_PARAMS)
    query = request.query_params
    folder = safe_folder(query.get("folder", ""))
    if token is not None:
        token.check_folder(folder)
    choice, alt = request_choice(request, gateway.service)
    multipart = request.headers.get("content-type", "").startswith("multipart/form-data")
    if not multipart:
        if "name" not in query:
            raise InvalidRequest("give the file's name: ?name=photo.jpg")
        safe_file_name(query["name"])  # refused (400) before a slot is taken
    with gateway.admission.admit(token, declared_length(request)) as ticket:
        async with spool_folder(gateway.spool_dir) as tmp:
            try:
                async with asyncio.timeout(gateway.body_timeout):
                    file_name, spooled = await receive_body(request, tmp, multipart, ticket)
            except TimeoutError:
                raise UploadTimeout(
                    f"the upload's body did not arrive within {gateway.body_timeout:g} s "
                    "(the gateway's body deadline)"
                ) from None
            name = safe_file_name(file_name)
            # Refuse a non-image (415) from its magic bytes before paying for a machine;
            # the worker sniffs again and libvips allows only the listed loaders.
            await asyncio.to_thread(sniff_file, spooled.path)
            answer = await until_disconnect(
                request, gateway.service.convert(spooled, name, folder, choice, alt)
            )
    if token is not None:  # its name, never its secret
        metrics.TOKEN_UPLOADS.labels(token=token.name, code="ok").inc()
        log.info("upload %s in %r by token %s: answered", name.file_name, folder, token.name)
    if not answer.deduplicated and answer.id is not None:
        # Only to the upload that stored the set: a repeat of the same bytes (anyone holding
        # them) must not be a way to get the right to delete another person's upload.
        answer = dataclasses.replace(
            answer, delete_token=gateway.delete_tokens.for_image(answer.id)
        )
    return JSONResponse(answer_json(answer))


async def receive_body(
    request: Request, folder: Path, multipart: bool, ticket: Ticket
) -> tuple[str, Spooled]:
    """The upload's file name and its body, spooled into `folder`."""
    query = request.query_params
    if multipart:
        part_name, chunks = await _multipart_file_chunks(request)
        # An explicit ?name= wins, even an empty one (which is refused by the caller).
        file_name = query.get("name", part_name)
        if "name" not in query and not file_name:
            raise InvalidRequest("give the file's name: ?name=photo.jpg")
    else:
        file_name, chunks = query["name"], request.stream()
    gateway = _state(request)
    spooled = await spool(chunks, folder / "upload", gateway.max_upload_bytes, ticket.reserve)
    metrics.UPLOAD_BYTES.inc(spooled.size)
    if spooled.size == 0:
        raise InvalidRequest("the request body is empty: send the image's bytes")
    return file_name, spooled


def presets_answer(service: ConversionService) -> Any:
    return msgspec.to_builtins(
        Presets(
            tuple(
                PresetInfo(
                    name=name,
                    formats=preset.formats,
                    widths=preset.widths,
                    max_long_side=preset.max_long_side,
                    thumbnail_width=preset.thumbnail_width,
                    keep_original=preset.keep_original,
                    quality_metric=preset.quality.metric if preset.quality else None,
                    quality_target=preset.quality.target if preset.quality else None,
                    format_margin=preset.format_margin if preset.quality else None,
                )
                for name, preset in service.presets.items()
            )
        )
    )


class RebuildBody(msgspec.Struct, forbid_unknown_fields=True):
    """POST /v1/rebuilds's body (its schema: `operations.rebuild_operation`)."""

    folder: str
    preset: str
    replace: bool = False


async def small_body(request: Request, limit: int) -> bytes:
    """A short request body, refused (413) as soon as it passes `limit` bytes."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge.over_limit("the request body", limit)
    return bytes(body)


async def post_rebuild(request: Request) -> Response:
    """Start a rebuild (`gateway.rebuild`) of a folder the caller's token covers: 202 at once."""
    gateway = _state(request)
    token = gateway.tokens.for_upload(request.headers.get("authorization", ""))
    refuse_unknown_params(request, ())
    raw = await small_body(request, REBUILD_BODY_BYTES)
    try:
        body = msgspec.json.decode(raw, type=RebuildBody)
    except msgspec.MsgspecError as error:
        raise InvalidRequest(f"rebuild request: {' '.join(str(error).split())[:200]}") from None
    folder = safe_folder(body.folder)
    if token is not None:
        token.check_folder(folder)
    progress = gateway.rebuilds.start(folder, body.preset, body.replace)
    if token is not None:
        log.info("rebuild %s of %r by token %s started", progress.id, folder, token.name)
    return JSONResponse(msgspec.to_builtins(progress.as_answer()), status_code=202)


async def get_rebuild(request: Request) -> Response:
    gateway = _state(request)
    token = gateway.tokens.for_upload(request.headers.get("authorization", ""))
    refuse_unknown_params(request, ())
    progress = gateway.rebuilds.get(request.path_params["rebuild_id"])
    if token is not None:
        token.check_folder(progress.folder)
    return JSONResponse(msgspec.to_builtins(progress.as_answer()))


async def presets(request: Request) -> Response:
    return JSONResponse(_state(request).presets_answer)


async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    readiness = _state(request).readiness
    results = await readiness.results() if readiness else ()
    checks = tuple(CheckReport(r.name, r.ok, r.message) for r in results)
    failed = failed_line(results)
    if failed:
        report = ReadinessReport("unready", checks, error=failed, code="unready")
        return JSONResponse(msgspec.to_builtins(report), status_code=503)
    return JSONResponse(msgspec.to_builtins(ReadinessReport("ready", checks)))


async def metrics_endpoint(request: Request) -> Response:
    _state(request).tokens.check_metrics(request.headers.get("authorization", ""))
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)


async def page(_request: Request) -> Response:
    return HTMLResponse(UPLOAD_PAGE)


async def favicon(_request: Request) -> Response:
    return Response(
        FAVICON, media_type="image/svg+xml", headers={"cache-control": "public, max-age=86400"}
    )


async def openapi(request: Request) -> Response:
    return JSONResponse(_state(request).document)


async def docs(request: Request) -> Response:
    return HTMLResponse(_state(request).docs_page)


def routes(service: ConversionService, files_root: Path | None) -> list[BaseRoute]:
    """The route table: what is served is what is documented."""
    table: list[BaseRoute] = [
        ApiRoute("/", page, operation=PAGE),
        ApiRoute.methods_of(
            metrics.UPLOADS_PATH,
            {
                "POST": (post_image, convert_operation(list(service.presets))),
                "GET": (list_images, LIST_IMAGES),
            },
        ),
        ApiRoute.methods_of(
            "/v1/images/{image_id}",
            {"GET": (get_image, GET_IMAGE), "DELETE": (delete_image_route, DELETE_IMAGE)},
        ),
        ApiRoute(
            "/v1/rebuilds",
            post_rebuild,
            methods=["POST"],
            operation=rebuild_operation(list(service.presets)),
        ),
        ApiRoute("/v1/rebuilds/{rebuild_id}", get_rebuild, operation=REBUILD_STATUS),
        ApiRoute("/v1/presets", presets, operation=PRESETS),
        ApiRoute("/healthz", healthz, operation=HEALTHZ),
        ApiRoute("/readyz", readyz, operation=READYZ),
        ApiRoute("/metrics", metrics_endpoint, operation=METRICS),
    ]
    if files_root is not None:
        files_root.mkdir(parents=True, exist_ok=True)
        files = StoreFiles(directory=files_root)
        table.append(ApiMount("/files", app=files, operation=FILES, param="key"))
    table += [
        ApiRoute("/openapi.json", openapi, operation=OPENAPI),
        ApiRoute("/docs", docs, operation=DOCS),
        # The browser's icon, not part of the API: left out of the document.
        Route("/favicon.ico", favicon),
    ]
    return table


def guards(tokens: Tokens) -> frozenset[str]:
    """The routes' guards that need a bearer token on this gateway (for the OpenAPI document)."""
    uploads = {"uploads", "metrics"} if tokens.required else set()
    return frozenset(uploads | ({"metrics"} if tokens.metrics is not None else set()))


def create_app(
    service: ConversionService,
    *,
    tokens: Tokens,
    admission: Admission,
    max_upload_bytes: int,
    files_root: Path | None,
    delete_tokens: DeleteTokens | None = None,
    body_timeout: float = 60.0,
    spool_dir: Path | None = None,
    readiness: Readiness | None = None,
    on_startup: Callable[[], Awaitable[None]] | None = None,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
) -> Starlette:
    table = routes(service, files_root)
    rebuilds = Rebuilds(service)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if on_startup:
            await on_startup()
        try:
            yield
        finally:
            await rebuilds.aclose()  # before the pool closes under them
            if on_shutdown:
                await on_shutdown()

    app = Starlette(
        routes=table,
        middleware=[Middleware(HeadLimit), Middleware(BodyLimit, limit=max_upload_bytes)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    document = openapi_document(table, guarded=guards(tokens))
    app.state.gateway = GatewayState(
        service=service,
        tokens=tokens,
        # Without a secret given (tests of other parts), one for this app's life only.
        delete_tokens=delete_tokens or DeleteTokens(secrets.token_bytes(32)),
        admission=admission,
        max_upload_bytes=max_upload_bytes,
        body_timeout=body_timeout,
        spool_dir=spool_dir,
        readiness=readiness,
        presets_answer=presets_answer(service),
        rebuilds=rebuilds,
        document=document,
        docs_page=docs_page(document),
    )
    return app
