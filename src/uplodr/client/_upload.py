"""What the sync and async clients share: turning a source (path, bytes, file object) into a
streamed request body, the request's parameters, and the answer into a Conversion or a typed
error. No I/O of its own beyond reading the source in chunks."""

from __future__ import annotations

import asyncio
import email.utils
import os
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, TypeAlias, TypeVar

import msgspec

from uplodr.answer import ErrorAnswer
from uplodr.client._httpx import httpx
from uplodr.client.errors import ERRORS_BY_CODE, ApiError, Busy

# A path, the bytes themselves, or a binary file object open for reading.
Source: TypeAlias = "str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO"

# What to store of the upload itself (`?original=`): the bytes as they came beside the variants,
# only those bytes, or no original even if the gateway's preset keeps it. None: as the preset says.
Original: TypeAlias = Literal["keep", "only", "drop"]

# The header of an image's own delete token (the gateway's `Uplodr-Delete-Token`).
DELETE_TOKEN_HEADER = "Uplodr-Delete-Token"  # noqa: S105 (a header's name)

CHUNK = 256 * 1024  # the gateway spools in chunks of this order; 64 KiB to 1 MiB all stream well


@dataclass
class Upload:
    """One source made into a request body that is read in CHUNK-sized pieces, never whole.

    `rewindable` says whether the body can be sent again (a busy answer is retried only then):
    a path is re-opened, bytes are bytes, a seekable file object is sought back to where it
    was; a one-shot stream (a pipe, a socket) cannot be sent twice."""

    name: str
    size: int | None
    path: Path | None = None
    data: memoryview | None = None
    file: BinaryIO | None = None
    start: int | None = None  # where a seekable file object was when it was given

    @property
    def rewindable(self) -> bool:
        return self.file is None or self.start is not None

    def rewind(self) -> None:
        if self.file is not None and self.start is not None:
            self.file.seek(self.start)

    def chunks(self) -> Iterator[bytes]:
        if self.data is not None:
            for offset in range(0, len(self.data), CHUNK):
                yield bytes(self.data[offset : offset + CHUNK])
            return
        if self.path is not None:
            with self.path.open("rb") as file:
                while chunk := file.read(CHUNK):
                    yield chunk
            return
        assert self.file is not None
        while chunk := self.file.read(CHUNK):
            yield chunk

    async def achunks(self) -> AsyncIterator[bytes]:
        """The same chunks, each file read in a thread so the event loop never waits on disk."""
        if self.data is not None:
            for chunk in self.chunks():
                yield chunk
            return
        if self.path is not None:
            file = await asyncio.to_thread(self.path.open, "rb")
            try:
                while chunk := await asyncio.to_thread(file.read, CHUNK):
                    yield chunk
            finally:
                file.close()
            return
        assert self.file is not None
        while chunk := await asyncio.to_thread(self.file.read, CHUNK):
            yield chunk

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/octet-stream"}
        if self.size is not None:
            # Known up front, so a gateway refuses an oversized upload before it is sent.
            headers["content-length"] = str(self.size)
        return headers


def prepare(source: Source, name: str | None) -> Upload:
    if isinstance(source, bytes | bytearray | memoryview):
        if not name:
            raise ValueError("give the file's name (name=…) when converting bytes")
        data = memoryview(source).cast("B")
        return Upload(name=name, size=len(data), data=data)
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        return Upload(name=name or path.name, size=path.stat().st_size, path=path)
    if not hasattr(source, "read"):
        raise TypeError(f"cannot convert a {type(source).__name__}: give a path, bytes or a file")
    file = source
    file_name = getattr(file, "name", None)
    name = name or (Path(file_name).name if isinstance(file_name, str) else None)
    if not name:
        raise ValueError("give the file's name (name=…): this file object has none")
    start: int | None = None
    size: int | None = None
    if file.seekable():
        start = file.tell()
        size = file.seek(0, os.SEEK_END) - start
        file.seek(start)
    return Upload(name=name, size=size, file=file, start=start)


def query(
    upload: Upload,
    folder: str | None,
    preset: str | None,
    alt: str | None,
    original: Original | None,
) -> dict[str, str]:
    params = {"name": upload.name}
    options = (("folder", folder), ("preset", preset), ("original", original), ("alt", alt))
    for key, value in options:
        if value is not None:
            params[key] = value
    return params


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header in either form (RFC 9110 §10.2.3): delay-seconds, or an HTTP-date
    (a date in the past means "now"). None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 850 / asctime forms carry no zone: they mean GMT
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


T = TypeVar("T")


def answer(response: httpx.Response, kind: type[T]) -> T:
    """The `kind` (Conversion, Presets) of a 200 answer; the typed error of any other."""
    if response.status_code == 200:
        try:
            return msgspec.json.decode(response.content, type=kind)
        except msgspec.DecodeError as error:
            raise ApiError(
                f"the server's answer is not a {kind.__name__}: {error}",
                code="invalid_answer",
                status=response.status_code,
            ) from None
    raise refusal(response)


def no_content(response: httpx.Response) -> None:
    """A 204 answer (DELETE); the typed error of any other."""
    if response.status_code != 204:
        raise refusal(response)


def refusal(response: httpx.Response) -> ApiError:
    """The typed error of an answer that is not the one asked for."""
    retry_after = retry_after_seconds(response.headers.get("retry-after"))
    try:
        body = msgspec.json.decode(response.content, type=ErrorAnswer)
    except msgspec.DecodeError:
        text = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
        return ApiError(
            f"HTTP {response.status_code} {response.reason_phrase}: {text}".rstrip(": "),
            code="http_error",
            status=response.status_code,
            retry_after=retry_after,
        )
    error_class = ERRORS_BY_CODE.get(body.code, ApiError)
    return error_class(
        body.error, code=body.code, status=response.status_code, retry_after=retry_after
    )


def image_path(image_id: str) -> str:
    """/v1/images/{id}, the id quoted (an id is URL-safe; anything else stays in the path)."""
    if not image_id:
        raise ValueError("give the image's id (`id` of its upload's answer)")
    return "/v1/images/" + urllib.parse.quote(image_id, safe="")


def delete_headers(delete_token: str | None) -> dict[str, str]:
    """The image's own delete token goes in a header, never in the URL (URLs are logged)."""
    return {DELETE_TOKEN_HEADER: delete_token} if delete_token else {}


def list_params(folder: str | None, cursor: str | None, limit: int | None) -> dict[str, str]:
    options = (("folder", folder), ("cursor", cursor), ("limit", limit))
    return {key: str(value) for key, value in options if value is not None}


class BusyRetry:
    """stamina's backoff hook for one upload: retry a `busy` answer — waiting what its
    Retry-After says, else stamina's exponential backoff with jitter — while the body can be
    sent again and the wait still ends before the deadline; nothing else is retried. It is the
    one deadline of the retries (stamina's own timeout is off), so `busy_timeout=0` simply
    means "never retry"."""

    def __init__(self, upload: Upload, deadline: float) -> None:
        self.upload = upload
        self.deadline = deadline

    def __call__(self, error: Exception) -> bool | float:
        if not isinstance(error, Busy) or not self.upload.rewindable:
            return False
        remaining = self.deadline - time.monotonic()
        wait = error.retry_after
        if remaining <= 0 or (wait is not None and wait > remaining):
            return False
        return True if wait is None else wait
