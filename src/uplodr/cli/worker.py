"""`uplodr worker`: the command a machine runs, in a module of its own.

`uplodr worker …` and `python -m uplodr worker …` — how every provider and the container image
start a worker — come here directly (`uplodr.cli.entry`), without loading the rest of the CLI:
the provider registry that `serve` and `reap` need pulls in httpx and psutil, about 0.1 s of a
worker's boot (docs/benchmarks.md). `uplodr worker` inside the full CLI is the same command.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any, NoReturn

import click

from uplodr.cli.units import DURATION, SIZE


@click.command()
@click.option(
    "--grpc-addr", required=True, envvar="UPLODR_GRPC_ADDR", help="HOST:PORT to listen on."
)
@click.option(
    "--msg-size",
    type=SIZE,
    help="Largest gRPC message; bounds the one-message Upload call "
    "[env UPLODR_MSG_SIZE, bytes; default 64M].",
)
@click.option(
    "--max-file-bytes",
    type=SIZE,
    help="Largest file accepted [env UPLODR_MAX_FILE_BYTES, bytes; default 64M].",
)
@click.option(
    "--max-lifetime",
    type=DURATION,
    help="The worker exits after this long, whatever happens "
    "[env UPLODR_MAX_LIFETIME, seconds; default 20m].",
)
@click.option(
    "--idle-timeout",
    type=DURATION,
    help="The worker exits when no call arrived for this long (its gateway is gone) "
    "[env UPLODR_IDLE_TIMEOUT, seconds; default 30s].",
)
@click.option(
    "--max-jobs",
    type=int,
    help="Jobs at once; more are refused with RESOURCE_EXHAUSTED [env UPLODR_MAX_JOBS; default 1].",
)
def worker(grpc_addr: str, **overrides: Any) -> None:
    """Run a worker: the gRPC server a machine runs (normally started by a provider, which
    configures it through UPLODR_* variables; the options override them)."""
    from uplodr.worker.run import run_worker

    sys.exit(run_worker(grpc_addr, overrides))


def run_worker_command(argv: list[str]) -> NoReturn:
    """`uplodr worker ARGV`, as `uplodr.cli.main.run` would run it: logs on stderr, a bad
    option in one line (exit status 2), then an exit without the interpreter's finalization
    (see `run`: obstore's runtime threads)."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        worker.main(args=argv, prog_name="uplodr worker", standalone_mode=False)
        code = 0
    except click.ClickException as error:
        message = " ".join(error.format_message().split())
        usage = " (see 'uplodr worker --help')" if isinstance(error, click.UsageError) else ""
        click.echo(f"uplodr worker: {message}{usage}", err=True)
        code = error.exit_code
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except ModuleNotFoundError as missing:  # a client-only install: say which extra it needs
        from uplodr.cli.main import _missing_extra

        code = _missing_extra(missing)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
