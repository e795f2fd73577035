"""What went wrong in one obstore (S3) call: read from obstore's exception type where it has
one, from its message only where it has none.

obstore 0.12 raises a type per *kind* of refusal — FileNotFoundError (404), PermissionDeniedError
(403), UnauthenticatedError (401), AlreadyExistsError / PreconditionError (a create-only write
that found the key) — and GenericError for everything else. Its exceptions carry no fields, so
three facts exist only in the message text, and are read from it:

    the HTTP status          "... status code: 503 Service Unavailable: ..."
    the S3 error code        "<Code>SlowDown</Code>" in the response body (absent for HEAD)
    the transport failure    "HttpError { kind: Timeout, ..." (Connect, Request, Timeout, ...)

`tests/storage/test_s3_errors.py` drives a real Swift server and real sockets into each of these
and fails if obstore words them differently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from obstore.exceptions import (
    AlreadyExistsError,
    BaseError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)

Kind = Literal[
    "exists",  # a create-only write found the key taken
    "not_found",  # no such key
    "no_bucket",  # no such bucket
    "bad_credentials",  # wrong access key or secret
    "denied",  # the credentials may not do this
    "throttled",  # 429 / SlowDown
    "server",  # 5xx
    "refused",  # any other 4xx
    "connect",  # no connection to the endpoint
    "timeout",  # the endpoint did not answer in time
    "transport",  # the connection failed otherwise
    "other",
]

_STATUS: Final = re.compile(r"status code: (\d{3})")
_S3_CODE: Final = re.compile(r"<Code>([A-Za-z]+)</Code>")
_HTTP_KIND: Final = re.compile(r"HttpError \{\s*kind: (\w+)")
# object_store's HttpErrorKind values that are worth another attempt (its own retry set).
_TRANSPORT_KINDS: Final[dict[str, Kind]] = {
    "Connect": "connect",
    "Timeout": "timeout",
    "Request": "transport",
    "Interrupted": "transport",
}
_CREDENTIAL_CODES: Final = frozenset({"SignatureDoesNotMatch", "InvalidAccessKeyId"})
_THROTTLE_CODES: Final = frozenset({"SlowDown", "TooManyRequests"})
_RETRYABLE: Final[frozenset[Kind]] = frozenset(
    {"throttled", "server", "connect", "timeout", "transport"}
)


@dataclass(frozen=True)
class Failure:
    kind: Kind
    status: int | None = None  # HTTP status, when the service answered
    code: str = ""  # S3 error code from the answer's body, when it had one

    @property
    def retryable(self) -> bool:
        return self.kind in _RETRYABLE or self.status == 408


def classify(error: BaseException) -> Failure:
    """The failure behind one obstore exception."""
    text = str(error)
    status_match = _STATUS.search(text)
    status = int(status_match.group(1)) if status_match else None
    code_match = _S3_CODE.search(text)
    code = code_match.group(1) if code_match else ""
    if isinstance(error, AlreadyExistsError | PreconditionError):
        return Failure("exists", status, code)
    if isinstance(error, UnauthenticatedError | PermissionDeniedError):
        # Without a body (HEAD) only the type is left: 401 says the credentials are wrong.
        wrong = code in _CREDENTIAL_CODES or (isinstance(error, UnauthenticatedError) and not code)
        return Failure("bad_credentials" if wrong else "denied", status, code)
    if code == "NoSuchBucket":  # FileNotFoundError, or GenericError for a listing
        return Failure("no_bucket", status, code)
    if isinstance(error, FileNotFoundError):
        return Failure("not_found", status, code)
    if not isinstance(error, BaseError):
        return Failure("other")
    if status is not None:
        if status == 429 or code in _THROTTLE_CODES:
            return Failure("throttled", status, code)
        return Failure("server" if status >= 500 else "refused", status, code)
    kind_match = _HTTP_KIND.search(text)
    if kind_match:
        return Failure(_TRANSPORT_KINDS.get(kind_match.group(1), "other"))
    # No debug details: the short message is all there is.
    if "Timeout" in text or "timed out" in text:
        return Failure("timeout")
    if "error sending request" in text or "Connect" in text:
        return Failure("connect")
    return Failure("other")


def is_retryable(error: Exception) -> bool:
    """Throttling, 5xx, request timeouts and transport errors: yes. Any other 4xx: never."""
    return classify(error).retryable


def explain(error: BaseException) -> str:
    """The reason in plain words, without URLs, request ids or anything signed."""
    failure = classify(error)
    status = failure.status
    code = f" {failure.code}" if failure.code else ""
    reasons: dict[Kind, str] = {
        "bad_credentials": "access denied: the access key or secret key is wrong "
        "(check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)",
        "denied": "access denied: these credentials may not write to this bucket",
        "no_bucket": "the bucket does not exist",
        "throttled": "the service kept throttling requests (SlowDown) until the deadline",
        "server": f"the service kept failing (HTTP {status}{code})",
        "refused": f"the service refused the request (HTTP {status}{code})",
        "connect": "cannot connect to the endpoint (refused or unreachable)",
        "timeout": "the endpoint did not answer in time",
        "transport": "the connection to the endpoint failed",
        "not_found": "not found",
        "exists": "the object already exists",
    }
    return reasons.get(failure.kind, f"unexpected storage error ({type(error).__name__})")
