"""The `uplodr` command's entry point (the console script and `python -m uplodr`).

`uplodr worker …` — what every machine runs — goes straight to the worker's command
(`uplodr.cli.worker`) without loading the rest of the CLI, whose provider registry pulls in
httpx and psutil (~0.1 s of every worker's boot, docs/benchmarks.md); everything else is
`uplodr.cli.main`.
"""

from __future__ import annotations

import sys
from typing import NoReturn


def run() -> NoReturn:
    if sys.argv[1:2] == ["worker"]:
        from uplodr.cli.worker import run_worker_command

        run_worker_command(sys.argv[2:])
    from uplodr.cli.main import run as run_cli

    run_cli()
