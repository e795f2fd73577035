"""What an answer made, read from the answer instead of assumed (issue 17: a format is stored only
where it wins by the preset's `format_margin`, so WebP, AVIF or JPEG XL may be absent)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from uplodr import formats
from uplodr.preset import DEFAULT_PRESET

# The last fallback: always stored when asked for.
ALWAYS: tuple[str, ...] = ("jpeg",)


def full_formats(
    variants: Iterable[tuple[object, object]],
    skipped: Iterable[tuple[object, object]] = (),
    asked: Sequence[str] = DEFAULT_PRESET.formats,
) -> list[str]:
    """The full-size formats of an answer's (format, role) pairs, checked against what the
    preset asked for given its (format, reason) `skipped`: in the preset's order, the JPEG
    fallback among them when asked, and every other format asked for either made or skipped
    with a one-line reason (never both, never neither)."""
    made = [str(name) for name, role in variants if role == "full"]
    dropped = {str(name): str(reason) for name, reason in skipped}
    assert made == [name for name in asked if name in made], (made, asked)
    assert sorted([*made, *dropped]) == sorted(asked), (made, dropped, asked)
    assert all(reason and "\n" not in reason for reason in dropped.values()), dropped
    assert all(name in made for name in ALWAYS if name in asked), (made, dropped)
    return made


def of_json(answer: dict[str, object], asked: Sequence[str] = DEFAULT_PRESET.formats) -> list[str]:
    """`full_formats` of an HTTP answer (JSON)."""
    variants = answer["variants"]
    skipped = answer.get("skipped", [])
    assert isinstance(variants, list) and isinstance(skipped, list)
    return full_formats(
        [(v["format"], v["role"]) for v in variants],
        [(s["format"], s["reason"]) for s in skipped],
        asked,
    )


def of_proto(answer: object, asked: Sequence[str] = DEFAULT_PRESET.formats) -> list[str]:
    """`full_formats` of a gRPC answer (an UploadResp)."""
    return full_formats(
        [(v.format, v.role) for v in answer.variants],  # type: ignore[attr-defined]
        [(s.format, s.reason) for s in answer.skipped],  # type: ignore[attr-defined]
        asked,
    )


def mime_types(names: Iterable[str]) -> list[str]:
    return [formats.get(name).mime_type for name in names]
