"""`uplodr images ls|show|rm`: the stored images of a gateway, through its HTTP API (as `uplodr
convert` uploads through it) with the Python client.

Exit status: 0 done, 1 the gateway refused or could not be reached (one line: its message and
code), 2 a usage error. `rm` of an image already gone is 1 (`not_found`), as `rm` of a missing
file is: a script that wants "gone either way" checks for that code.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from uplodr.cli.server import gateway_options, store_folder


@contextmanager
def _said_as_one_line() -> Iterator[None]:
    """A refusal or an unreachable gateway as the command's one line, exit status 1."""
    from uplodr.client import ClientError

    try:
        yield
    except ClientError as error:
        raise click.ClickException(str(error)) from None


def _image_line(image: object) -> str:
    from uplodr.answer import Conversion

    assert isinstance(image, Conversion)
    where = f"{image.folder}/{image.file_name}" if image.folder else image.file_name
    size = f"{image.width}x{image.height}" if image.width and image.height else "-"
    return f"{image.id}  {where}  {size}  {len(image.variants)} files"


@click.option(
    "--folder",
    default="",
    callback=lambda _ctx, _param, value: store_folder(value),
    help="Only the images under this folder (its subfolders too).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image.")
@gateway_options
def list_images(folder: str, as_json: bool, server: str, token: str | None) -> None:
    """List the stored images, newest first: id, folder/name, size, number of files."""
    import msgspec

    from uplodr.client import Client

    with _said_as_one_line(), Client(server, token=token, timeout=60) as client:
        for image in client.list(folder or None, page_size=200):
            text = msgspec.json.encode(image).decode() if as_json else _image_line(image)
            click.echo(text)


@click.argument("image_id", metavar="ID")
@gateway_options
def show_image(image_id: str, server: str, token: str | None) -> None:
    """Print an image's stored answer (JSON): its variants, size, placeholder and markup."""
    import msgspec

    from uplodr.client import Client

    with _said_as_one_line(), Client(server, token=token, timeout=60) as client:
        image = client.get(image_id)
    click.echo(json.dumps(msgspec.to_builtins(image), indent=2))


@click.argument("image_id", metavar="ID")
@click.option(
    "--delete-token",
    envvar="UPLODR_DELETE_TOKEN",
    help="The image's delete_token (from its upload's answer). Without it, --token must be a "
    "gateway token whose prefixes cover the image's folder.",
)
@gateway_options
def remove_image(image_id: str, delete_token: str | None, server: str, token: str | None) -> None:
    """Delete an image from every store of the gateway (every variant, width, original and its
    manifest). A store outage fails with storage_unavailable: run it again to finish."""
    from uplodr.client import Client

    if not delete_token and not token:
        raise click.UsageError("give --delete-token (the image's own) or --token (the gateway's)")
    with _said_as_one_line(), Client(server, token=token, timeout=120) as client:
        client.delete(image_id, delete_token)
    click.echo(f"deleted {image_id}")


# Made commands by `uplodr images` in cli/main.py (so they say their errors as every command).
COMMANDS: dict[str, Callable[..., None]] = {
    "ls": list_images,
    "show": show_image,
    "rm": remove_image,
}
