"""What every command that talks to a running gateway takes: its URL (`--server`) and a bearer
token (`--token`); and a folder checked as the gateway checks it, before any request."""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from typing import TypeVar

import click

F = TypeVar("F", bound=Callable[..., object])


def gateway_url(value: str) -> str:
    """--server: an http(s) URL with a host, said before any upload rather than once per file."""
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise click.BadParameter(
            f"{value!r} is not an http:// or https:// URL (e.g. http://127.0.0.1:8080)"
        )
    return value


def store_folder(value: str) -> str:
    """--folder: checked as the gateway checks it, before any upload or listing (a bad one was
    once found only after every file had been sent and refused)."""
    from uplodr.errors import InvalidRequest
    from uplodr.names import safe_folder

    try:
        return safe_folder(value)
    except InvalidRequest as error:
        raise click.BadParameter(str(error)) from None


def gateway_options(command: F) -> F:
    """--server and --token (also from UPLODR_SERVER and UPLODR_TOKEN)."""
    command = click.option(
        "--token", envvar="UPLODR_TOKEN", help="Bearer token, if the gateway needs one."
    )(command)
    return click.option(
        "--server",
        default="http://127.0.0.1:8080",
        envvar="UPLODR_SERVER",
        callback=lambda _ctx, _param, value: gateway_url(value),
        help="The gateway's root URL.",
    )(command)
