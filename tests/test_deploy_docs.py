"""The Fly deploy kit cannot drift from the code: every variable docs/deploy.md and
deploy/fly/fly.toml name is one uplodr (or its S3 store, or Fly's platform) reads, every `uplodr`
command they show exists with the options they give it, and fly.toml parses with what Fly needs
and with [env] values `uplodr serve` accepts — through click itself and the Fly provider's own
checks, as the gateway machine would read them."""

from __future__ import annotations

import os
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest

from uplodr.cli.main import main
from uplodr.machines.fly import FlyConfig
from uplodr.machines.settings import ProviderSettings

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "deploy.md"
FLY_TOML = REPO / "deploy" / "fly" / "fly.toml"
VARIABLE = re.compile(r"\b((?:UPLODR|FLY|AWS)_[A-Z0-9_]+)\b")


def fly_toml() -> dict[str, Any]:
    with FLY_TOML.open("rb") as file:
        return tomllib.load(file)


def commands() -> dict[str, click.Command]:
    """Every command by its path after `uplodr`: "serve", "machines ls", ..."""
    found: dict[str, click.Command] = {}

    def walk(group: click.Group, prefix: str) -> None:
        for name, command in group.commands.items():
            path = f"{prefix}{name}"
            found[path] = command
            if isinstance(command, click.Group):
                walk(command, f"{path} ")

    walk(main, "")
    return found


def known_variables() -> set[str]:
    """The variables uplodr reads: every click option's envvar, and every name the source
    spells out (the S3 store's AWS_*, UPLODR_TOKENS, the worker's UPLODR_*, Fly's FLY_*)."""
    names: set[str] = set()
    for command in commands().values():
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            if isinstance(envvar, str):
                names.add(envvar)
            elif envvar:
                names.update(envvar)
    for source in (REPO / "src" / "uplodr").rglob("*.py"):
        names.update(re.findall(r"[\"']((?:UPLODR|FLY|AWS)_[A-Z0-9_]+)[\"']", source.read_text()))
    return names


def fenced_commands(text: str) -> Iterator[str]:
    """Each command line of the ```sh blocks, continuation lines joined."""
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line:
                yield line


def uplodr_invocations(line: str) -> Iterator[list[str]]:
    """The argument lists given to `uplodr` on a shell line (also inside a quoted --command)."""
    words = shlex.split(line)
    for index, word in enumerate(words):
        if word == "uplodr":
            yield words[index + 1 :]
        elif word.startswith("uplodr "):
            yield from uplodr_invocations(word)


def check_invocation(args: list[str], where: str) -> None:
    table = commands()
    path = args[0]
    if len(args) > 1 and f"{path} {args[1]}" in table:
        path = f"{path} {args[1]}"
    assert path in table, f"{where}: `uplodr {path}` is not a command"
    command = table[path]
    options = {opt for param in command.params for opt in param.opts}
    for arg in args[len(path.split()) :]:
        if arg.startswith("--"):
            flag = arg.split("=", 1)[0]
            assert flag in options, f"{where}: `uplodr {path}` has no option {flag}"


def test_every_variable_the_kit_names_is_read_by_uplodr() -> None:
    known = known_variables()
    for path in (DOC, FLY_TOML):
        named = set(VARIABLE.findall(path.read_text()))
        assert named, f"{path.name} names no variable: the pattern is wrong"
        unknown = sorted(named - known)
        assert unknown == [], f"{path.name} names variables uplodr does not read: {unknown}"


def test_every_uplodr_command_in_the_doc_exists_with_its_options() -> None:
    lines = list(fenced_commands(DOC.read_text()))
    invocations = [(args, line) for line in lines for args in uplodr_invocations(line)]
    assert len(invocations) >= 2, "the doc shows no uplodr command: the parser is wrong"
    for args, line in invocations:
        check_invocation(args, f"docs/deploy.md: {line}")


def test_the_doc_refers_to_files_that_exist() -> None:
    text = DOC.read_text()
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (DOC.parent / target).exists(), f"docs/deploy.md links to missing {target}"
    assert "deploy/fly/fly.toml" in text and (REPO / "Dockerfile").exists()


def test_fly_toml_has_what_fly_needs_and_runs_serve_with_the_fly_provider() -> None:
    config = fly_toml()
    assert isinstance(config["app"], str) and config["app"]
    assert isinstance(config["primary_region"], str)
    (process,) = config["processes"].values()
    args = shlex.split(process)
    assert args[:3] == ["serve", "--provider", "fly"]  # after the image's ENTRYPOINT, uplodr
    check_invocation(args, "fly.toml [processes]")
    service = config["http_service"]
    # the port the image's gateway listens on (Dockerfile: ENV UPLODR_PORT=8080)
    port = re.search(r"UPLODR_PORT=(\d+)", (REPO / "Dockerfile").read_text())
    assert port is not None and service["internal_port"] == int(port.group(1))
    assert service["processes"] == list(config["processes"])
    (check,) = service["checks"]
    assert check["method"] == "GET" and check["path"] == "/readyz"  # readiness, not liveness
    routes = re.findall(r'ApiRoute\("(/[^"]*)"', (REPO / "src/uplodr/gateway/app.py").read_text())
    assert check["path"] in routes
    image = config["build"]["image"]
    assert image == config["env"]["UPLODR_FLY_IMAGE"]  # gateway and workers: the same image
    assert image.startswith(f"registry.fly.io/{config['env']['UPLODR_FLY_APP']}:")


def test_fly_toml_env_is_a_valid_serve_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """`uplodr serve` reads fly.toml's [env] as the gateway machine would (click parses every
    value with its type), and the Fly provider accepts the result (guest size, app, image)."""
    config = fly_toml()
    for name in [n for n in os.environ if n.startswith(("UPLODR_", "FLY_"))]:
        monkeypatch.delenv(name)
    for name, value in config["env"].items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FLY_API_TOKEN", "a-secret-set-with-fly-secrets")
    (process,) = config["processes"].values()
    serve = commands()["serve"]
    # under the group's own context (its help option names), as `uplodr serve` parses it; a
    # context of its own would leave click's cached --help option without -h
    with main.make_context("uplodr", ["serve"]) as group:
        context = serve.make_context("serve", shlex.split(process)[1:], parent=group)
    params = context.params
    assert params["stores"] == (config["env"]["UPLODR_STORE"],)
    assert params["public_url"] == config["env"]["UPLODR_PUBLIC_URL"]
    assert params["pool_max"] == int(config["env"]["UPLODR_POOL_MAX"])
    assert params["pool_idle"] == 30.0
    # what the provider_options decorator hands over, through the Fly provider's own checks
    memory = params["machine_memory"]
    fly_options = {
        name: value for name, value in params.items() if name.startswith("fly_") and value
    }
    settings = ProviderSettings(
        memory_mb=memory // (1024 * 1024), cpus=params["machine_cpus"], options=fly_options
    )
    assert params["provider"] == "fly"
    fly = FlyConfig.from_settings(settings)
    assert (fly.app, fly.image) == (config["env"]["UPLODR_FLY_APP"], config["build"]["image"])
    assert (fly.guest.cpus, fly.guest.memory_mb) == (2, 1024)
    assert fly.api_url == "http://_api.internal:4280" and fly.regions == ("ams", "fra")
