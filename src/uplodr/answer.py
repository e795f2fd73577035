"""The answers of the HTTP API as typed, frozen dataclasses: one definition that the Python
client decodes into (`msgspec`, validating as it decodes) and that the gateway's OpenAPI
document is generated from, so the contract a client reads and the one the server publishes
cannot drift apart (the schemathesis run in the tests checks the server's real answers
against it).

The fields that came with web-ready output (the image's intrinsic size, a variant's format
and role, the placeholder, the `<picture>` markup) are optional here: `null` when there is
nothing to say (no markup when only the original was kept), absent from an older gateway; a
client accepts both, and ignores fields it does not know yet, so an older client keeps working
with a newer server.
Pure: imports nothing heavy (msgspec's `Meta` only carries the descriptions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from msgspec import Meta


@dataclass(frozen=True)
class Quality:
    """The look a variant was delivered at (a preset with a quality target; issue 17)."""

    metric: Annotated[str, Meta(description="The perceptual metric: ssimulacra2.")]
    score: Annotated[
        float,
        Meta(
            description="The variant's score at 1:1 against the decoded upload (SSIMULACRA2: "
            "100 identical, ~90 visually lossless, ~70 high-quality web), estimated from a sample."
        ),
    ]
    setting: Annotated[
        int | None,
        Meta(
            description="The encoder's quality setting used; null when the upload itself, "
            "losslessly optimized, is served (source upload)."
        ),
    ] = None
    source: Annotated[
        Literal["encoded", "upload"],
        Meta(description="encoded, or upload: the upload losslessly optimized, metadata dropped."),
    ] = "encoded"
    encodes: Annotated[
        int, Meta(description="Trial encodes of a sample plus full-size encodes it took.")
    ] = 0
    saved: Annotated[
        float,
        Meta(
            description="Share of bytes saved against the preset's fixed setting (estimated; "
            "negative when the target needs more bytes than that setting)."
        ),
    ] = 0.0


@dataclass(frozen=True)
class Skipped:
    """A format the preset asked for that was not stored."""

    format: str
    reason: Annotated[str, Meta(description="Why, e.g. not 10 % smaller than the fallback.")]


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
    quality: Annotated[
        Quality | None,
        Meta(description="Null at fixed settings, for the thumbnail and the original."),
    ] = None


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
        dict[str, float],
        Meta(
            description="Seconds per phase: `wait` (for a pooled machine: 0 when one was idle, "
            "its create and boot when one was made for this job), or `create`, `boot` and "
            "`destroy` of a machine of its own (--pool-idle 0); then `transfer`, `convert`, "
            "`store`, `total` and `machine_seconds` (this job's share of its machine). "
            "Deduplicated answers carry the first conversion's timings."
        ),
    ]
    width: Annotated[
        int | None,
        Meta(
            description="Intrinsic width of the full-size output (of the original when only it "
            "was kept): the <img> width."
        ),
    ] = None
    height: Annotated[int | None, Meta(description="Intrinsic height, as `width`.")] = None
    placeholder: Annotated[
        Placeholder | None,
        Meta(description="Null when nothing was decoded (only the original kept)."),
    ] = None
    html: Annotated[
        str | None,
        Meta(
            description="A <picture> element of the variants: a <source> per modern format that "
            "was made, smallest full size first, then a JPEG <img> with srcset, sizes, width, "
            "height and the request's alt; null when there is "
            "no variant a browser shows (only the original kept)."
        ),
    ] = None
    job: Job | None = None
    id: Annotated[
        str | None,
        Meta(
            description="The image's id (`img_…`): GET and DELETE /v1/images/{id}. Stable: the "
            "same upload (bytes, preset, folder, name) always has the same id. Null from a "
            "gateway before ids."
        ),
    ] = None
    delete_token: Annotated[
        str | None,
        Meta(
            description="Deletes this image alone (DELETE /v1/images/{id} with the header "
            "`Uplodr-Delete-Token`). Only in the answer of the upload that stored the set "
            "(`deduplicated` false): a repeat of the same bytes does not get it again, so keep "
            "it from the first answer."
        ),
    ] = None

    skipped: Annotated[
        tuple[Skipped, ...],
        Meta(
            description="Formats the preset asked for and not stored: not smaller than the "
            "next fallback by the preset's format_margin at the same quality target."
        ),
    ] = ()


@dataclass(frozen=True)
class ImageList:
    """The answer of GET /v1/images: one page of the stored images, newest first."""

    images: Annotated[
        tuple[Conversion, ...],
        Meta(description="Each image's stored answer, as GET /v1/images/{id} gives it."),
    ]
    next_cursor: Annotated[
        str | None,
        Meta(description="Pass as `?cursor=` for the next page; null after the last page."),
    ] = None


@dataclass(frozen=True)
class PresetInfo:
    """One preset a request may name (`?preset=NAME`): what it makes."""

    name: str
    formats: Annotated[tuple[str, ...], Meta(description="Full-size formats, best first.")]
    widths: Annotated[
        tuple[int, ...], Meta(description="Responsive widths (px), each below the full size.")
    ]
    max_long_side: Annotated[int, Meta(description="Longest side of the full-size variants.")]
    thumbnail_width: Annotated[int, Meta(description="Width of the PNG thumbnail; 0 = none.")]
    keep_original: Annotated[
        bool, Meta(description="The upload is also stored as it came (with its metadata).")
    ]
    quality_metric: Annotated[
        str | None,
        Meta(
            description="The perceptual metric of its quality target (ssimulacra2); null: "
            "fixed encoder settings."
        ),
    ] = None
    quality_target: Annotated[
        float | None,
        Meta(
            description="The score every full-size and width variant is encoded to meet, at "
            "the fewest bytes; null: fixed encoder settings."
        ),
    ] = None
    format_margin: Annotated[
        int | None,
        Meta(
            description="With a target: a format is stored only when it is at least this many "
            "percent smaller than the next more widely decoded format kept (0: every format)."
        ),
    ] = None


@dataclass(frozen=True)
class Presets:
    """The answer of GET /v1/presets: the presets this gateway knows, its default first."""

    presets: tuple[PresetInfo, ...]


@dataclass(frozen=True)
class ErrorAnswer:
    """Every error answer: a one-line message and a stable code (see docs/security.md)."""

    error: str
    code: str


@dataclass(frozen=True)
class Health:
    """The liveness answer."""

    status: str


@dataclass(frozen=True)
class CheckReport:
    """One readiness check: `store` (every store writable) or `provider` (machines can be
    made), and "ok" or one line saying what failed."""

    name: str
    ok: bool
    message: str


@dataclass(frozen=True)
class ReadinessReport:
    """The answer of GET /readyz: 200 with `status` "ready", or 503 with "unready" and
    `error` naming the failed checks (with `code` "unready", as every error answer)."""

    status: Literal["ready", "unready"]
    checks: tuple[CheckReport, ...]
    error: str | None = None
    code: str | None = None


@dataclass(frozen=True)
class RebuildFailure:
    """One set a rebuild could not convert again, and why (one line)."""

    image: Annotated[str, Meta(description="The set's folder/stem, e.g. blog/cat.")]
    code: Annotated[str, Meta(description="The error's code, as in every error answer.")]
    error: str


@dataclass(frozen=True)
class Rebuild:
    """The answer of POST /v1/rebuilds and GET /v1/rebuilds/{id}: how far a rebuild got."""

    id: str
    folder: str
    preset: str
    replace: Annotated[bool, Meta(description="Old sets are deleted once their new set is in.")]
    state: Annotated[
        Literal["running", "stopping", "done", "stopped", "failed"],
        Meta(description="`failed`: the folder could not be listed (see `error`)."),
    ]
    total: Annotated[int, Meta(description="Sets found under the folder (its subfolders too).")]
    rebuilt: Annotated[int, Meta(description="Converted again on a machine.")]
    already_done: Annotated[
        int, Meta(description="Their set in the new preset existed already: no machine ran.")
    ]
    current: Annotated[
        int, Meta(description="Sets made with the new preset themselves (nothing to do).")
    ]
    skipped: Annotated[
        tuple[str, ...],
        Meta(description="Sets without a kept original (never re-encoded from a variant)."),
    ]
    failed: tuple[RebuildFailure, ...]
    replaced: Annotated[int, Meta(description="Old sets deleted (with `replace`).")]
    machine_seconds: float
    cost: Annotated[float, Meta(description="In the gateway's price table's currency.")]
    error: str | None = None
