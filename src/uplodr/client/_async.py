"""The asyncio client: the twin of `Client`, for many uploads at once."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import stamina

from uplodr.answer import Conversion, ImageList, Presets
from uplodr.client._httpx import httpx
from uplodr.client._sync import DEFAULT_URL, auth_headers, http_timeout
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


class AsyncClient:
    """Converts images through an uplodr gateway, concurrently:

        async with AsyncClient("http://127.0.0.1:8080") as uplodr:
            conversions = await asyncio.gather(*(uplodr.convert(p) for p in paths))

    The same arguments, answers, errors and retry rule as `Client`. Cancelling a `convert`
    closes its request, and the gateway then stops the job and releases its machine.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        timeout: float = 600.0,
        busy_timeout: float = 120.0,
        max_connections: int = 16,
    ) -> None:
        self.busy_timeout = busy_timeout
        self._http = httpx.AsyncClient(
            base_url=base_url,
            timeout=http_timeout(timeout),
            headers=auth_headers(token),
            limits=httpx.Limits(max_connections=max_connections),
        )

    async def convert(
        self,
        source: Source,
        *,
        name: str | None = None,
        folder: str | None = None,
        preset: str | None = None,
        alt: str | None = None,
        original: Original | None = None,
    ) -> Conversion:
        """See `Client.convert`: streamed, never read whole; a `busy` answer is retried only
        when the body can be sent again (a path, bytes, a seekable file object)."""
        upload = prepare(source, name)
        params = query(upload, folder, preset, alt, original)
        retry = BusyRetry(upload, time.monotonic() + self.busy_timeout)
        async for attempt in stamina.retry_context(
            on=retry, attempts=None, timeout=None, wait_initial=0.5, wait_max=10.0
        ):
            with attempt:
                upload.rewind()
                return await self._post(upload, params)
        raise AssertionError("unreachable: stamina raises the last error")  # pragma: no cover

    async def presets(self) -> Presets:
        """The presets this gateway knows (`convert(preset=NAME)`), its default first."""
        return answer(await self._send("GET", "/v1/presets"), Presets)

    async def get(self, image_id: str) -> Conversion:
        """See `Client.get`."""
        return answer(await self._send("GET", image_path(image_id)), Conversion)

    async def list_page(
        self, folder: str | None = None, cursor: str | None = None, limit: int | None = None
    ) -> ImageList:
        """See `Client.list_page`."""
        params = list_params(folder, cursor, limit)
        return answer(await self._send("GET", "/v1/images", params=params), ImageList)

    async def list(
        self, folder: str | None = None, *, page_size: int | None = None
    ) -> AsyncIterator[Conversion]:
        """See `Client.list`: `async for image in client.list("blog")`."""
        cursor: str | None = None
        while True:
            page = await self.list_page(folder, cursor, page_size)
            for image in page.images:
                yield image
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def delete(self, image_id: str, delete_token: str | None = None) -> None:
        """See `Client.delete`."""
        headers = delete_headers(delete_token)
        no_content(await self._send("DELETE", image_path(image_id), headers=headers))

    async def _post(self, upload: Upload, params: dict[str, str]) -> Conversion:
        response = await self._send(
            "POST", "/v1/images", params=params, content=upload.achunks(), headers=upload.headers()
        )
        return answer(response, Conversion)

    async def _send(self, method: str, path: str, **request: Any) -> httpx.Response:
        try:
            return await self._http.request(method, path, **request)
        except httpx.TransportError as error:
            raise TransportError(f"cannot reach {self._http.base_url}: {error}") from error

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
