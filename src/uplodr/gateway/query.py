"""A route's query parameters: one it does not take is refused (400, naming it and the ones it
takes), never ignored — a misspelt `?foldr=` once stored into the root folder and answered 200."""

from __future__ import annotations

from starlette.requests import Request

from uplodr.errors import InvalidRequest


def refuse_unknown_params(request: Request, known: tuple[str, ...]) -> None:
    """InvalidRequest naming the query parameters this route does not take, and the ones it
    does (each name shortened: the message stays one short line)."""
    unknown = [key for key in dict.fromkeys(request.query_params) if key not in known]
    if unknown:
        shown = ", ".join(repr(k if len(k) <= 40 else k[:39] + "…") for k in unknown[:5])
        plural = "s" if len(unknown) > 1 else ""
        raise InvalidRequest(f"unknown query parameter{plural} {shown} (known: {', '.join(known)})")
