"""The stored images after their upload: GET /v1/images/{id} (the upload's answer again, from the
set's manifest, no machine), GET /v1/images (a folder's images, newest first, a page at a time)
and DELETE /v1/images/{id} (every object of the set in every store, manifest first:
`uplodr.storage.removal`).

Who may do what (docs/security.md, "Images after their upload"):

- with gateway tokens, reading and listing need a token whose prefixes cover the image's folder
  (a token bound to `blog/` neither reads nor lists `shop/`; listing the root needs a token
  allowed everywhere); without tokens the gateway listens on loopback only, and whoever may upload
  there may read and list, as they could read the store's folder;
- a delete always needs a credential, also on an open gateway: the image's own delete token
  in the `Uplodr-Delete-Token` header (a header, never the URL: URLs are logged by proxies and
  kept in browser history), or a gateway token whose prefixes cover the image's folder. Both are
  checked from the id alone, before any store is read, so a refusal says nothing about whether
  the image exists.

A repeated delete of an image already gone is 404 `not_found`, as Kubernetes answers a delete of
what is gone: the first 204 said it is gone, the 404 says there was nothing left to do, and either
way nothing of it remains. A delete that a store outage interrupted answers 503; what it deleted
stays deleted, and a retry finds the rest by listing the set's keys (204).
"""

from __future__ import annotations

import logging
from typing import Final

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from uplodr import answer
from uplodr.errors import InvalidRequest, NotFound, Unauthenticated
from uplodr.gateway.answers import answer_json, stored
from uplodr.gateway.delete_tokens import DeleteTokens
from uplodr.gateway.query import refuse_unknown_params
from uplodr.gateway.tokens import Token, Tokens
from uplodr.names import safe_folder
from uplodr.storage import Publisher
from uplodr.storage.catalog import ImageRef, list_page, read_image
from uplodr.storage.removal import delete_image

log = logging.getLogger("uplodr.gateway")

DELETE_TOKEN_HEADER: Final = "Uplodr-Delete-Token"  # noqa: S105 (a header's name)
DEFAULT_PAGE: Final = 50
MAX_PAGE: Final = 1000
LIST_PARAMS: Final = ("folder", "cursor", "limit")


def image_ref(request: Request, publisher: Publisher) -> ImageRef:
    """The path's image id, decoded (400 `invalid_request` when it is not one)."""
    return ImageRef.from_id(
        request.path_params["image_id"], digest_keys=publisher.key_mode == "digest"
    )


def reader(tokens: Tokens, authorization: str, folder: str) -> Token | None:
    """Who reads `folder`: None on a gateway without tokens; otherwise the request's token,
    which must cover the folder (401 without a known one, 403 outside its prefixes)."""
    token = tokens.for_upload(authorization)
    if token is not None:
        token.check_folder(folder, "read")
    return token


def page_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE
    shown = raw if len(raw) <= 20 else raw[:19] + "…"
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise InvalidRequest(f"limit must be a whole number from 1 to {MAX_PAGE}, not {shown!r}")
    return int(raw)


def deleter(request: Request, tokens: Tokens, delete_tokens: DeleteTokens) -> str:
    """Who deletes the path's image — its delete token, or a gateway token covering its
    folder — named for the log (never a secret); 401/403 otherwise. Decided from the id alone,
    before it is decoded: a request without a credential learns nothing, not even whether the
    id is well formed."""
    image_id = request.path_params["image_id"]
    given = request.headers.get(DELETE_TOKEN_HEADER)
    if given is not None:
        if not delete_tokens.matches(image_id, given):
            raise Unauthenticated(f"the {DELETE_TOKEN_HEADER} header is not this image's token")
        return "its delete token"
    if not tokens.required:
        raise Unauthenticated(
            f"deleting an image needs its delete token in the {DELETE_TOKEN_HEADER} header"
        )
    token = tokens.for_upload(request.headers.get("authorization", ""))
    if token is None:  # for_upload raises first when tokens are required; never reached
        raise Unauthenticated("deleting an image needs its delete token or a gateway token")
    token.check_folder(
        image_ref(request, request.app.state.gateway.service.publisher).folder, "delete in"
    )
    return f"token {token.name}"


async def get_image(request: Request) -> Response:
    gateway = request.app.state.gateway
    publisher: Publisher = gateway.service.publisher
    refuse_unknown_params(request, ())
    ref = image_ref(request, publisher)
    reader(gateway.tokens, request.headers.get("authorization", ""), ref.folder)
    found = await read_image(publisher.primary, ref)
    if found is None:
        raise NotFound("no image has this id (never stored, or deleted)")
    return JSONResponse(answer_json(stored(publisher.from_manifest(found.manifest), ref)))


async def list_images(request: Request) -> Response:
    gateway = request.app.state.gateway
    publisher: Publisher = gateway.service.publisher
    refuse_unknown_params(request, LIST_PARAMS)
    query = request.query_params
    folder = safe_folder(query.get("folder", ""))
    reader(gateway.tokens, request.headers.get("authorization", ""), folder)
    limit = page_limit(query.get("limit"))
    page = await list_page(
        publisher.primary,
        folder,
        query.get("cursor"),
        limit,
        digest_keys=publisher.key_mode == "digest",
    )
    images = tuple(stored(publisher.from_manifest(i.manifest), i.ref) for i in page.images)
    listing = answer.ImageList(images, page.cursor)
    body = msgspec.to_builtins(listing)
    body["images"] = [answer_json(image) for image in images]  # no `job` key, as GET gives
    return JSONResponse(body)


async def delete_image_route(request: Request) -> Response:
    gateway = request.app.state.gateway
    publisher: Publisher = gateway.service.publisher
    refuse_unknown_params(request, ())
    who = deleter(request, gateway.tokens, gateway.delete_tokens)
    ref = image_ref(request, publisher)
    if not await delete_image(publisher.stores, ref):
        raise NotFound("no image has this id (never stored, or deleted already)")
    log.info("image %s in %r deleted (by %s)", ref.id, ref.folder, who)
    return Response(status_code=204)
