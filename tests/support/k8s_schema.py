"""Kubernetes' own JSON schemas (PyPI kubernetes-validate ships them for every release, offline),
compiled once per kind: the test API server checks every request body and every answer with
them, and the manifest tests check deploy/kubernetes/.

Strict: an unknown field is an error, as `kubectl apply --validate=strict` and the API server's
`fieldValidation=Strict` make it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

import jsonschema
import kubernetes_validate
from kubernetes_validate.utils import schema_contents
from referencing import Registry, Resource

# The Kubernetes release whose schemas are used (the latest kubernetes-validate ships).
VERSION = kubernetes_validate.utils.latest_version()


@functools.cache
def _validator(kind: str, api_version: str) -> jsonschema.protocols.Validator:
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    folder = f"kubernetes-json-schema/v{VERSION}-local-strict"
    schema = schema_contents(f"{folder}/{kind.lower()}-{group}.json", VERSION)
    definitions = schema_contents(f"{folder}/_definitions.json", VERSION)
    registry: Registry[Any] = Resource.from_contents(schema) @ Registry()
    registry = Resource.from_contents(definitions) @ registry
    validator: jsonschema.protocols.Validator = jsonschema.Draft202012Validator(
        schema, registry=registry
    )
    return validator


def problems(document: Mapping[str, Any]) -> list[str]:
    """What is wrong with `document` (a whole object with kind and apiVersion) by the schema of
    its kind: one line each, with the path; [] when it is valid."""
    kind, api_version = document.get("kind"), document.get("apiVersion")
    if not isinstance(kind, str) or not isinstance(api_version, str):
        return ["kind and apiVersion are required"]
    try:
        validator = _validator(kind, api_version)
    except FileNotFoundError:
        return [f"no schema for kind {kind} in {api_version}"]
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
        for error in validator.iter_errors(dict(document))
    ]
