"""The layering of docs/architecture.md, checked on the code: what each part may import.

Data flows one way — gateway → dispatch → machines / worker → imaging / storage — and the
shared modules at the top of the package are plain configuration that everyone may read. Every
import counts, also the lazy ones inside functions, because a lazy import still ties the parts
together. A new top-level module or sub-package must be placed in `PARTS` before this passes.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "uplodr"

# Pure modules shared by every part: they import nothing heavy and no other part.
SHARED = frozenset(
    {
        *("errors", "names", "limits", "preset", "formats", "sniff", "worker_env", "answer"),
        *("markup", "retry_log"),
    }
)

# part -> (uplodr parts it may import besides SHARED, third-party packages it may import)
PARTS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    **{name: (frozenset(), frozenset({"msgspec"})) for name in SHARED},
    # what a retry logs, for every part that retries (stamina's hook without the arguments)
    "retry_log": (frozenset(), frozenset({"stamina"})),
    "proto": (frozenset(), frozenset({"grpc", "google"})),
    "imaging": (
        frozenset(),
        frozenset(
            {
                "pyvips",
                "PIL",
                "pillow_heif",
                "pi_heif",
                "blurhash",
                "numpy",
                "imagecodecs",
                "ssimulacra2",
                "scipy",
                "mozjpeg_lossless_optimization",
            }
        ),
    ),
    "storage": (frozenset(), frozenset({"obstore", "stamina"})),
    # requests: the docker SDK's transport, whose exceptions tell a refused connection apart;
    # httpx2: lightkube's transport, likewise
    "machines": (
        frozenset(),
        frozenset(
            {
                "httpx",
                "stamina",
                "psutil",
                "docker",
                "requests",
                "aiolimiter",
                "lightkube",
                "httpx2",
            }
        ),
    ),
    "worker": (
        # no storage: a worker holds no store and no credential; its outputs go back to the
        # gateway, which publishes them (docs/security.md)
        frozenset({"imaging", "proto"}),
        frozenset({"grpc", "grpc_health", "grpc_reflection", "google"}),
    ),
    "dispatch": (
        frozenset({"machines", "proto"}),
        frozenset({"grpc", "stamina", "aiolimiter"}),
    ),
    # The gateway reads storage itself (dedupe answers without a machine, /files of a local
    # store) and builds its provider from machines' registry; it never touches images.
    "gateway": (
        frozenset({"dispatch", "machines", "storage"}),
        frozenset(
            {"starlette", "uvicorn", "prometheus_client", "msgspec", "multipart", "markdown_it"}
        ),
    ),
    "client": (frozenset(), frozenset({"httpx", "stamina", "msgspec"})),
    # The command line assembles everything.
    "cli": (
        frozenset(
            {"client", "gateway", "dispatch", "machines", "storage", "worker", "imaging", "proto"}
        ),
        frozenset({"click", "rich", "msgspec", "httpx"}),
    ),
    "__main__": (frozenset({"cli"}), frozenset()),
}

# What no part but the worker (and the command line that starts it) may load: the image stack.
IMAGE_STACK = frozenset(
    {
        "pyvips",
        "PIL",
        "pillow_heif",
        "pi_heif",
        "numpy",
        "ssimulacra2",
        "scipy",
        "mozjpeg_lossless_optimization",
    }
)


def _part(path: Path) -> str:
    relative = path.relative_to(SRC)
    if len(relative.parts) == 1:
        return "package" if relative.stem == "__init__" else relative.stem
    return relative.parts[0]


def _imports(path: Path) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import in the file, also inside functions."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "uplodr":  # from uplodr import formats
                for alias in node.names:
                    yield f"uplodr.{alias.name}", node.lineno
            else:
                yield node.module, node.lineno


def _sources() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "proto" not in p.relative_to(SRC).parts[:1])


def _stdlib(name: str) -> bool:
    return name in sys.stdlib_module_names or name == "__future__"


def test_every_module_belongs_to_a_part() -> None:
    parts = {_part(path) for path in _sources()} - {"package"}
    assert parts <= set(PARTS), f"place these in PARTS: {sorted(parts - set(PARTS))}"


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_follow_the_layering(path: Path) -> None:
    part = _part(path)
    if part == "package":
        allowed_parts, allowed_packages = frozenset({"client"}), frozenset[str]()
    else:
        allowed_parts, allowed_packages = PARTS[part]
    wrong: list[str] = []
    for module, line in _imports(path):
        top, _, rest = module.partition(".")
        if top == "uplodr":
            target = rest.partition(".")[0]
            if target and target != part and target not in SHARED | allowed_parts:
                wrong.append(f"line {line}: {module} ({part} may not use {target})")
        elif not _stdlib(top) and top not in allowed_packages:
            wrong.append(f"line {line}: {module} (not a package {part} uses)")
    assert wrong == []


@pytest.mark.parametrize("part", ["gateway", "dispatch", "machines", "storage", "client"])
def test_only_the_worker_side_loads_the_image_stack(part: str) -> None:
    _, packages = PARTS[part]
    assert not packages & IMAGE_STACK


def test_the_architecture_doc_names_every_part_and_its_imports() -> None:
    """docs/architecture.md is the map: its table has a row per part, with the uplodr parts the
    part may import as this file allows them."""
    doc = (SRC.parents[1] / "docs" / "architecture.md").read_text()
    rows = {
        cells[0].strip("` "): cells
        for line in doc.splitlines()
        if line.startswith("| ") and len(cells := line.strip("|").split("|")) == 4
    }
    shared_row = next(cells for name, cells in rows.items() if name.startswith("shared"))
    for name in SHARED:
        assert f"`{name}`" in shared_row[0], name
    for part, (allowed, _) in PARTS.items():
        if part in SHARED or part == "__main__":
            continue
        assert part in rows, f"docs/architecture.md has no row for {part}"
        documented = rows[part][2].strip()
        if part == "cli":
            continue  # "all of the above"
        named = {word.strip(" ,") for word in documented.split(",")} - {"—", "nothing"}
        assert named == set(allowed), (part, named, allowed)
