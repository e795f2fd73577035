"""Fly's published Machines API spec (Swagger 2.0) as a strict request validator.

Bodies are checked with jsonschema's Draft 4 validator over the spec's definitions, every object
that lists its properties closed (`additionalProperties: false`), so an unknown field or a wrong
type is a 400 as on Fly. Query parameters are checked against the operation's parameters: unknown
names, repeated names, wrong types and values outside an enum are refused.

One documented extension: `GET /apps/{app}/machines` also takes `metadata.{key}=value` filters.
Fly's current API serves them, but this copy of the spec (March 2024) predates their listing; every
other operation accepts exactly what the spec lists.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft4Validator

from tests.support.paths import SPECS

# ../shared/specs beside the repository, as for the test corpus; UPLODR_FLY_SPEC overrides
SPEC_PATH = Path(os.environ.get("UPLODR_FLY_SPEC") or SPECS / "fly-machines-swagger.json")
_EXTENSION_PARAMS: dict[str, re.Pattern[str]] = {
    "Machines_list": re.compile(r"^metadata\.[A-Za-z0-9_.\-]+$"),
}


class SpecViolation(Exception):
    """A request that the spec does not allow; str() is the 400 message."""


def _close(schema: Any) -> Any:
    """Every object schema with `properties` and no `additionalProperties` becomes closed."""
    if isinstance(schema, dict):
        closed = {key: _close(value) for key, value in schema.items()}
        if "properties" in closed and "additionalProperties" not in closed:
            closed["additionalProperties"] = False
        return closed
    if isinstance(schema, list):
        return [_close(item) for item in schema]
    return schema


@dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str
    path: str  # swagger path template, without the base path
    parameters: tuple[Mapping[str, Any], ...]
    body: Draft4Validator | None


class FlySpec:
    def __init__(self, spec_path: Path = SPEC_PATH) -> None:
        self.document: dict[str, Any] = json.loads(spec_path.read_text())
        self.base_path: str = self.document.get("basePath", "")
        self.definitions: dict[str, Any] = _close(self.document["definitions"])
        self.operations: dict[str, Operation] = {}
        for path, methods in self.document["paths"].items():
            for method, op in methods.items():
                params = tuple(op.get("parameters", []))
                body = next((p for p in params if p.get("in") == "body"), None)
                self.operations[op["operationId"]] = Operation(
                    operation_id=op["operationId"],
                    method=method.upper(),
                    path=path,
                    parameters=params,
                    body=self.validator(body["schema"]) if body else None,
                )

    def validator(self, schema: Mapping[str, Any]) -> Draft4Validator:
        root = {"definitions": self.definitions, **_close(copy.deepcopy(dict(schema)))}
        return Draft4Validator(root)

    def definition(self, name: str) -> Draft4Validator:
        return self.validator({"$ref": f"#/definitions/{name}"})

    def check_body(self, operation_id: str, body: bytes) -> Any:
        """The parsed body, or SpecViolation."""
        op = self.operations[operation_id]
        if op.body is None:
            if body.strip():
                raise SpecViolation(f"{operation_id} takes no request body")
            return None
        try:
            data = json.loads(body)
        except ValueError:
            raise SpecViolation("request body is not valid JSON") from None
        errors = sorted(op.body.iter_errors(data), key=lambda e: list(e.absolute_path))
        if errors:
            first = errors[0]
            where = ".".join(str(p) for p in first.absolute_path) or "body"
            raise SpecViolation(f"invalid request: {where}: {first.message}")
        return data

    def check_query(self, operation_id: str, query: Sequence[tuple[str, str]]) -> dict[str, str]:
        """The query as a dict, or SpecViolation for names, types or values the spec refuses."""
        op = self.operations[operation_id]
        declared = {p["name"]: p for p in op.parameters if p.get("in") == "query"}
        extension = _EXTENSION_PARAMS.get(operation_id)
        seen: dict[str, str] = {}
        for name, value in query:
            if name in seen:
                raise SpecViolation(f"query parameter {name!r} given twice")
            seen[name] = value
            param = declared.get(name)
            if param is None:
                if extension is not None and extension.match(name):
                    continue
                raise SpecViolation(f"unknown query parameter {name!r}")
            _check_value(name, value, param)
        for name, param in declared.items():
            if param.get("required") and name not in seen:
                raise SpecViolation(f"missing query parameter {name!r}")
        return seen


def _check_value(name: str, value: str, param: Mapping[str, Any]) -> None:
    kind = param.get("type", "string")
    if kind == "boolean" and value not in ("true", "false"):
        raise SpecViolation(f"query parameter {name!r} must be true or false")
    if kind == "integer" and not re.fullmatch(r"-?[0-9]+", value):
        raise SpecViolation(f"query parameter {name!r} must be an integer")
    if "enum" in param and value not in param["enum"]:
        raise SpecViolation(f"query parameter {name!r} must be one of {param['enum']}")
