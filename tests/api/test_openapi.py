"""The OpenAPI document the gateway serves, and the running gateway held to it by schemathesis
(a fuzzer we did not write): no 5xx, no answer that breaks the schema, no undocumented status
or content type, no hang, under the default limits."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from schemathesis.core.warnings import SchemathesisWarning

from tests.support.gateway import Gateway, running_gateway
from uplodr.errors import ERRORS_BY_CODE, STATUSES

# Every check schemathesis has, but one: "a schema-valid request is accepted" cannot hold for an
# image API, whose body schema is "bytes" — which bytes decode as an image is not something
# JSON Schema can say, so most generated bodies are rightly refused (415, 422).
SCHEMATHESIS = [
    "run",
    "--checks", "all",
    "--exclude-checks", "positive_data_acceptance",
    "--phases", "examples,coverage,fuzzing,stateful",
    "--max-examples", "40",
    "--seed", "20261202",
    "--generation-database", "none",  # the same examples every run: the seed alone decides
    "--request-timeout", "60",
    "--workers", "1",
    "--no-color",
    # Every warning but "missing_auth": DELETE /v1/images/{id} answers a request without the
    # image's delete token 401 on every gateway, by design — the fuzzer holds no image's token,
    # so it sees only 401s there (tests/e2e/test_images.py deletes with real ones).
    "--warnings", ",".join(
        w.value for w in SchemathesisWarning if w is not SchemathesisWarning.MISSING_AUTH
    ),
]  # fmt: skip


def document(gateway: Gateway) -> dict[str, Any]:
    response = httpx.get(f"{gateway.url}/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def test_every_route_is_documented(gateway: Gateway) -> None:
    doc = document(gateway)
    assert doc["openapi"] == "3.1.0"
    assert {(path, method) for path, item in doc["paths"].items() for method in item} == {
        ("/", "get"),
        ("/v1/images", "post"),
        ("/v1/images", "get"),
        ("/v1/images/{image_id}", "get"),
        ("/v1/images/{image_id}", "delete"),
        ("/v1/rebuilds", "post"),
        ("/v1/rebuilds/{rebuild_id}", "get"),
        ("/v1/presets", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/files/{key}", "get"),
        ("/openapi.json", "get"),
        ("/docs", "get"),
    }
    post = doc["paths"]["/v1/images"]["post"]
    params = {p["name"]: p for p in post["parameters"]}
    assert list(params) == ["name", "folder", "preset", "original", "alt"]
    assert params["preset"]["schema"]["enum"] == ["default"]  # no presets file: only its own
    assert params["original"]["schema"]["enum"] == ["keep", "only", "drop"]
    assert params["alt"]["schema"]["maxLength"] == 1000
    assert set(post["requestBody"]["content"]) == {
        "application/octet-stream",
        "multipart/form-data",
    }
    assert post["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Conversion"
    }
    schemas = doc["components"]["schemas"]
    assert {"Conversion", "Variant", "Job", "Placeholder", "ErrorAnswer", "Health"} <= set(schemas)
    assert {"Presets", "PresetInfo"} <= set(schemas)
    conversion = schemas["Conversion"]["properties"]
    assert {"width", "height", "placeholder", "html"} <= set(conversion)
    assert {"format", "role"} <= set(schemas["Variant"]["properties"])


def test_each_error_code_is_documented_under_its_status(gateway: Gateway) -> None:
    responses = document(gateway)["paths"]["/v1/images"]["post"]["responses"]
    documented = {
        code: int(status)
        for status, response in responses.items()
        if status != "200"
        for code in response["content"]["application/json"]["schema"]["allOf"][1]["properties"][
            "code"
        ]["enum"]
    }
    # Without tokens nobody is refused for a missing or an unfit one: 401, 403 not documented;
    # an upload never looks a stored image up by its id (404 is the images routes').
    guarded = {"unauthenticated", "forbidden", "not_found"}
    expected = {code: STATUSES[code].http for code in ERRORS_BY_CODE if code not in guarded}
    assert documented == expected
    assert "Retry-After" in responses["503"]["headers"]
    assert "security" not in document(gateway)["paths"]["/v1/images"]["post"]


def test_the_images_routes_document_their_answers_and_the_delete_credential(
    gateway: Gateway,
) -> None:
    doc = document(gateway)
    image = doc["paths"]["/v1/images/{image_id}"]
    assert set(image["get"]["responses"]) == {"200", "400", "404", "414", "431", "503"}
    assert "security" not in image["get"]  # an open gateway: who may upload may read
    delete = image["delete"]
    # A delete always needs a credential: the image's delete token, in a header (never the URL).
    assert delete["security"] == [{"delete_token": []}]
    assert {"204", "401", "403", "404", "503"} <= set(delete["responses"])
    scheme = doc["components"]["securitySchemes"]["delete_token"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == (
        "apiKey",
        "header",
        "Uplodr-Delete-Token",
    )
    listing = doc["paths"]["/v1/images"]["get"]
    assert [p["name"] for p in listing["parameters"]] == ["folder", "cursor", "limit"]
    schemas = doc["components"]["schemas"]
    assert {"id", "delete_token"} <= set(schemas["Conversion"]["properties"])
    assert set(schemas["ImageList"]["properties"]) == {"images", "next_cursor"}


def test_a_gateway_with_tokens_documents_its_security(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "tokens", env={"UPLODR_TOKENS": "s3cret"}) as gw:
        doc = document(gw)
    post = doc["paths"]["/v1/images"]["post"]
    assert post["security"] == [{"bearer": []}]
    assert {"401", "403"} <= set(post["responses"])
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "security" not in doc["paths"]["/healthz"]["get"]
    assert "security" not in doc["paths"]["/readyz"]["get"]
    assert doc["paths"]["/v1/images"]["get"]["security"] == [{"bearer": []}]
    assert doc["paths"]["/v1/images/{image_id}"]["delete"]["security"] == [
        {"delete_token": []},
        {"bearer": []},
    ]
    assert doc["paths"]["/v1/rebuilds"]["post"]["security"] == [{"bearer": []}]
    assert doc["paths"]["/v1/rebuilds/{rebuild_id}"]["get"]["security"] == [{"bearer": []}]
    # /metrics needs a token whenever the gateway has tokens
    assert doc["paths"]["/metrics"]["get"]["security"] == [{"bearer": []}]
    assert "401" in doc["paths"]["/metrics"]["get"]["responses"]


def test_the_docs_page_loads_nothing_from_elsewhere(gateway: Gateway) -> None:
    page = httpx.get(f"{gateway.url}/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in page.text
    assert "http://" not in page.text and "https://" not in page.text and "//cdn" not in page.text


def test_what_the_fuzzer_found_stays_fixed(gateway: Gateway) -> None:
    """Found by schemathesis: a malformed multipart body got Starlette's plain-text 400, and an
    explicit empty `?name=` on a multipart upload was taken for "no name" and converted."""
    boundary = "b0undary"
    broken = httpx.post(
        f"{gateway.url}/v1/images",
        content=f"--{boundary}\r\nno headers here--{boundary}--\r\n".encode(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert broken.status_code == 400
    assert broken.json()["code"] == "invalid_request"
    assert broken.json()["error"].startswith("malformed multipart upload: ")
    empty_name = httpx.post(
        f"{gateway.url}/v1/images",
        params={"name": ""},
        files={"file": ("photo.png", b"\x89PNG\r\n\x1a\n-not-really")},
    )
    assert empty_name.status_code == 400
    assert empty_name.json() == {"error": "file name is empty", "code": "invalid_request"}


def test_schemathesis_finds_nothing(gateway: Gateway, tmp_path: Path) -> None:
    schemathesis = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert schemathesis, "schemathesis is a dev dependency: uv sync installs it"
    done = subprocess.run(
        [schemathesis, *SCHEMATHESIS, f"{gateway.url}/openapi.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,  # no hang: every request has its own 60 s timeout
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "No issues found" in done.stdout, done.stdout[-3000:]
    # Every operation; schemathesis leaves out the URL it loaded the document from.
    assert "Tested: 13" in done.stdout
