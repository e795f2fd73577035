"""A worker's outputs, checked against the job's keys, published by the gateway.

A worker holds no store credential (docs/security.md): it sends each output back — bytes
spooled to files by `uplodr.dispatch.worker_client`, described by the final answer's `variants`
— and the gateway publishes them with `uplodr.storage.Publisher` (every variant, then the
manifest; all or nothing). The keys are the gateway's own: folder, name and digest come from
the request and the bytes it received, never from the worker. From the worker only a variant's
kind is taken, and only a kind an encoder writes (`uplodr.formats.output_kind`: a (role,
format) pair of `variant_shapes`, that format's extension and MIME type, a suffix of that role),
with a size equal to the bytes that arrived — checked once by the worker client, before the
machine is released (so a lying worker's machine is not kept), and again here. So the most a
worker a crafted file took over can do is answer its own job with wrong pixels; it cannot
write another key.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from uplodr import formats
from uplodr.dispatch.worker_client import BadOutput
from uplodr.formats import output_kind
from uplodr.preset import QUALITY_METRICS
from uplodr.storage import Blob, Published, Publisher, SetInfo


class OutputVariant(Protocol):
    """One output as a worker's answer describes it (`uplodr.v1.Variant`)."""

    @property
    def role(self) -> str: ...
    @property
    def format(self) -> str: ...
    @property
    def key_suffix(self) -> str: ...
    @property
    def ext(self) -> str: ...
    @property
    def mime_type(self) -> str: ...
    @property
    def size_bytes(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def quality(self) -> QualityReply: ...


class QualityReply(Protocol):
    """A variant's quality receipt (`uplodr.v1.Quality`)."""

    @property
    def metric(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def setting(self) -> int: ...
    @property
    def source(self) -> str: ...
    @property
    def encodes(self) -> int: ...
    @property
    def saved(self) -> float: ...


class SkippedReply(Protocol):
    @property
    def format(self) -> str: ...
    @property
    def reason(self) -> str: ...


class PlaceholderReply(Protocol):
    @property
    def thumbhash(self) -> str: ...
    @property
    def blurhash(self) -> str: ...
    @property
    def data_url(self) -> str: ...


class FileReply(Protocol):
    """A worker's answer for one file (`uplodr.v1.UploadResp`), as far as publishing reads it."""

    @property
    def variants(self) -> Sequence[OutputVariant]: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def placeholder(self) -> PlaceholderReply: ...  # all empty: none (nothing was decoded)
    @property
    def skipped(self) -> Sequence[SkippedReply]: ...


def checked_blob(variant: OutputVariant, path: Path) -> Blob:
    """The output `variant` describes, read from `path` when it is written; BadOutput when it
    is not a kind of output uplodr makes or its bytes are not the size it says (the worker
    client checked this already; a caller of `publish_outputs` may not have used it)."""
    try:
        role, fmt = output_kind(
            variant.role, variant.format, variant.key_suffix, variant.ext, variant.mime_type
        )
    except ValueError as error:
        raise BadOutput(f"worker sent {error}") from None
    if path.stat().st_size != variant.size_bytes:
        raise BadOutput("worker sent an output whose size is not the one it announced")
    return Blob(
        suffix=variant.key_suffix,
        ext=fmt.ext,
        mime_type=fmt.mime_type,
        width=variant.width,
        height=variant.height,
        format=fmt.name,
        role=role.name,
        path=path,
        quality=checked_quality(variant),
    )


# A worker's receipt is data from a machine that ran untrusted input: kept only in its shape.
SOURCES = ("encoded", "upload")
REASON_CHARS = 200


def checked_quality(variant: OutputVariant) -> dict[str, Any] | None:
    """The variant's quality receipt as the manifest and answer keep it; None when it has none,
    BadOutput when it is not one uplodr writes."""
    quality = variant.quality
    if not quality.metric:  # an absent message reads as empty
        return None
    if (
        quality.metric not in QUALITY_METRICS
        or quality.source not in SOURCES
        or not (math.isfinite(quality.score) and -1000 <= quality.score <= 100)
        or not (math.isfinite(quality.saved) and -100 <= quality.saved <= 1)
        or not 0 <= quality.setting <= 100
    ):
        raise BadOutput("worker sent a quality receipt uplodr does not write")
    return {
        "metric": quality.metric,
        "score": round(quality.score, 1),
        "setting": None if quality.source == "upload" else quality.setting,
        "source": quality.source,
        "encodes": quality.encodes,
        "saved": round(quality.saved, 3),
    }


def checked_skipped(response: FileReply) -> tuple[dict[str, str], ...]:
    """The formats a worker says it did not store, and why (a full-size format's name, and a
    reason cut to one short line)."""
    known = {fmt.name for fmt in formats.formats_for("full")}
    skipped = []
    for item in response.skipped:
        if item.format not in known:
            raise BadOutput("worker skipped a format uplodr does not make")
        reason = " ".join(item.reason.split())[:REASON_CHARS]
        skipped.append({"format": item.format, "reason": reason})
    return tuple(skipped)


def checked_blobs(variants: Sequence[OutputVariant], outputs: Path) -> list[Blob]:
    """Every output of one file (spooled to `outputs`/0, /1, …), checked; no two to one key."""
    blobs = [checked_blob(v, outputs / str(index)) for index, v in enumerate(variants)]
    places = {(b.suffix, b.ext) for b in blobs}
    if len(places) != len(blobs):
        raise BadOutput("worker sent two outputs for the same key")
    return blobs


async def publish_outputs(
    publisher: Publisher,
    response: FileReply,
    outputs: Path,
    folder: str,
    stem: str,
    digest: str,
    preset_json: str,
    file_name: str = "",
    alt: str = "",
) -> Published:
    """Publish one file's checked outputs under the job's keys (all or nothing, manifest last);
    the manifest also keeps the upload's file name and alt text (the answer of a later GET)."""
    blobs = checked_blobs(response.variants, outputs)
    placeholder = response.placeholder if response.placeholder.thumbhash else None
    info = SetInfo(
        response.width,
        response.height,
        {
            "thumbhash": placeholder.thumbhash,
            "blurhash": placeholder.blurhash,
            "data_url": placeholder.data_url,
        }
        if placeholder is not None
        else None,
        file_name,
        alt,
        skipped=checked_skipped(response),
    )
    return await publisher.publish(folder, stem, digest, blobs, preset_json, info)
