"""Requests that are not uploads — a browser's icon, a scanner's probe, a missing stored file —
get their answer without being counted as upload errors in `uplodr_errors_total`, which an
operator alerts on."""

from __future__ import annotations

import httpx

from tests.support.gateway import Gateway


def errors_counted(gateway: Gateway) -> dict[str, float]:
    counted: dict[str, float] = {}
    for line in httpx.get(f"{gateway.url}/metrics").text.splitlines():
        if line.startswith("uplodr_errors_total{"):
            labels, value = line.rsplit(" ", 1)
            counted[labels] = float(value)
    return counted


def test_the_browsers_icon_is_served(gateway: Gateway) -> None:
    icon = httpx.get(f"{gateway.url}/favicon.ico")
    assert icon.status_code == 200
    assert icon.headers["content-type"] == "image/svg+xml"
    assert icon.text.startswith("<svg") and len(icon.content) < 1000


def test_requests_elsewhere_are_not_upload_errors(gateway: Gateway) -> None:
    before = errors_counted(gateway)
    for path in ("/favicon.ico", "/wp-login.php", "/files/nothing-here.jpg", "/v1/presets/x"):
        httpx.get(f"{gateway.url}{path}")
    assert httpx.delete(f"{gateway.url}/healthz").status_code == 405
    assert errors_counted(gateway) == before
    # An upload's refusal still counts.
    refused = httpx.post(f"{gateway.url}/v1/images", content=b"x")
    assert refused.status_code == 400
    after = errors_counted(gateway)
    key = 'uplodr_errors_total{code="invalid_request"}'
    assert after[key] == before.get(key, 0.0) + 1
