"""The Python client of an uplodr gateway: `Client` and its asyncio twin `AsyncClient`.

    from uplodr import Client

    with Client("http://127.0.0.1:8080", token="…") as uplodr:
        conversion = uplodr.convert("photo.jpg", folder="blog/2026")
        for image in uplodr.list("blog"):  # newest first, a page at a time
            print(image.id, image.file_name)
        uplodr.delete(conversion.id, conversion.delete_token)
    for variant in conversion.variants:
        print(variant.mime_type, variant.width, variant.url)

Answers are the frozen dataclasses of `uplodr.answer` (Conversion, Variant, Quality, Job, …;
Presets and PresetInfo from `presets()`; ImageList from `list_page()`); errors are the
exceptions of `uplodr.client.errors`, one per error code of the server. Needs only httpx,
stamina and msgspec: importing it loads neither libvips nor gRPC (measured: see README,
"Python client").
"""

from __future__ import annotations

from uplodr.answer import (
    Conversion,
    ImageList,
    Job,
    Placeholder,
    PresetInfo,
    Presets,
    Quality,
    Skipped,
    Variant,
)
from uplodr.client._async import AsyncClient
from uplodr.client._sync import Client
from uplodr.client._upload import Original, Source
from uplodr.client.errors import (
    ApiError,
    Busy,
    ClientError,
    CorruptImage,
    Forbidden,
    Internal,
    InvalidRequest,
    LimitExceeded,
    MethodNotAllowed,
    NotFound,
    ProviderError,
    StorageUnavailable,
    TooLarge,
    TransportError,
    Unauthenticated,
    UnsupportedImage,
    UploadTimeout,
    WorkerUnavailable,
)

__all__ = [
    "ApiError",
    "AsyncClient",
    "Busy",
    "Client",
    "ClientError",
    "Conversion",
    "CorruptImage",
    "Forbidden",
    "ImageList",
    "Internal",
    "InvalidRequest",
    "Job",
    "LimitExceeded",
    "MethodNotAllowed",
    "NotFound",
    "Original",
    "Placeholder",
    "PresetInfo",
    "Presets",
    "ProviderError",
    "Quality",
    "Skipped",
    "Source",
    "StorageUnavailable",
    "TooLarge",
    "TransportError",
    "Unauthenticated",
    "UnsupportedImage",
    "UploadTimeout",
    "Variant",
    "WorkerUnavailable",
]
