"""The provider registry and its command-line options: every command that deals with machines
chooses its provider here, and a setting that does not fit is one line and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from uplodr.errors import ProviderError
from uplodr.machines.docker import DockerConfig, DockerProvider
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
            assert option.flag.startswith(f"--{kind.prefix}-")
            assert option.envvar.startswith(f"UPLODR_{kind.prefix.upper()}_")


def test_build_by_name(tmp_path: Path) -> None:
    local = build_provider("local", ProviderSettings(state_dir=tmp_path))
    assert isinstance(local, LocalProvider) and local.records.directory == tmp_path / "machines"
    settings = ProviderSettings(
        memory_mb=2048, options={"fly_app": "a", "fly_image": "i"}, env={"FLY_API_TOKEN": "t"}
    )
    fly = build_provider("fly", settings)
    assert isinstance(fly, FlyProvider) and fly.config.guest.memory_mb == 2048
    with pytest.raises(ProviderError, match="no provider 'nope'; choose one of local, fly, docker"):
        build_provider("nope", ProviderSettings())
    with pytest.raises(ProviderError, match="--machine-memory must be at least 1M, not 0 MB"):
        ProviderSettings(memory_mb=0)


def test_build_docker_without_asking_the_engine() -> None:
    """Building reads the settings only (`machines ls` and `reap` need no image); the engine is
    first asked by a call. Only an engine on this host can mount a local-folder store."""
    remote = ProviderSettings(
        memory_mb=512,
        cpus=2,
        options={"docker_image": "uplodr:1", "docker_network": "workers"},
        env={"DOCKER_HOST": "tcp://192.0.2.1:2376", "DOCKER_TLS_VERIFY": "1", "SECRET": "s"},
    )
    docker = build_provider("docker", remote)
    assert isinstance(docker, DockerProvider)
    assert docker.config == DockerConfig(
        image="uplodr:1",
        network="workers",
        memory_mb=512,
        cpus=2,
        engine_env={"DOCKER_HOST": "tcp://192.0.2.1:2376", "DOCKER_TLS_VERIFY": "1"},
    )
    assert docker.capabilities.shares_host_files is False
    local = build_provider("docker", ProviderSettings(env={}))
    assert isinstance(local, DockerProvider)
    assert local.config.host == "unix:///var/run/docker.sock"
    assert local.config.memory_mb == 1024 and local.config.cpus is None
    assert local.capabilities.shares_host_files is True


def uplodr(*args: str, env: dict[str, str]) -> tuple[int, list[str]]:
    """`uplodr ARGS` as a user runs it: its exit status and stderr lines."""
    done = subprocess.run(
        [sys.executable, "-m", "uplodr", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    return done.returncode, done.stderr.splitlines()


def clean_env(tmp_path: Path, **given: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLY_", "UPLODR_"))}
    return {**env, "UPLODR_STATE_DIR": str(tmp_path), **given}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["reap", "--provider", "fly"],
            "uplodr reap: the Fly provider needs FLY_API_TOKEN, --fly-app (UPLODR_FLY_APP), "
            "--fly-image (UPLODR_FLY_IMAGE)",
        ),
        (
            ["machines", "ls", "--provider", "fly", "--fly-app", "a", "--fly-image", "i"],
            "uplodr machines ls: the Fly provider needs FLY_API_TOKEN",
        ),
        (
            ["reap", "--machine-cpus", "2"],
            "uplodr reap: --machine-cpus: local machines share this host's cores",
        ),
        (
            ["reap", "--machine-memory", "100k"],
            "uplodr reap: --machine-memory must be at least 1M, not 0 MB",
        ),
        (["reap", "--machine-cpus", "0"], "uplodr reap: --machine-cpus must be at least 1, not 0"),
        (["serve", "--max-pixels", "0"], "uplodr serve: --max-pixels must be at least 1"),
    ],
)
def test_settings_that_do_not_fit_are_one_line(
    args: list[str], message: str, tmp_path: Path
) -> None:
    status, lines = uplodr(*args, env=clean_env(tmp_path))
    assert status == 2
    (line,) = lines
    assert line.startswith(message), line


def test_provider_options_reach_the_provider_from_the_environment(tmp_path: Path) -> None:
    env = clean_env(
        tmp_path,
        FLY_API_TOKEN="t",
        UPLODR_FLY_APP="a",
        UPLODR_FLY_IMAGE="i",
        UPLODR_FLY_GRPC_PORT="nope",
    )
    status, lines = uplodr("machines", "ls", "--provider", "fly", env=env)
    assert status == 2
    assert lines == [
        "uplodr machines ls: --fly-grpc-port (UPLODR_FLY_GRPC_PORT) must be a port number, "
        "not 'nope'"
    ]
