"""The errors a client can see, and the one table that maps each to a gRPC and an HTTP status.

Every module raises one of these with a message that is safe to show a client (no secrets, no
paths outside the store, no traceback). The worker turns them into gRPC status codes and puts the
error's `code` in trailing metadata; the gateway turns that back into an HTTP status.

What an error *means* is data on its class, for code that decides from it (the pool, the
gateway): `about_input` — the uploaded bytes caused it, so a machine that read them is never
given another job (docs/machines.md, "A machine that met a bad file is gone"); `retryable` —
the same request may succeed later; `kind` — a finer name than `code` for metrics and logs
(an out-of-memory kill is a `limit_exceeded` to the client, `out_of_memory` on /metrics).
This module knows nothing of gRPC or HTTP libraries: statuses are plain names and numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class Status:
    grpc: str  # a grpc.StatusCode member name
    http: int


class UplodrError(Exception):
    """Base of every error a client can see. `str(error)` is the client-facing message."""

    code: ClassVar[str] = "internal"
    # The uploaded bytes caused it (a worker read them): send another file, not the same one.
    about_input: ClassVar[bool] = False
    # Sending the same request again later may succeed (an outage, a full pool).
    retryable: ClassVar[bool] = False
    # A finer name than `code` (metrics, logs); a subclass without its own is its code.
    kind: ClassVar[str] = "internal"

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        if "kind" not in cls.__dict__:
            cls.kind = cls.code


class InvalidRequest(UplodrError):
    """A malformed request: bad name or folder, malformed stream, missing body."""

    code = "invalid_request"
    about_input = True


class UnsupportedImage(UplodrError):
    """Not one of the allowed image formats (sniffed from the bytes, never the name)."""

    code = "unsupported_image"
    about_input = True


class CorruptImage(UplodrError):
    """An allowed format whose bytes cannot be decoded."""

    code = "corrupt_image"
    about_input = True


class TooLarge(UplodrError):
    """The upload is larger than the byte limit."""

    code = "too_large"
    about_input = True

    @classmethod
    def over_limit(cls, what: str, limit: int) -> TooLarge:
        return cls(f"{what} is larger than the limit of {byte_size(limit)}")


def byte_size(count: int) -> str:
    """A byte count for people, in the binary units limits are given in (`--max-upload 64MiB`):
    "64 MiB", "1.5 MiB", "1000 bytes" — not 67108864 bytes."""
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= size:
            return f"{count / size:.1f}".removesuffix(".0") + f" {unit}"
    return f"{count} byte" + ("" if count == 1 else "s")


class LimitExceeded(UplodrError):
    """Pixels, dimensions, frames, time or concurrency beyond a configured limit."""

    code = "limit_exceeded"
    about_input = True


class Unauthenticated(UplodrError):
    """Missing or wrong token."""

    code = "unauthenticated"


class Forbidden(UplodrError):
    """A known token used outside what it may do: a folder beyond its prefixes, or /metrics
    with an upload token when a separate metrics token is configured."""

    code = "forbidden"


class NotFound(UplodrError):
    """No stored image has this id (never made, or deleted); also Starlette's own "nothing at
    this path", answered with the same code."""

    code = "not_found"


class UriTooLong(UplodrError):
    """The request's path and query are longer than the gateway reads (no parameter of the API
    needs that much)."""

    code = "uri_too_long"


class HeadersTooLarge(UplodrError):
    """The request's headers are larger than the gateway reads."""

    code = "headers_too_large"


class UploadTimeout(UplodrError):
    """The request body did not arrive within the gateway's body deadline (a client that
    trickles its upload cannot hold an upload slot forever)."""

    code = "upload_timeout"


class StorageUnavailable(UplodrError):
    """Object storage could not be read or written; the message names the store."""

    code = "storage_unavailable"
    retryable = True


class WorkerUnavailable(UplodrError):
    """No worker machine could be created, booted or kept alive for the job."""

    code = "worker_unavailable"
    retryable = True


class NotCreated(WorkerUnavailable):
    """A provider's create that certainly made nothing: its request never reached the provider
    (connection refused, no socket). Nobody needs to look for the machine it might have made."""


class OutOfMemory(LimitExceeded):
    """The worker was killed for memory while it converted the upload (its provider said so):
    the image needs more memory than a worker has."""

    kind = "out_of_memory"


class WorkerCrashed(WorkerUnavailable):
    """The worker's process died mid-job (a signal, a non-zero exit): most likely the file it
    was decoding (a decoder crash). A 503 all the same: it may also have been something else."""

    about_input = True
    kind = "crash"


class DeadlineExceeded(WorkerUnavailable):
    """The worker did not answer within its call's deadline. As a job's answer: the input
    kept the worker busy past the job's deadline (a decoder loop, a decompression bomb)."""

    about_input = True
    kind = "deadline"


class Busy(UplodrError):
    """Every machine slot is taken and the wait queue is full: try again after `retry_after`
    seconds (the gateway sends it as the `Retry-After` header)."""

    code = "busy"
    retryable = True

    def __init__(self, message: str, retry_after: int = 2) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProviderError(UplodrError):
    """The machine provider refused a request for a reason retrying cannot fix (configuration)."""

    code = "provider_error"


STATUSES: dict[str, Status] = {
    "invalid_request": Status("INVALID_ARGUMENT", 400),
    "unsupported_image": Status("INVALID_ARGUMENT", 415),
    "corrupt_image": Status("INVALID_ARGUMENT", 422),
    "too_large": Status("RESOURCE_EXHAUSTED", 413),
    "limit_exceeded": Status("RESOURCE_EXHAUSTED", 422),
    "unauthenticated": Status("UNAUTHENTICATED", 401),
    "forbidden": Status("PERMISSION_DENIED", 403),
    "not_found": Status("NOT_FOUND", 404),
    "upload_timeout": Status("DEADLINE_EXCEEDED", 408),
    "uri_too_long": Status("INVALID_ARGUMENT", 414),
    "headers_too_large": Status("INVALID_ARGUMENT", 431),
    "storage_unavailable": Status("UNAVAILABLE", 503),
    "worker_unavailable": Status("UNAVAILABLE", 503),
    "busy": Status("UNAVAILABLE", 503),
    "provider_error": Status("FAILED_PRECONDITION", 502),
    "internal": Status("INTERNAL", 500),
}

ERRORS_BY_CODE: dict[str, type[UplodrError]] = {
    cls.code: cls
    for cls in (
        UplodrError,
        InvalidRequest,
        UnsupportedImage,
        CorruptImage,
        TooLarge,
        LimitExceeded,
        Unauthenticated,
        Forbidden,
        NotFound,
        UploadTimeout,
        UriTooLong,
        HeadersTooLarge,
        StorageUnavailable,
        WorkerUnavailable,
        Busy,
        ProviderError,
    )
}


def status_of(error: UplodrError) -> Status:
    return STATUSES[error.code]
