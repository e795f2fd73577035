"""The provider registry and its command-line options: every command that deals with machines
chooses its provider here, and a setting that does not fit is one line and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from uplodr.cli.main import main
from uplodr.errors import ProviderError
from uplodr.machines.fly import FlyProvider
from uplodr.machines.local import LocalProvider
from uplodr.machines.providers import PROVIDERS, build_provider
from uplodr.machines.settings import ProviderSettings


def test_every_option_has_its_own_flag_and_variable() -> None:
    options = [option for kind in PROVIDERS.values() for option in kind.options]
    assert len({o.name for o in options}) == len({o.flag for o in options}) == len(options)
    assert len({o.envvar for o in options}) == len(options)
    for kind in PROVIDERS.values():
        for option in kind.options:
            assert option.flag.startswith(f"--{kind.name}-")
            assert option.envvar.startswith(f"UPLODR_{kind.name.upper()}_")


def test_build_by_name(tmp_path: Path) -> None:
    local = build_provider("local", ProviderSettings(state_dir=tmp_path))
    assert isinstance(local, LocalProvider) and local.records.directory == tmp_path / "machines"
    settings = ProviderSettings(
        memory_mb=2048, options={"fly_app": "a", "fly_image": "i"}, env={"FLY_API_TOKEN": "t"}
    )
    fly = build_provider("fly", settings)
    assert isinstance(fly, FlyProvider) and fly.config.guest.memory_mb == 2048
    with pytest.raises(ProviderError, match="no provider 'docker'; choose one of local, fly"):
        build_provider("docker", ProviderSettings())
    with pytest.raises(ProviderError, match="--machine-memory must be at least 1M, not 0 MB"):
        ProviderSettings(memory_mb=0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["reap", "--provider", "fly"],
            "the Fly provider needs FLY_API_TOKEN, --fly-app (UPLODR_FLY_APP), "
            "--fly-image (UPLODR_FLY_IMAGE)",
        ),
        (
            ["machines", "ls", "--provider", "fly", "--fly-app", "a", "--fly-image", "i"],
            "the Fly provider needs FLY_API_TOKEN",
        ),
        (["reap", "--machine-cpus", "2"], "--machine-cpus: local machines share this host's"),
        (["reap", "--machine-memory", "100k"], "--machine-memory must be at least 1M, not 0 MB"),
        (["reap", "--machine-cpus", "0"], "--machine-cpus must be at least 1, not 0"),
    ],
)
def test_settings_that_do_not_fit_are_one_line(
    args: list[str], message: str, tmp_path: Path
) -> None:
    env = {"FLY_API_TOKEN": None, "FLY_APP_NAME": None, "UPLODR_STATE_DIR": str(tmp_path)}
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"Error: {message}")


def test_provider_options_reach_the_provider_from_the_environment(tmp_path: Path) -> None:
    env = {
        "FLY_API_TOKEN": "t",
        "UPLODR_FLY_APP": "a",
        "UPLODR_FLY_IMAGE": "i",
        "UPLODR_FLY_GRPC_PORT": "nope",
    }
    result = CliRunner().invoke(main, ["machines", "ls", "--provider", "fly"], env=env)
    assert result.exit_code == 2
    assert "--fly-grpc-port (UPLODR_FLY_GRPC_PORT) must be a port number" in result.output
