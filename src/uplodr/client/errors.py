"""What the client raises: one exception per row of the server's error table (chosen by the
answer's `code`, so a new HTTP status for an old code changes nothing here), and one for a
server that could not be reached.

    ClientError
    ├── TransportError (also a builtin ConnectionError): no answer at all
    └── ApiError: the server answered an error; .code, .status, .message, .retry_after
        ├── InvalidRequest, UnsupportedImage, CorruptImage, TooLarge, LimitExceeded,
        ├── Unauthenticated, Forbidden, UploadTimeout,
        ├── StorageUnavailable, WorkerUnavailable, Busy, ProviderError
        └── Internal

A code this client does not know yet (a newer server) is raised as a plain ApiError carrying it.
"""

from __future__ import annotations

import builtins


class ClientError(Exception):
    """Base of everything the uplodr client raises."""


class TransportError(ClientError, builtins.ConnectionError):
    """The server could not be reached, or the connection failed before an answer came."""


class ApiError(ClientError):
    """The server answered with an error."""

    def __init__(
        self, message: str, *, code: str, status: int, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        # Seconds the server asked to wait before trying again (Retry-After), if it said.
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.message} ({self.code}, HTTP {self.status})"


class InvalidRequest(ApiError):
    """A malformed request: bad name or folder, missing body."""


class UnsupportedImage(ApiError):
    """Not one of the allowed image formats."""


class CorruptImage(ApiError):
    """An allowed format whose bytes cannot be decoded."""


class TooLarge(ApiError):
    """The upload is larger than the server's byte limit."""


class LimitExceeded(ApiError):
    """Pixels, dimensions, frames or conversion time beyond the server's limits."""


class Unauthenticated(ApiError):
    """Missing or wrong token."""


class Forbidden(ApiError):
    """The token is known but may not do this: a folder outside its prefixes, or /metrics."""


class UploadTimeout(ApiError):
    """The upload's body did not reach the server within its body deadline (a slow link)."""


class StorageUnavailable(ApiError):
    """The server's object storage could not be written."""


class WorkerUnavailable(ApiError):
    """No worker machine could be created, booted or kept alive for the job."""


class Busy(ApiError):
    """Every machine is taken and the wait queue is full; retried by the client until its
    `busy_timeout`, then raised with the server's `retry_after`."""


class ProviderError(ApiError):
    """The server's machine provider refused for a reason retrying cannot fix."""


class Internal(ApiError):
    """An unexpected failure inside the server."""


class NotFound(ApiError):
    """Nothing at that path: most often a base URL that is not an uplodr gateway's root."""


class MethodNotAllowed(ApiError):
    """The path exists but does not take that method."""


ERRORS_BY_CODE: dict[str, type[ApiError]] = {
    "invalid_request": InvalidRequest,
    "unsupported_image": UnsupportedImage,
    "corrupt_image": CorruptImage,
    "too_large": TooLarge,
    "limit_exceeded": LimitExceeded,
    "unauthenticated": Unauthenticated,
    "forbidden": Forbidden,
    "upload_timeout": UploadTimeout,
    "storage_unavailable": StorageUnavailable,
    "worker_unavailable": WorkerUnavailable,
    "busy": Busy,
    "provider_error": ProviderError,
    "internal": Internal,
    "not_found": NotFound,
    "method_not_allowed": MethodNotAllowed,
}
