"""`uplodr rebuild`: every set under a folder converted again with another preset, from its kept
original, on the machines of a pool this command opens (the same stores and provider options as
`uplodr serve`; the work itself is `uplodr.gateway.rebuild`).

Signals: the first SIGTERM or SIGINT starts no other set and lets the ones in hand finish (at
most a job's timeout); a second one cancels them (a publish in flight rolls back). Either way
every machine the run made is destroyed before it exits non-zero with a line saying how far it
got; running the same command again finishes the job (sets done are found by dedupe, no machine).

A run that is SIGKILLed cannot destroy its machines. They carry the tag `rebuild-HOST-PID`, so
the next `uplodr rebuild` on the same host destroys those whose process is gone before it
starts (and the usual reaper pass removes any past their deadline); `uplodr reap` finds them too.
(A local worker spawned in the instant before its record was written has no record to be found
by: it ends itself within its idle timeout.)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from uplodr.cli.units import DURATION

if TYPE_CHECKING:
    from rich.console import Console

    from uplodr.gateway.rebuild import Progress, Rebuilder
    from uplodr.gateway.run import GatewayOptions

# The tag prefix of a rebuild run's machines: `rebuild-HOST-PID` (see the module docstring).
RUN_PREFIX = "rebuild-"
# Exit status of a run stopped by a signal (as `uplodr convert`: 128 + SIGINT).
INTERRUPTED = 130


def rebuild_options(func: Callable[..., None]) -> Callable[..., None]:
    """The options of `uplodr rebuild` besides the provider's (`provider_options`)."""
    options = [
        click.option("--folder", required=True, help="Rebuild every set under this folder."),
        click.option(
            "--preset",
            "preset_name",
            required=True,
            help="The new preset: a name in --presets, or `default`.",
        ),
        click.option(
            "--presets",
            "presets_file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            envvar="UPLODR_PRESETS_FILE",
            help="JSON (or .toml) file of named presets, as `uplodr serve --presets`.",
        ),
        click.option(
            "--replace",
            is_flag=True,
            help="Delete each old set (every store) once its new set is published.",
        ),
        click.option(
            "--pool-max",
            type=click.IntRange(min=1),
            envvar="UPLODR_POOL_MAX",
            help="Machines at once (sets in hand at once); default: the provider's.",
        ),
        click.option(
            "--store",
            "stores",
            multiple=True,
            envvar="UPLODR_STORE",
            help="The stores, as `uplodr serve --store` (repeat for mirrors; the first is read).",
        ),
        click.option(
            "--public-url",
            envvar="UPLODR_PUBLIC_URL",
            help="URL template of a stored key, as `uplodr serve --public-url`.",
        ),
        click.option("--boot-timeout", type=DURATION, default="60s", envvar="UPLODR_BOOT_TIMEOUT"),
        click.option("--job-timeout", type=DURATION, default="5m", envvar="UPLODR_JOB_TIMEOUT"),
        click.option(
            "--price-per-hour",
            type=float,
            envvar="UPLODR_PRICE_PER_HOUR",
            help="Price of one machine-hour for the cost (default: the provider's table).",
        ),
        click.option("--json", "as_json", is_flag=True, help="The summary as JSON on stdout."),
    ]
    decorated = func
    for option in reversed(options):
        decorated = option(decorated)
    return decorated


@dataclass(frozen=True)
class RebuildRequest:
    folder: str
    preset: str
    replace: bool
    as_json: bool


def _owner_gone(owner: str) -> bool:
    """Whether the rebuild run named by `owner` (`HOST-PID` after the prefix, HOST being this
    host) is gone: its process does not exist. A reused process id keeps its machines (they
    end at their deadline): only never destroying a live run's machine matters."""
    pid_text = owner.rpartition("-")[2]
    if not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


async def _watch(task: asyncio.Task[Progress], progress: Progress, console: Console) -> None:
    """The progress bar until the run ends."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bar

    with Bar(
        TextColumn("rebuild"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=not console.is_terminal,
    ) as bar:
        shown = bar.add_task("", total=None)
        while not task.done():
            await asyncio.wait({task}, timeout=0.25)
            bar.update(
                shown,
                total=progress.total or None,
                completed=progress.finished,
                description=(
                    f"{progress.rebuilt} rebuilt, {progress.already_done} already done, "
                    f"{len(progress.skipped)} skipped, {len(progress.failed)} failed"
                ),
            )


def summary_lines(progress: Progress) -> list[str]:
    lines = [
        f"{progress.rebuilt} rebuilt, {progress.already_done} already done, "
        f"{len(progress.skipped)} skipped without original, {len(progress.failed)} failed "
        f"(of {progress.total} sets under {progress.folder or '/'!s}; "
        f"{progress.current} already in {progress.preset})",
        f"machine-seconds {progress.machine_seconds:.1f}, cost {progress.cost:.6f}",
    ]
    if progress.replace:
        lines.append(f"{progress.replaced} old sets deleted")
    lines += [f"skipped (no original): {image}" for image in progress.skipped]
    lines += [f"failed: {f.image}: {f.code}: {f.error}" for f in progress.failed]
    return lines


async def rebuild_folder(options: GatewayOptions, request: RebuildRequest) -> int:
    """Open the conversions, rebuild, close them all (every machine destroyed); the exit status."""
    import msgspec
    from rich.console import Console

    from uplodr import retry_log
    from uplodr.dispatch.reaper import reap, reap_orphans
    from uplodr.errors import UplodrError
    from uplodr.gateway.rebuild import Progress, Rebuilder
    from uplodr.gateway.run import StartupError, open_conversions

    retry_log.install()
    host = socket.gethostname()
    progress = Progress(request.folder, request.preset, request.replace)
    console = Console(stderr=True)
    signals: list[int] = []
    try:
        async with contextlib.AsyncExitStack() as stack:
            parts = await open_conversions(
                stack, options, gateway_id=f"{RUN_PREFIX}{host}-{os.getpid()}"
            )
            await reap_orphans(parts.provider, f"{RUN_PREFIX}{host}-", _owner_gone)
            await reap(parts.provider, older_than=None)
            rebuilder = Rebuilder(parts.service, progress, concurrency=parts.service.slots)
            task = asyncio.create_task(rebuilder.run())
            with _signals_stop(rebuilder, task, signals):
                await _watch(task, progress, console)
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if task.cancelled():
                progress.state = "stopped"
    except StartupError as error:
        print(f"uplodr rebuild: {error}", file=sys.stderr)
        return 2
    except UplodrError as error:
        print(f"uplodr rebuild: {' '.join(str(error).split())}", file=sys.stderr)
        return 2 if error.code == "invalid_request" else 1
    if request.as_json:
        print(msgspec.json.encode(progress.as_answer()).decode())
    else:
        print("\n".join(summary_lines(progress)))
    if progress.state == "failed":
        print(f"uplodr rebuild: {progress.error}", file=sys.stderr)
        return 1
    if signals or progress.state == "stopped":
        print(
            f"uplodr rebuild: stopped after {progress.finished} of {progress.total} sets "
            "(every machine it made destroyed); run the same command again to finish",
            file=sys.stderr,
        )
        return INTERRUPTED
    return 1 if progress.failed else 0


@contextlib.contextmanager
def _signals_stop(rebuilder: Rebuilder, task: asyncio.Task[Any], seen: list[int]) -> Any:
    """SIGTERM/SIGINT: the first stops starting sets, a second cancels the ones in hand."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        seen.append(signum)
        if len(seen) == 1:
            print(
                "uplodr rebuild: stopping: the sets in hand finish (signal again to abort them)",
                file=sys.stderr,
            )
            rebuilder.stop()
        else:
            task.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, functools.partial(on_signal, signum))
    try:
        yield
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def run_rebuild(options: GatewayOptions, request: RebuildRequest) -> int:
    return asyncio.run(rebuild_folder(options, request))
