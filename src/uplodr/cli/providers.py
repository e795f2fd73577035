"""Choose and build a machine provider from command-line options: one place for every command
(serve, reap, machines ls) so they all see the same machines."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from uplodr.cli.units import SIZE
from uplodr.errors import ProviderError
from uplodr.machines.base import Provider
from uplodr.machines.fly import FlyConfig, FlyProvider
from uplodr.machines.local import LocalProvider

F = TypeVar("F", bound=Callable[..., Any])


def provider_options(func: F) -> F:
    options = [
        click.option(
            "--provider",
            type=click.Choice(["local", "fly"]),
            default="local",
            envvar="UPLODR_PROVIDER",
            show_default=True,
            help="Where machines run: local worker processes, or Fly Machines "
            "(configured by FLY_API_TOKEN and UPLODR_FLY_* variables, see README).",
        ),
        click.option(
            "--state-dir",
            type=click.Path(path_type=Path, file_okay=False),
            envvar="UPLODR_STATE_DIR",
            help="Local provider: where machine records live (shared by serve, reap, machines).",
        ),
        click.option(
            "--machine-memory",
            type=SIZE,
            envvar="UPLODR_MACHINE_MEMORY",
            help="Memory of each machine, e.g. 512M (local: a cgroup limit; fly: guest memory).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_provider(provider: str, state_dir: Path | None, machine_memory: int | None) -> Provider:
    memory_mb = machine_memory // (1024 * 1024) if machine_memory else None
    try:
        if provider == "fly":
            return FlyProvider(FlyConfig.from_env(os.environ))
        return LocalProvider(state_dir, memory_mb=memory_mb)
    except (ProviderError, ValueError) as error:
        raise click.ClickException(str(error)) from None
