"""The provider options of every command that deals with machines (serve, reap, machines ls), so
they all see the same machines: the shared ones (--provider, --state-dir, --machine-memory,
--machine-cpus) and each provider's own, turned into click options from the declarations in
`uplodr.machines.providers`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from uplodr.cli.units import SIZE
from uplodr.errors import ProviderError
from uplodr.machines.base import Provider
from uplodr.machines.providers import PROVIDERS, build_provider
from uplodr.machines.settings import ProviderSettings


class ConfigError(click.ClickException):
    """A setting that does not fit: one line, exit code 2 (like a usage error)."""

    exit_code = 2


@dataclass(frozen=True)
class ProviderChoice:
    """The provider a command was told to use, and its settings."""

    name: str
    settings: ProviderSettings

    def build(self) -> Provider:
        try:
            return build_provider(self.name, self.settings)
        except ProviderError as error:
            raise ConfigError(str(error)) from None


def _shared_options() -> list[Callable[[Any], Any]]:
    kinds = "; ".join(f"{kind.name}: {kind.help}" for kind in PROVIDERS.values())
    return [
        click.option(
            "--provider",
            type=click.Choice(list(PROVIDERS)),
            default="local",
            envvar="UPLODR_PROVIDER",
            show_default=True,
            help=f"Where machines run ({kinds}).",
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
            help="Memory of each machine, e.g. 512M (local: a cgroup limit; fly: guest memory, "
            "default 1G).",
        ),
        click.option(
            "--machine-cpus",
            type=int,
            envvar="UPLODR_MACHINE_CPUS",
            help="CPUs of each machine (fly: guest CPUs, default 2; local: not supported).",
        ),
    ]


def _own_options() -> list[Callable[[Any], Any]]:
    return [
        click.option(
            option.flag, option.name, envvar=option.envvar, show_envvar=True, help=option.help
        )
        for kind in PROVIDERS.values()
        for option in kind.options
    ]


def provider_options(func: Callable[..., None]) -> Callable[..., None]:
    """Add the provider options to a command; it receives them as one `provider:
    ProviderChoice` argument."""
    own = [option.name for kind in PROVIDERS.values() for option in kind.options]

    @functools.wraps(func)
    def command(*args: Any, **kwargs: Any) -> None:
        options = {name: value for name in own if (value := kwargs.pop(name)) is not None}
        memory: int | None = kwargs.pop("machine_memory")
        try:
            settings = ProviderSettings(
                state_dir=kwargs.pop("state_dir"),
                memory_mb=None if memory is None else memory // (1024 * 1024),
                cpus=kwargs.pop("machine_cpus"),
                options=options,
            )
        except ProviderError as error:
            raise ConfigError(str(error)) from None
        func(*args, provider=ProviderChoice(kwargs.pop("provider"), settings), **kwargs)

    decorated: Callable[..., None] = command
    for option in reversed([*_shared_options(), *_own_options()]):
        decorated = option(decorated)
    return decorated
