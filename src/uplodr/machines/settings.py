"""How a provider is configured: the settings every provider shares, and the ones it declares.

`ProviderSettings` carries what every command that deals with machines gives every provider
(state dir, machine size) plus the values of each provider's own options by name. A provider
module declares its own options as data (`ProviderOption`: name, flag, environment variable,
help); `uplodr.cli.providers` turns them into command-line options, and the provider's factory
reads and validates them with `ProviderOption.read`, raising a one-line ProviderError.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from uplodr.errors import ProviderError

T = TypeVar("T")


@dataclass(frozen=True)
class ProviderOption:
    """One provider-specific setting: `--flag VALUE`, or the environment variable `envvar`."""

    name: str  # key in ProviderSettings.options, e.g. "fly_app"
    flag: str  # e.g. "--fly-app"
    envvar: str  # e.g. "UPLODR_FLY_APP"
    help: str

    def read(
        self,
        settings: ProviderSettings,
        parse: Callable[[str], T],
        default: T,
        *,
        what: str = "a value",
    ) -> T:
        """The option's value parsed by `parse`, `default` when it was not given. A value
        `parse` refuses (ValueError) is a ProviderError naming the flag and variable."""
        text = settings.options.get(self.name)
        if text is None or text == "":
            return default
        try:
            return parse(text)
        except ValueError:
            raise ProviderError(
                f"{self.flag} ({self.envvar}) must be {what}, not {text!r}"
            ) from None


@dataclass(frozen=True)
class ProviderSettings:
    """What a provider is built from.

    - `state_dir`: where a provider keeps state on this host (local: machine records).
    - `memory_mb`, `cpus`: the size of each machine (None: the provider's default).
    - `options`: the provider's own options (`ProviderOption.name` → text as given).
    - `env`: the environment, for settings that are never options (secrets such as
      FLY_API_TOKEN, and platform variables such as FLY_APP_NAME).
    """

    state_dir: Path | None = None
    memory_mb: int | None = None
    cpus: int | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=lambda: os.environ, repr=False)

    def __post_init__(self) -> None:
        if self.memory_mb is not None and self.memory_mb < 1:
            raise ProviderError(f"--machine-memory must be at least 1M, not {self.memory_mb} MB")
        if self.cpus is not None and self.cpus < 1:
            raise ProviderError(f"--machine-cpus must be at least 1, not {self.cpus}")
