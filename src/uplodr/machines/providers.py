"""The one list of providers: a name, a line of help, a factory, and the provider's own options.

Every command that deals with machines (`serve`, `reap`, `machines ls`) chooses its provider
here, so they all see the same machines. A factory builds a provider from `ProviderSettings`
and raises ProviderError with one line when they do not fit; the options a provider declares
become command-line options (`uplodr.cli.providers`).

Adding a provider is one module (the Provider protocol of `uplodr.machines.base`, its
`OPTIONS` and a `from_settings` factory), one line below, and its section in docs/machines.md;
`tests/machines/contract/` then runs the contract suite on it once it has a harness there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from uplodr.errors import ProviderError
from uplodr.machines import docker, fly, kubernetes, local
from uplodr.machines.base import Provider
from uplodr.machines.settings import ProviderOption, ProviderSettings


@dataclass(frozen=True)
class ProviderKind:
    name: str
    help: str
    factory: Callable[[ProviderSettings], Provider]
    options: tuple[ProviderOption, ...] = ()
    # What the options' flags and variables start with (--PREFIX-*, UPLODR_PREFIX_*), when
    # not the name: kubectl's own short name for Kubernetes.
    option_prefix: str = ""

    @property
    def prefix(self) -> str:
        return self.option_prefix or self.name


PROVIDERS: dict[str, ProviderKind] = {
    kind.name: kind
    for kind in (
        ProviderKind("local", "worker processes on this host", local.from_settings, local.OPTIONS),
        ProviderKind(
            "fly", "Fly Machines (FLY_API_TOKEN, --fly-*)", fly.from_settings, fly.OPTIONS
        ),
        ProviderKind(
            "docker", "containers (DOCKER_HOST, --docker-*)", docker.from_settings, docker.OPTIONS
        ),
        ProviderKind(
            "kubernetes",
            "pods (in-cluster or $KUBECONFIG, --k8s-*)",
            kubernetes.from_settings,
            kubernetes.OPTIONS,
            option_prefix="k8s",
        ),
    )
}


def build_provider(name: str, settings: ProviderSettings) -> Provider:
    """The provider `name` built from `settings`. Raises ProviderError with one line."""
    kind = PROVIDERS.get(name)
    if kind is None:
        raise ProviderError(f"no provider {name!r}; choose one of {', '.join(PROVIDERS)}")
    return kind.factory(settings)
