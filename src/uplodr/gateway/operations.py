"""What each route of the gateway takes and answers, as data: the OpenAPI document
(/openapi.json) is made from these, and the routes in `uplodr.gateway.app` carry them.

Kept apart from the handlers so that the handlers read as what they do; the descriptions here
are what an integrator in another language reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Final

from uplodr.answer import (
    Conversion,
    ErrorAnswer,
    Health,
    ImageList,
    Presets,
    ReadinessReport,
    Rebuild,
)
from uplodr.errors import (
    Busy,
    CorruptImage,
    HeadersTooLarge,
    InvalidRequest,
    LimitExceeded,
    NotFound,
    ProviderError,
    StorageUnavailable,
    TooLarge,
    UnsupportedImage,
    UploadTimeout,
    UplodrError,
    UriTooLong,
    WorkerUnavailable,
)
from uplodr.gateway.openapi import Operation, Param, json_content
from uplodr.markup import MAX_ALT_CHARS
from uplodr.names import MAX_FOLDER_CHARS, MAX_NAME_CHARS
from uplodr.preset import OriginalMode

# ?original= as the API spells it -> the mode of uplodr.preset (absent: as the preset says).
ORIGINAL_CHOICES: Final[dict[str, OriginalMode]] = {"keep": "keep", "only": "only", "drop": "drop"}


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
    description="The body is the image: raw bytes (any content type but multipart), or a multipart"
    " form with the image in the field `file`. Bytes that are not JPEG, PNG, WebP, "
    "GIF, AVIF or HEIF are refused (415) before any machine is created. The same bytes"
    " converted before in the same folder under the same name are answered from "
    "storage (`deduplicated`, no `job`) — the same answer, with the same preset and "
    "original choice. `html` is the `<picture>` markup of the variants. A query "
    "parameter not listed here is refused (400 `invalid_request`, naming it), never "
    "ignored. Admission comes before the body: with tokens, a folder outside the "
    "token's prefixes is refused (403 `forbidden`), and past the gateway's (or the "
    "token's) bound of uploads in flight or its spool budget the answer is 503 `busy` "
    "with `Retry-After` before one byte of the body is read. A body that does not "
    "arrive within the gateway's body deadline is refused (408 `upload_timeout`).",
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
        UploadTimeout,
        UriTooLong,
        HeadersTooLarge,
        UnsupportedImage,
        CorruptImage,
        LimitExceeded,
        StorageUnavailable,
        WorkerUnavailable,
        Busy,
        ProviderError,
        UplodrError,
    ),
    guard="uploads",
)
PRESETS = Operation(
    summary="The presets a request may name with ?preset=, the default first",
    answer=Presets,
)


def convert_operation(preset_names: Sequence[str]) -> Operation:
    """POST /v1/images of a gateway with these presets (?preset= lists their names)."""
    return replace(CONVERT, params=(NAME, FOLDER, preset_param(preset_names), ORIGINAL, ALT))


# The query parameters POST /v1/images takes: any other is refused, never ignored (a misspelt
# `?foldr=` once stored into the root folder and answered 200).
UPLOAD_PARAMS: Final[tuple[str, ...]] = tuple(p.name for p in convert_operation(()).params)


IMAGE_ID = Param(
    "image_id",
    "The image's id, `id` of its upload's answer.",
    where="path",
    schema={"type": "string", "pattern": "^img_[A-Za-z0-9_-]+$", "maxLength": 600},
)
GET_IMAGE = Operation(
    summary="An image's stored answer, from its manifest (no machine)",
    description="The answer its upload got — variants, size, placeholder, `<picture>` markup "
    "with the upload's alt text — with `deduplicated` true, no timings, no job and no "
    "`delete_token` (that is given once, to the upload that stored the set). With tokens, "
    "the token's prefixes must cover the image's folder.",
    params=(IMAGE_ID,),
    answer=Conversion,
    errors=(InvalidRequest, NotFound, UriTooLong, HeadersTooLarge, StorageUnavailable),
    guard="uploads",
)
LIST_IMAGES = Operation(
    summary="The stored images under a folder (its subfolders too), newest first, a page at a time",
    description="Each image as GET /v1/images/{id} answers it. `next_cursor` is null after the "
    "last page. With tokens, the token's prefixes must cover the folder (the root: a token "
    "allowed everywhere).",
    params=(
        replace(FOLDER, description="The folder to list (with its subfolders); empty: all."),
        Param("cursor", "`next_cursor` of the page before; left out: the first page."),
        Param(
            "limit",
            "Images per page (default 50).",
            schema={"type": "integer", "minimum": 1, "maximum": 1000},
        ),
    ),
    answer=ImageList,
    errors=(InvalidRequest, UriTooLong, HeadersTooLarge, StorageUnavailable),
    guard="uploads",
)
DELETE_IMAGE = Operation(
    summary="Delete an image everywhere: every variant, width, original and its manifest",
    description="In every store and mirror, the manifest first (a half-deleted set is never "
    "answered as complete). Needs the image's `delete_token` in the `Uplodr-Delete-Token` "
    "header, or (with tokens) a bearer token whose prefixes cover the image's folder — also "
    "on a gateway without tokens. 204 when it is gone; 404 when nothing of it was left (a "
    "repeat); 503 when a store could not be reached: what was deleted stays deleted, and a "
    "retry finishes. Another name's set of the same bytes is never touched.",
    params=(IMAGE_ID,),
    other_responses={"204": {"description": "Deleted from every store"}},
    errors=(InvalidRequest, NotFound, UriTooLong, HeadersTooLarge, StorageUnavailable),
    guard="delete",
)
HEALTHZ = Operation(summary="Liveness: the gateway answers", answer=Health, tag="operations")
READYZ = Operation(
    summary="Readiness: every store writable and the provider reachable",
    description="For load balancers and Fly health checks: 200 while a job can run; 503 with "
    "`error` naming the failed check (`store`, `provider`), what it checked and the kind of "
    "failure (an error code, or no answer) while it cannot — never the failure's own text, "
    "which goes to the gateway's log. Results are kept for 2 s; each check gives up after 4 s.",
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
    summary="Prometheus metrics: uploads by outcome, errors by code, phase timings, machines, pool",
    description="Needs a bearer token whenever the gateway has tokens: the metrics token "
    "(`--metrics-token`) when one is set — then an upload token is refused (403) — otherwise "
    "any upload token.",
    answer={"text/plain": {"schema": {"type": "string"}}},
    guard="metrics",
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
            "description": "No such file (code `not_found`)",
            "content": json_content(ErrorAnswer),
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


# POST /v1/rebuilds: the JSON body's largest size (three short fields).
REBUILD_BODY_BYTES: Final = 4096
REBUILD_ERRORS: Final[tuple[type[UplodrError], ...]] = (
    InvalidRequest,
    TooLarge,
    UriTooLong,
    HeadersTooLarge,
)


def rebuild_operation(preset_names: Sequence[str]) -> Operation:
    """POST /v1/rebuilds of a gateway with these presets."""
    return Operation(
        summary="Convert every image under a folder again with another preset",
        description="Every set under `folder` (its subfolders too) whose original was kept is "
        "converted again with `preset` on the gateway's own machines, the original kept in the "
        "new set; a set already in that preset is skipped without a machine (a rebuild run "
        "again resumes), a set without an original is listed in `skipped` (never re-encoded "
        "from a variant). With `replace`, each old set is deleted from every store once its "
        "new set is published. Answered 202 at once; GET /v1/rebuilds/{rebuild_id} says how "
        "far it got. Rebuilds are kept in the gateway's memory: a restart forgets them (start "
        "it again: it resumes). With tokens, the token's prefixes must cover `folder`; a "
        "gateway without tokens listens only on loopback, where anyone may upload (and run "
        "`uplodr rebuild` on the same store) already.",
        body={
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "folder": FOLDER.schema,
                            "preset": {"type": "string", "enum": list(preset_names)},
                            "replace": {"type": "boolean", "default": False},
                        },
                        "required": ["folder", "preset"],
                        "additionalProperties": False,
                    }
                }
            },
        },
        other_responses={
            "202": {
                "description": "Started: how far it got so far",
                "content": json_content(Rebuild),
            }
        },
        errors=REBUILD_ERRORS,
        guard="uploads",
    )


REBUILD_STATUS = Operation(
    summary="How far a rebuild got",
    description="Its state (`running`, `stopping`, `done`, `stopped` when the gateway shut down "
    "first, `failed` when the folder could not be listed), its counts, the sets skipped for "
    "want of an original and each failure in one line. Unknown after a restart (404).",
    params=(Param("rebuild_id", "The `id` POST /v1/rebuilds answered.", where="path"),),
    answer=Rebuild,
    errors=(NotFound, UriTooLong, HeadersTooLarge),
    guard="uploads",
)
