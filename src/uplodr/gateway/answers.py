"""The one answer of POST /v1/images (`uplodr.answer.Conversion`: what the client decodes and the
OpenAPI document is made from), built the same way from a job's published set and from a stored
set's manifest — so a repeated upload, answered from storage, gets the answer of the first, its
`<picture>` markup and placeholder included, only with no job. The markup is made here, per
request (`uplodr.markup.picture` with the request's alt), never stored.

A manifest from before the web-ready fields leaves them empty; they are answered as null (and
without a variant's format and role there is no markup), never guessed.

`stored` is the answer of GET /v1/images/{id} and of each image of a listing: the manifest's
set with the file name and alt text its upload gave (manifest version 3; an older manifest has
neither: the key's stem stands for the name and the alt is empty), `deduplicated` true (no
machine ran), no timings, no job, and never a delete token (that is given once, to the upload
that stored the set).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any, Protocol

import msgspec

from uplodr import answer
from uplodr.dispatch.job import JobResult
from uplodr.markup import MarkupError, picture
from uplodr.storage import Published
from uplodr.storage.catalog import ImageRef


def answer_json(conversion: answer.Conversion) -> dict[str, Any]:
    """The answer as JSON: every field, `null` where unknown, and no `job` when no machine ran."""
    data: dict[str, Any] = msgspec.to_builtins(conversion)
    if data.get("job") is None:
        data.pop("job", None)
    return data


def markup(variants: Iterable[answer.Variant], alt: str) -> str | None:
    """The `<picture>` element for these variants; None when there is nothing a page can show
    (only the original was kept)."""
    try:
        return picture([asdict(v) for v in variants], alt=alt)
    except MarkupError:
        return None


class _StoredVariant(Protocol):
    """A variant as storage describes it (a manifest's or a publish's)."""

    @property
    def url(self) -> str: ...
    @property
    def mime_type(self) -> str: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def size_bytes(self) -> int: ...
    @property
    def format(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def quality(self) -> Mapping[str, Any] | None: ...


def _variant(v: _StoredVariant) -> answer.Variant:
    # "" is what a manifest or worker from before these fields says: unknown.
    return answer.Variant(
        url=v.url,
        mime_type=v.mime_type,
        width=v.width,
        height=v.height,
        size_bytes=v.size_bytes,
        format=v.format or None,
        role=v.role or None,
        quality=_quality(v.quality),
    )


def _quality(receipt: Mapping[str, Any] | None) -> answer.Quality | None:
    """A stored receipt (checked when it was published) as the answer carries it."""
    if receipt is None:
        return None
    try:
        return msgspec.convert(receipt, answer.Quality)
    except msgspec.ValidationError:
        return None


def _conversion(
    file_name: str,
    folder: str,
    variants: Sequence[answer.Variant],
    *,
    deduplicated: bool,
    timings: dict[str, float],
    size: tuple[int, int] | None,
    placeholder: Mapping[str, str] | None,
    alt: str,
    image_id: str | None,
    job: answer.Job | None = None,
    skipped: Sequence[Mapping[str, str]] = (),
) -> answer.Conversion:
    return answer.Conversion(
        file_name=file_name,
        folder=folder,
        variants=tuple(variants),
        deduplicated=deduplicated,
        timings=timings,
        width=size[0] if size else None,
        height=size[1] if size else None,
        placeholder=answer.Placeholder(**placeholder) if placeholder else None,
        html=markup(variants, alt),
        job=job,
        id=image_id,
        skipped=tuple(answer.Skipped(item["format"], item["reason"]) for item in skipped),
    )


def from_storage(
    published: Published,
    file_name: str,
    ref: ImageRef,
    alt: str,
    timings: dict[str, float],
) -> answer.Conversion:
    """The answer of a set found in storage (its manifest)."""
    info = published.info
    return _conversion(
        file_name,
        ref.folder,
        [_variant(v) for v in published.variants],
        deduplicated=published.deduplicated,
        timings=timings,
        size=(info.width, info.height) if info else None,
        placeholder=info.placeholder if info else None,
        alt=alt,
        image_id=ref.id,
        skipped=info.skipped if info else (),
    )


def stored(published: Published, ref: ImageRef) -> answer.Conversion:
    """The stored answer of an image (GET /v1/images/{id}): as its upload was answered, with
    the name and alt text its manifest keeps."""
    info = published.info
    file_name = info.file_name if info and info.file_name else ref.stem
    return from_storage(published, file_name, ref, info.alt if info else "", timings={})


def from_job(result: JobResult, published: Published, alt: str, ref: ImageRef) -> answer.Conversion:
    """The answer of a job's conversion of one file, as the gateway published its outputs."""
    (response,) = result.responses
    info = published.info
    return _conversion(
        response.file_name,
        response.folder,
        [_variant(v) for v in published.variants],
        deduplicated=published.deduplicated,
        timings=result.timings.as_dict(),
        size=(info.width, info.height) if info and info.width and info.height else None,
        placeholder=info.placeholder if info else None,
        alt=alt,
        image_id=ref.id,
        skipped=info.skipped if info else (),
        job=answer.Job(
            id=result.job_id,
            machine=result.machine_id,
            machine_seconds=round(result.timings.machine_seconds, 4),
            cost=result.cost,
        ),
    )
