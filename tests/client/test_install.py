"""The client side stays light: importing it loads neither libvips nor gRPC nor the server's
web stack, and with the `server` extra's packages missing altogether (as after a plain
`pip install uplodr`) the client and `uplodr convert` still work while `uplodr serve` says which
extra to install."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions

from tests.support.paths import REPO
from uplodr.cli.main import SERVER_EXTRA as SERVER_MODULES

BLOCK_SERVER = f"""
import importlib.abc, sys
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {sorted(SERVER_MODULES)!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Missing())
"""


def test_the_module_list_covers_the_server_extra() -> None:
    """Every module the `server` extra's packages install is one the CLI names the extra for
    (and the tests below block)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    server = project["optional-dependencies"]["server"]
    extra = {re.split(r"[<>=\[ ]", dep)[0].lower() for dep in server}
    provided = {
        module
        for module, dists in packages_distributions().items()
        if any(d.lower() in extra for d in dists)
        and not module.startswith("_")
        and importlib.util.find_spec(module) is not None  # pyvips-binary lists build folders
    }
    assert provided <= SERVER_MODULES, provided - SERVER_MODULES


def python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
    )


def loaded_by(statement: str) -> set[str]:
    done = python(f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))")
    assert done.returncode == 0, done.stderr
    return {name.split(".")[0] for name in json.loads(done.stdout)}


def test_importing_the_client_loads_nothing_of_the_server() -> None:
    loaded = loaded_by("import uplodr.client")
    assert loaded.isdisjoint(SERVER_MODULES), loaded & set(SERVER_MODULES)
    assert {"httpx", "stamina", "msgspec"} <= loaded


def test_importing_the_client_loads_no_command_line() -> None:
    """httpx's own command line (click, rich, pygments: half the client's import time) stays
    unloaded until it is called, and still works then."""
    loaded = loaded_by("import uplodr.client")
    assert loaded.isdisjoint({"rich", "click", "pygments"}), loaded & {"rich", "click", "pygments"}
    called = python(
        "import uplodr.client, httpx, sys\n"
        "try:\n    httpx.main(['--help'])\nexcept SystemExit as e:\n    print('exit', e.code)\n"
        "print(type(sys.modules['httpx._main'].main).__name__)"
    )
    assert called.returncode == 0, called.stderr
    assert "Usage: httpx" in called.stdout
    assert called.stdout.splitlines()[-2:] == ["exit 0", "Command"]


def test_importing_the_package_loads_no_client_until_asked() -> None:
    assert "httpx" not in loaded_by("import uplodr")
    assert "httpx" in loaded_by("from uplodr import Client")


def test_without_the_server_extra_the_client_works_and_serve_names_the_extra() -> None:
    client = python(BLOCK_SERVER + "from uplodr import Client; import uplodr.cli.convert")
    assert client.returncode == 0, client.stderr
    help_text = python(BLOCK_SERVER + "from uplodr.cli.main import run; run()", "convert", "-h")
    assert help_text.returncode == 0, help_text.stderr
    assert "--jobs" in help_text.stdout
    serve = python(BLOCK_SERVER + "from uplodr.cli.main import run; run()", "serve")
    assert serve.returncode == 2
    (line,) = serve.stderr.strip().splitlines()
    assert re.fullmatch(
        r"uplodr serve needs the server extra \(\w+ is not installed\): "
        r"pip install 'uplodr\[server\]'",
        line,
    ), line
