"""The Fly Machines REST API as the Fly provider needs it: one app's machines, over httpx (async).

Calls (all under /v1/apps/{app}/machines, only fields from Fly's published Swagger spec):
create `POST` · wait `GET {id}/wait?state=started&timeout=N` · list `GET ?metadata.K=V` ·
failure `GET {id}` · destroy `DELETE {id}?force=true`. A machine's whole life costs three calls
(create, wait, destroy) when it boots within 60 s.

A thin typed layer: the provider above it never sees httpx's exceptions or an HTTP status it
must classify. Errors are mapped once, here:

- 429 (honouring Retry-After), 5xx, timeouts, connection errors and capacity errors are
  `Transient` and retried with exponential backoff and jitter under one overall deadline by
  stamina; a timeout or a 5xx is `Ambiguous` (Fly may have acted on the request), a region
  without room for the machine is `Capacity` (the provider moves on to the next region);
- what is still transient when the deadline passes is WorkerUnavailable naming the action;
- what cannot be fixed by retrying (400/401/403/404/422) raises ProviderError with Fly's own
  message (the token scrubbed out of it), unless the caller `accept`s that status.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

import httpx
import stamina

from uplodr.errors import ProviderError, WorkerUnavailable

PUBLIC_API = "https://api.machines.dev"
INTERNAL_API = "http://_api.internal:4280"
_RETRY_AFTER_CAP = 30.0

P = ParamSpec("P")
T = TypeVar("T")


class Transient(Exception):
    """A failure that retrying may fix; `retry_after` overrides the backoff (seconds)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Capacity(Transient):
    """The region has no room for the machine."""


class Ambiguous(Transient):
    """The request may have taken effect (timeout, 5xx)."""


def _backoff(exc: Exception) -> bool | float:
    """stamina's hook: retry transient failures, after Retry-After when the API gave one."""
    if isinstance(exc, Transient):
        return True if exc.retry_after is None else exc.retry_after
    return False


def fly_error(response: httpx.Response) -> tuple[str, str]:
    """Fly's `error` text and `status` code (ErrorResponse), or the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip(), ""
    if isinstance(body, dict):
        return str(body.get("error") or body)[:300], str(body.get("status") or "")
    return str(body)[:300], ""


def _is_capacity(response: httpx.Response, error: str, status: str) -> bool:
    # The API classifies region capacity as status "insufficient_capacity" (spec:
    # main.statusCode); older paths answer 409/412 with flyd's "insufficient ..." text.
    if status == "insufficient_capacity":
        return True
    text = error.lower()
    return response.status_code in (409, 412) and ("insufficient" in text or "no capacity" in text)


def _retry_after(response: httpx.Response, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date (RFC 9110)."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # "-0000": UTC by RFC 5322
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), _RETRY_AFTER_CAP)


class FlyApi:
    """The machines of `app` at `api_url` (see the module docstring for the errors)."""

    def __init__(
        self,
        *,
        api_url: str,
        app: str,
        token: str,
        request_timeout: float,
        retry_deadline: float,
        backoff_initial: float,
        backoff_max: float,
        backoff_jitter: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.api_url = api_url
        self.machines = f"/v1/apps/{app}/machines"
        self._token = token
        self._request_timeout = request_timeout
        self._client = httpx.AsyncClient(
            base_url=api_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=request_timeout,
            transport=transport,
        )
        self._retrying = stamina.AsyncRetryingCaller(
            attempts=None,
            timeout=retry_deadline,
            wait_initial=backoff_initial,
            wait_max=backoff_max,
            wait_jitter=backoff_jitter,
        ).on(_backoff)

    async def retrying(
        self, attempt: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """`attempt` retried on Transient failures under the deadline (the last one raised)."""
        return await self._retrying(attempt, *args, **kwargs)

    async def request(
        self,
        action: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Mapping[str, Any] | None = None,
        accept: tuple[int, ...] = (),
        extra: float = 0.0,
    ) -> httpx.Response:
        """One API call, retried on transient failures under the deadline."""
        try:
            return await self._retrying(
                self.send, action, method, path, params, json, accept, extra
            )
        except Transient as exc:
            raise WorkerUnavailable(f"Fly API {action} failed: {exc}") from None

    async def send(
        self,
        action: str,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        json: Mapping[str, Any] | None = None,
        accept: tuple[int, ...] = (),
        extra: float = 0.0,
    ) -> httpx.Response:
        """One HTTP request; returns 2xx and `accept`ed answers, raises everything else."""
        timeout = self._request_timeout + extra
        try:
            response = await self._client.request(
                method, path, params=params, json=json, timeout=timeout
            )
        except httpx.TimeoutException:
            raise Ambiguous(f"no answer within {timeout:g} s") from None
        except httpx.TransportError as exc:
            raise Transient(f"cannot reach {self.api_url}: {type(exc).__name__}") from None
        status = response.status_code
        if status < 300 or status in accept:
            return response
        error, code = self._scrub(*fly_error(response))
        if status == 429:
            raise Transient("rate limited (429)", _retry_after(response))
        if action == "create" and _is_capacity(response, error, code):
            raise Capacity(f"{status} {error}".strip())
        if status >= 500:
            raise Ambiguous(f"{status} {error}".strip())
        hint = " (check FLY_API_TOKEN)" if status in (401, 403) else ""
        raise ProviderError(f"Fly API refused {action} with {status}: {error}{hint}")

    def _scrub(self, error: str, code: str) -> tuple[str, str]:
        token = self._token
        return (error.replace(token, "<token>") if token else error), code

    async def aclose(self) -> None:
        await self._client.aclose()
