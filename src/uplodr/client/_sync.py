"""The blocking client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import stamina

from uplodr.answer import Conversion, ImageList, Presets
from uplodr.client._httpx import httpx
from uplodr.client._upload import (
    BusyRetry,
    Original,
    Source,
    Upload,
    answer,
    delete_headers,
    image_path,
    list_params,
    no_content,
    prepare,
    query,
)
from uplodr.client.errors import TransportError

DEFAULT_URL = "http://127.0.0.1:8080"


def http_timeout(timeout: float) -> httpx.Timeout:
    # A conversion may take minutes (a machine boots, AVIF encodes); connecting may not.
    return httpx.Timeout(timeout, connect=min(timeout, 10.0))


def auth_headers(token: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"} if token else {}


class Client:
    """Converts images through an uplodr gateway.

        with Client("http://127.0.0.1:8080", token=...) as uplodr:
            conversion = uplodr.convert("photo.jpg", folder="blog/2026")
            print(conversion.variants[0].url)

    `timeout` bounds each request (seconds); `busy_timeout` bounds how long a `busy` answer
    (every machine taken) is retried, honouring the server's Retry-After. Errors are the typed
    exceptions of `uplodr.client.errors`.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        timeout: float = 600.0,
        busy_timeout: float = 120.0,
    ) -> None:
        self.busy_timeout = busy_timeout
        self._http = httpx.Client(
            base_url=base_url, timeout=http_timeout(timeout), headers=auth_headers(token)
        )

    def convert(
        self,
        source: Source,
        *,
        name: str | None = None,
        folder: str | None = None,
        preset: str | None = None,
        alt: str | None = None,
        original: Original | None = None,
    ) -> Conversion:
        """Upload `source` — a path, bytes, or a binary file object — and return where its
        variants are stored. The body is streamed in chunks, never read whole into memory.

        `name` defaults to the path's or the file object's name (required for bytes). A `busy`
        answer is retried only when the body can be sent again: a path (re-opened), bytes, or a
        seekable file object (sought back); a one-shot stream such as a pipe is sent once and
        its `Busy` raised.

        `preset` names one of the gateway's presets (`GET /v1/presets`; its default when None);
        `original` is "keep" (also store the upload as it came — with its metadata, GPS location
        included), "only" (store nothing else) or "drop" (None: as the preset says); `alt` is
        the `<img alt>` of the answer's `html`. The answer's `width`, `height`, `placeholder`
        and `html` are None when the gateway does not send them.
        """
        upload = prepare(source, name)
        params = query(upload, folder, preset, alt, original)
        retry = BusyRetry(upload, time.monotonic() + self.busy_timeout)
        for attempt in stamina.retry_context(
            on=retry, attempts=None, timeout=None, wait_initial=0.5, wait_max=10.0
        ):
            with attempt:
                upload.rewind()
                return self._post(upload, params)
        raise AssertionError("unreachable: stamina raises the last error")  # pragma: no cover

    def presets(self) -> Presets:
        """The presets this gateway knows (`convert(preset=NAME)`), its default first."""
        return answer(self._send("GET", "/v1/presets"), Presets)

    def get(self, image_id: str) -> Conversion:
        """A stored image's answer, by the `id` of its upload's answer (no machine runs).
        Raises NotFound when no image has that id (never stored, or deleted)."""
        return answer(self._send("GET", image_path(image_id)), Conversion)

    def list_page(
        self, folder: str | None = None, cursor: str | None = None, limit: int | None = None
    ) -> ImageList:
        """One page of the images under `folder` (and its subfolders), newest first; its
        `next_cursor` (None after the last page) is the `cursor` of the next."""
        params = list_params(folder, cursor, limit)
        return answer(self._send("GET", "/v1/images", params=params), ImageList)

    def list(
        self, folder: str | None = None, *, page_size: int | None = None
    ) -> Iterator[Conversion]:
        """Every image under `folder` (and its subfolders), newest first, read a page at a time
        as the iteration goes (`page_size` images per request; the gateway's default: 50)."""
        cursor: str | None = None
        while True:
            page = self.list_page(folder, cursor, page_size)
            yield from page.images
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def delete(self, image_id: str, delete_token: str | None = None) -> None:
        """Delete an image from every store of the gateway: with its `delete_token` (from its
        upload's answer; sent in a header), or else this client's token, whose prefixes must
        cover the image's folder. Raises NotFound when nothing of it is left (deleted before),
        StorageUnavailable when a store was down (call again: it finishes the job)."""
        response = self._send("DELETE", image_path(image_id), headers=delete_headers(delete_token))
        no_content(response)

    def _post(self, upload: Upload, params: dict[str, str]) -> Conversion:
        response = self._send(
            "POST", "/v1/images", params=params, content=upload.chunks(), headers=upload.headers()
        )
        return answer(response, Conversion)

    def _send(self, method: str, path: str, **request: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **request)
        except httpx.TransportError as error:
            raise TransportError(f"cannot reach {self._http.base_url}: {error}") from error

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
