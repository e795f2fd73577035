"""The OpenAPI 3.1 document of the gateway, built from the routes themselves.

Each route of the app is an `ApiRoute` (or `ApiMount`) that carries an `Operation`: what its
parameters and body are, what it answers, and which uplodr errors it can raise. The document's
paths and methods come from the route table, its schemas from the answer dataclasses in
`uplodr.answer` (through msgspec, the same types the Python client decodes into), and each
error response from the one status table in `uplodr.errors` — so a route cannot exist
undocumented, an error cannot be documented under the wrong status, and the answer schema cannot
drift from the client. (Starlette's own schema support wants hand-written YAML in docstrings;
FastAPI would bring pydantic and a second way of declaring everything for one raw-bytes
endpoint. This module is that much smaller.) The schemathesis run in the tests holds the
running gateway to this document.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp

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
    STATUSES,
    Busy,
    Forbidden,
    TooLarge,
    Unauthenticated,
    UploadTimeout,
    UplodrError,
)

JSON = dict[str, Any]
REF = "#/components/schemas/{name}"
# What the answer dataclasses are called in the document.
SCHEMA_TYPES: tuple[type, ...] = (
    Conversion,
    ErrorAnswer,
    Health,
    ImageList,
    Presets,
    ReadinessReport,
    Rebuild,
)
# An image's own delete token (`uplodr.gateway.delete_tokens`): a header, never in the URL.
DELETE_TOKEN_SCHEME: JSON = {
    "type": "apiKey",
    "in": "header",
    "name": "Uplodr-Delete-Token",
    "description": "The `delete_token` of the upload's answer: deletes that image alone.",
}


@dataclass(frozen=True)
class Param:
    name: str
    description: str
    where: Literal["query", "path"] = "query"
    required: bool = False
    schema: JSON = field(default_factory=lambda: {"type": "string"})


@dataclass(frozen=True)
class Operation:
    """What one route takes and answers. `answer` is a dataclass of uplodr.answer (JSON) or a
    media type → schema map; `errors` are the uplodr errors it can raise besides
    `unauthenticated` and `forbidden`, which a route raises when the tokens of its `guard`
    ("uploads": upload tokens, "metrics": the /metrics guard) are configured, and always with
    the guard "delete" (an image's delete token, or an upload token when there are some)."""

    summary: str
    description: str = ""
    params: tuple[Param, ...] = ()
    body: JSON | None = None
    answer: type | JSON | None = None
    errors: tuple[type[UplodrError], ...] = ()
    other_responses: JSON = field(default_factory=dict)
    guard: str | None = None
    tag: str = "api"


class ApiRoute(Route):
    """A Starlette route that carries its own documentation: one endpoint and its operation, or
    (`ApiRoute.methods_of`) one per method of the same path — one route, so that a method it
    does not take is answered 405 with an `Allow` header naming all of them."""

    def __init__(
        self, path: str, endpoint: Any, *, operation: Operation, methods: list[str] | None = None
    ) -> None:
        super().__init__(path, endpoint, methods=methods)
        self.operations = {method: (endpoint.__name__, operation) for method in self.methods or ()}

    @classmethod
    def methods_of(cls, path: str, handlers: dict[str, tuple[Any, Operation]]) -> ApiRoute:
        """One route of `path` whose requests go to the endpoint of their method."""

        async def endpoint(request: Request) -> Response:
            method = "GET" if request.method == "HEAD" else request.method
            answer: Response = await handlers[method][0](request)
            return answer

        route = cls(path, endpoint, operation=Operation(""), methods=list(handlers))
        route.operations = {m: (h.__name__, op) for m, (h, op) in handlers.items()}
        return route


class ApiMount(Mount):
    """A mounted app (the local store's files) documented as `GET {path}/{param}`."""

    def __init__(self, path: str, app: ASGIApp, *, operation: Operation, param: str) -> None:
        super().__init__(path, app=app)
        self.operation = operation
        self.param = param


def json_content(schema: type | JSON) -> JSON:
    if isinstance(schema, type):
        schema = {"$ref": REF.format(name=schema.__name__)}
    return {"application/json": {"schema": schema}}


def _error_responses(errors: Sequence[type[UplodrError]]) -> JSON:
    codes_by_status: dict[int, list[str]] = defaultdict(list)
    for error in errors:
        status = STATUSES[error.code].http
        if error.code not in codes_by_status[status]:
            codes_by_status[status].append(error.code)
    responses: JSON = {}
    for status, codes in sorted(codes_by_status.items()):
        schema = {
            "allOf": [
                {"$ref": REF.format(name="ErrorAnswer")},
                {"properties": {"code": {"enum": codes}}},
            ]
        }
        response: JSON = {
            "description": "Error: " + ", ".join(f"`{c}`" for c in codes),
            "content": json_content(schema),
        }
        if Busy.code in codes:
            response["headers"] = {
                "Retry-After": {
                    "description": "Sent with `busy`: seconds to wait before trying again.",
                    "schema": {"type": "integer", "minimum": 0},
                }
            }
        if TooLarge.code in codes or UploadTimeout.code in codes:
            response["headers"] = {
                "Connection": {
                    "description": "`close`: the rest of the body was not read.",
                    "schema": {"type": "string"},
                }
            }
        responses[str(status)] = response
    return responses


def _operation(operation: Operation, operation_id: str, guarded: Collection[str]) -> JSON:
    document: JSON = {
        "operationId": operation_id,
        "summary": operation.summary,
        "tags": [operation.tag],
    }
    if operation.description:
        document["description"] = operation.description
    if operation.params:
        document["parameters"] = [
            {
                "name": p.name,
                "in": p.where,
                "required": p.required or p.where == "path",
                "description": p.description,
                "schema": p.schema,
            }
            for p in operation.params
        ]
    if operation.body is not None:
        document["requestBody"] = operation.body
    responses: JSON = {}
    if operation.answer is not None:
        content = (
            json_content(operation.answer)
            if isinstance(operation.answer, type)
            else operation.answer
        )
        responses["200"] = {"description": "OK", "content": content}
    responses.update(operation.other_responses)
    errors = list(operation.errors)
    if operation.guard == "delete":
        document["security"] = [{"delete_token": []}]
        if "uploads" in guarded:
            document["security"].append({"bearer": []})
        errors += [Unauthenticated, Forbidden]
    elif operation.guard in guarded:
        document["security"] = [{"bearer": []}]
        errors += [Unauthenticated, Forbidden]
    responses.update(_error_responses(errors))
    document["responses"] = dict(sorted(responses.items()))
    return document


def openapi_document(routes: Sequence[BaseRoute], *, guarded: Collection[str] = ()) -> JSON:
    """The document of these routes; `guarded`: the guards (`Operation.guard`) that require a
    bearer token on this gateway."""
    paths: dict[str, JSON] = defaultdict(dict)
    schemes: JSON = {}
    for route in routes:
        if isinstance(route, ApiRoute):
            for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
                name, operation = route.operations[method]
                if operation.guard == "delete":
                    schemes["delete_token"] = DELETE_TOKEN_SCHEME
                paths[route.path][method.lower()] = _operation(operation, name, guarded)
        elif isinstance(route, ApiMount):
            path = f"{route.path}/{{{route.param}}}"
            paths[path]["get"] = _operation(route.operation, f"get_{route.param}", guarded)
    _, schemas = msgspec.json.schema_components(SCHEMA_TYPES, ref_template=REF)
    components: JSON = {"schemas": schemas}
    if guarded:
        schemes["bearer"] = {"type": "http", "scheme": "bearer"}
    if schemes:
        components["securitySchemes"] = dict(sorted(schemes.items()))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "uplodr",
            "version": version("uplodr"),
            "description": "Turn uploaded images into web variants on machines that exist "
            "only while there is work. Every error is JSON `{error, code}`.",
        },
        "paths": dict(paths),
        "components": components,
    }
