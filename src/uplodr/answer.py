"""The answers of the HTTP API as typed, frozen dataclasses: one definition that the Python
client decodes into (`msgspec`, validating as it decodes) and that the gateway's OpenAPI
document is generated from, so the contract a client reads and the one the server publishes
cannot drift apart (the schemathesis run in the tests checks the server's real answers
against it).

Fields that later work adds (the image's intrinsic size, a variant's format and role, the
placeholder, the `<picture>` markup) are optional here: a client accepts their absence, and
fields it does not know yet are ignored, so an older client keeps working with a newer server.
Pure: imports nothing heavy (msgspec's `Meta` only carries the descriptions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from msgspec import Meta


@dataclass(frozen=True)
class Variant:
    """One stored file made from the upload."""

    url: Annotated[str, Meta(description="Public URL of the stored file.")]
    mime_type: Annotated[str, Meta(description="e.g. image/webp")]
    width: int
    height: int
    size_bytes: int
    format: Annotated[str | None, Meta(description="webp, avif, jpeg, png, …")] = None
    role: Annotated[str | None, Meta(description="full, width, thumbnail or original")] = None


@dataclass(frozen=True)
class Placeholder:
    """Tiny stand-ins to show while the image loads."""

    thumbhash: str
    blurhash: str
    data_url: Annotated[str, Meta(description="A small data: URL image.")]


@dataclass(frozen=True)
class Job:
    """The machine that converted the upload (absent when the answer came from storage)."""

    id: str
    machine: str
    machine_seconds: float
    cost: Annotated[float, Meta(description="In the gateway's price table's currency.")]


@dataclass(frozen=True)
class Conversion:
    """The answer of POST /v1/images: where each variant of the image is stored."""

    file_name: str
    folder: str
    variants: tuple[Variant, ...]
    deduplicated: Annotated[
        bool, Meta(description="True when the same bytes were converted before: no machine ran.")
    ]
    timings: Annotated[
        dict[str, float], Meta(description="Seconds per phase: create, boot, …, total.")
    ]
    width: Annotated[int | None, Meta(description="Intrinsic width of the full-size output.")] = (
        None
    )
    height: int | None = None
    placeholder: Placeholder | None = None
    html: Annotated[str | None, Meta(description="<picture> markup for the variants.")] = None
    job: Job | None = None


@dataclass(frozen=True)
class ErrorAnswer:
    """Every error answer: a one-line message and a stable code (see docs/security.md)."""

    error: str
    code: str


@dataclass(frozen=True)
class Health:
    """The liveness answer."""

    status: str
