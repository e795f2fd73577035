"""`uplodr sweep`: report, and delete, what failed jobs left in the stores."""

from __future__ import annotations

import asyncio
import os
import time

import click

from uplodr.cli.units import format_age, format_size
from uplodr.errors import InvalidRequest, UplodrError
from uplodr.storage.s3 import quiet_retries
from uplodr.storage.spec import open_store
from uplodr.storage.sweep import Leftover, SweepResult, sweep


def sweep_stores(specs: list[str], older_than: float, dry_run: bool, folder: str) -> int:
    """Sweep every store in turn; the exit status is 1 when a listing or a delete failed."""
    return asyncio.run(_sweep_all(specs, older_than, dry_run, folder))


async def _sweep_all(specs: list[str], older_than: float, dry_run: bool, folder: str) -> int:
    status = 0
    for spec in specs:
        try:
            store = open_store(spec, None, os.environ)
        except (ValueError, UplodrError) as error:
            click.echo(f"{spec}: {error}", err=True)
            status = 1
            continue
        try:
            with quiet_retries():  # the one line of a failure says how long it tried
                result = await sweep(store, older_than, dry_run=dry_run, prefix=folder)
        except UplodrError as error:
            click.echo(
                f"{store.description}: {error}"
                if isinstance(error, InvalidRequest)
                else str(error),
                err=True,
            )
            status = 1
            continue
        finally:
            await store.aclose()
        _report(store.description, result, dry_run)
        if result.failed:
            status = 1
    return status


def _report(where: str, result: SweepResult, dry_run: bool) -> None:
    verb = "would delete" if dry_run else "deleted"
    done = result.stale if dry_run else result.deleted
    for leftover in done:
        click.echo(f"{where}: {verb} {_describe(leftover)}")
    for name, why in result.failed.items():
        click.echo(f"{where}: failed to delete {name}: {why}", err=True)
    objects = sum(len(leftover.objects) for leftover in done)
    click.echo(
        f"{where}: {len(result.stale)} stale, {len(done)} {verb} ({objects} objects, "
        f"{format_size(sum(leftover.size for leftover in done))}), {len(result.failed)} failed, "
        f"{result.young} too recent to touch"
    )


def _describe(leftover: Leftover) -> str:
    count = len(leftover.objects)
    return (
        f"{leftover.kind} {leftover.name} ({count} object{'s' if count != 1 else ''}, "
        f"{format_size(leftover.size)}, {format_age(time.time() - leftover.newest)} old)"
    )
