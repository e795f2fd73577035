"""`uplodr` — serve, worker, convert, rebuild, reap, sweep, machines.

Subcommands import their parts lazily: `uplodr serve` never loads libvips (the gateway stays
small), and `uplodr convert` needs neither gRPC nor libvips.

Errors of the command line itself — an unknown option, a value of the wrong type, a bad preset
file — are said once for every command, by `run()`: one line on stderr, `uplodr CMD: what is
wrong`, exit status 2, no traceback and no usage block (`--help` prints that).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Literal, NoReturn

import click

from uplodr.cli.images import COMMANDS as IMAGE_COMMANDS
from uplodr.cli.providers import ConfigError, ProviderChoice, provider_options
from uplodr.cli.rebuild import rebuild_options
from uplodr.cli.server import gateway_options, store_folder
from uplodr.cli.units import DURATION, SIZE, format_age
from uplodr.cli.worker import worker
from uplodr.dispatch.reaper import created_time
from uplodr.errors import ProviderError, UplodrError
from uplodr.machines.base import Machine
from uplodr.preset import PresetError

# Errors a command's body raises for bad input on its command line: said as one usage line.
USAGE_ERRORS: tuple[type[Exception], ...] = (PresetError, ProviderError)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpx2, httpcore2: lightkube's transport (the Kubernetes provider)
    for noisy in ("httpx", "httpcore", "httpx2", "httpcore2", "stamina"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from uplodr import retry_log

    retry_log.install()  # a retry's log record never carries the call's arguments


class _Failed(Exception):
    """An error from a command's body, said as `uplodr CMD: message`."""

    def __init__(self, message: str, command_path: str, exit_code: int) -> None:
        super().__init__(f"{command_path}: {' '.join(message.split())}")
        self.exit_code = exit_code


class _EnvOption(click.Option):
    """An option whose --help names its environment variable; its errors name only the option
    (click would add the variable to every error, also when the value came from the flag)."""

    def get_error_hint(self, ctx: click.Context | None) -> str:
        return click.Parameter.get_error_hint(self, ctx)


class _Command(click.Command):
    """Every subcommand: what its body raises for bad input knows which command it was, and
    its --help shows each option's environment variable."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if type(param) is click.Option and param.envvar:
                param.__class__ = _EnvOption
                param.show_envvar = True

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except USAGE_ERRORS as error:
            raise _Failed(str(error), ctx.command_path, 2) from None
        except click.UsageError as error:
            if error.ctx is None:
                error.ctx = ctx
            raise
        except click.ClickException as error:
            raise _Failed(error.format_message(), ctx.command_path, error.exit_code) from None
        except UplodrError as error:  # an outage (engine, API, store): one line, status 1
            raise _Failed(str(error), ctx.command_path, 1) from None


class _Group(click.Group):
    command_class = _Command
    group_class = type  # subgroups (machines) are _Groups too


def one_line(error: click.ClickException) -> str:
    """The error as the one line `run()` prints: `uplodr serve: <what is wrong>`; a usage
    error found by click itself ends with where to read the usage."""
    message = " ".join(error.format_message().split())
    if isinstance(error, click.UsageError) and error.ctx is not None:
        path = error.ctx.command_path
        return f"{path}: {message} (see '{path} --help')"
    return f"uplodr: {message}"


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail.")
@click.version_option(package_name="uplodr")
def main(verbose: bool) -> None:
    """Turn images into web variants on machines that exist only while there is work."""
    _setup_logging(verbose)


@main.command()
@click.option("--host", default="127.0.0.1", envvar="UPLODR_HOST")
@click.option("--port", default=8080, type=int, envvar="UPLODR_PORT")
@click.option(
    "--store",
    "stores",
    multiple=True,
    envvar="UPLODR_STORE",
    help="Where variants go: a folder, file:///dir or s3://BUCKET[/PREFIX]. Repeat for mirrors "
    "(UPLODR_STORE: space-separated); URLs come from the first. Default: "
    "$UPLODR_DATA_DIR/store (~/.local/share/uplodr/store).",
)
@click.option(
    "--public-url",
    envvar="UPLODR_PUBLIC_URL",
    help="URL template of a stored key, e.g. 'https://cdn.example.com/{key}'. Default for a "
    "local store: this server's /files/{key}.",
)
@click.option(
    "--keys",
    type=click.Choice(["digest", "name"]),
    default="digest",
    envvar="UPLODR_KEYS",
    help="digest: {folder}/{stem}-{hash}.{ext}, immutable and cacheable forever; "
    "name: {folder}/{stem}.{ext} (see README for the caching caveat).",
)
@click.option(
    "--max-upload",
    type=SIZE,
    default="64M",
    envvar="UPLODR_MAX_UPLOAD",
    help="Largest upload accepted (413 beyond, refused while it arrives).",
)
@click.option(
    "--max-in-flight",
    type=click.IntRange(min=1),
    envvar="UPLODR_MAX_IN_FLIGHT",
    help="Uploads in flight at once (spooling, waiting, converting); beyond, 503 busy with "
    "Retry-After before the body is read. Default: --pool-max × --jobs-per-machine + "
    "--max-queue.",
)
@click.option(
    "--spool-budget",
    type=SIZE,
    envvar="UPLODR_SPOOL_BUDGET",
    help="Bytes the uploads in flight may hold on the spool disk (at least --max-upload); "
    "beyond, 503 busy. "
    "Default: no bound but --max-in-flight × --max-upload.",
)
@click.option(
    "--spool-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="UPLODR_SPOOL_DIR",
    help="Where uploads are spooled while they arrive. Default: the system's temp folder.",
)
@click.option(
    "--body-timeout",
    type=DURATION,
    default="60s",
    envvar="UPLODR_BODY_TIMEOUT",
    help="How long an upload's body may take to arrive (408 after): a slow client cannot "
    "hold a slot forever.",
)
@click.option(
    "--tokens-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="UPLODR_TOKENS_FILE",
    help="TOML or JSON file of named tokens (hashed), each bound to folder prefixes with its "
    "own in-flight bound (see README; `uplodr token` makes one). UPLODR_TOKENS still works.",
)
@click.option(
    "--secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="UPLODR_SECRET_FILE",
    help="File of the secret images' delete tokens derive from (at least 16 random bytes; "
    "`head -c 32 /dev/urandom`). Default: UPLODR_DATA_DIR/secret, made on the first start.",
)
@click.option(
    "--metrics-token",
    envvar="UPLODR_METRICS_TOKEN",
    help="Bearer token that alone reads /metrics. Without it, /metrics takes any upload token "
    "when tokens are set. Prefer the variable: an option shows in ps.",
)
@click.option(
    "--boot-timeout",
    type=DURATION,
    default="60s",
    envvar="UPLODR_BOOT_TIMEOUT",
    help="How long a machine may take to answer its first Ping.",
)
@click.option(
    "--job-timeout",
    type=DURATION,
    default="5m",
    envvar="UPLODR_JOB_TIMEOUT",
    help="How long one job may take once its machine is up.",
)
@click.option(
    "--reap-interval",
    type=DURATION,
    default="60s",
    envvar="UPLODR_REAP_INTERVAL",
    help="How often to destroy uplodr machines past their deadline.",
)
@click.option(
    "--price-per-hour",
    type=float,
    default=None,
    envvar="UPLODR_PRICE_PER_HOUR",
    help="Price of one machine-hour, to report each job's cost (default: the "
    "provider's price table).",
)
@click.option(
    "--preset",
    "preset_file",
    type=click.Path(exists=True, path_type=Path),
    envvar="UPLODR_PRESET_FILE",
    help="JSON (or .toml) file of the default preset's settings (see README).",
)
@click.option(
    "--presets",
    "presets_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="UPLODR_PRESETS_FILE",
    help="JSON (or .toml) file of named presets, picked per upload with ?preset=NAME; its "
    "`default` is the default preset unless --preset is given (see README).",
)
@click.option(
    "--pool-max",
    type=click.IntRange(min=1),
    envvar="UPLODR_POOL_MAX",
    help="Machines at once; default: one per core (local, docker), 16 (fly).",
)
@click.option(
    "--max-machines",
    type=click.IntRange(min=1),
    envvar="UPLODR_MAX_MACHINES",
    help="Deprecated name of --pool-max.",
)
@click.option(
    "--pool-min",
    type=click.IntRange(min=0),
    default=0,
    envvar="UPLODR_POOL_MIN",
    help="Machines kept even when nobody uploads (0: scale to zero).",
)
@click.option(
    "--pool-idle",
    type=DURATION,
    default="30s",
    envvar="UPLODR_POOL_IDLE",
    help="Destroy a machine this long after its last job; 0: a machine of its own per job.",
)
@click.option(
    "--jobs-per-machine",
    type=click.IntRange(min=1),
    default=1,
    envvar="UPLODR_JOBS_PER_MACHINE",
    help="Jobs one machine runs at once.",
)
@click.option(
    "--max-jobs-per-machine",
    type=click.IntRange(min=1),
    default=100,
    envvar="UPLODR_MAX_JOBS_PER_MACHINE",
    help="Replace a machine after this many jobs.",
)
@click.option(
    "--pool-keep-stopped",
    type=click.IntRange(min=0),
    default=0,
    envvar="UPLODR_POOL_KEEP_STOPPED",
    help="Stop up to N idle machines instead of destroying them, start them on demand (fly).",
)
@click.option(
    "--max-queue",
    type=int,
    default=16,
    envvar="UPLODR_MAX_QUEUE",
    help="Uploads that may wait for a machine; beyond that, 503 at once.",
)
@click.option(
    "--worker-idle-timeout",
    type=DURATION,
    default="30s",
    envvar="UPLODR_WORKER_IDLE_TIMEOUT",
    help="A worker whose gateway went silent this long ends itself.",
)
@click.option(
    "--max-pixels",
    type=int,
    envvar="UPLODR_MAX_PIXELS",
    help="Largest width × height × frames (default 100 000 000).",
)
@click.option(
    "--max-side",
    type=int,
    envvar="UPLODR_MAX_SIDE",
    help="Largest width or height in px (default 30 000).",
)
@click.option(
    "--max-frames",
    type=int,
    envvar="UPLODR_MAX_FRAMES",
    help="Most animation frames (default 500).",
)
@click.option(
    "--max-seconds",
    type=DURATION,
    envvar="UPLODR_MAX_SECONDS",
    help="Longest conversion of one image (default 60s).",
)
@provider_options
def serve(
    host: str,
    port: int,
    stores: tuple[str, ...],
    public_url: str | None,
    keys: str,
    max_upload: int,
    max_in_flight: int | None,
    spool_budget: int | None,
    spool_dir: Path | None,
    body_timeout: float,
    tokens_file: Path | None,
    secret_file: Path | None,
    metrics_token: str | None,
    boot_timeout: float,
    job_timeout: float,
    reap_interval: float,
    price_per_hour: float | None,
    preset_file: Path | None,
    presets_file: Path | None,
    pool_max: int | None,
    max_machines: int | None,
    pool_min: int,
    pool_idle: float,
    jobs_per_machine: int,
    max_jobs_per_machine: int,
    pool_keep_stopped: int,
    max_queue: int,
    worker_idle_timeout: float,
    max_pixels: int | None,
    max_side: int | None,
    max_frames: int | None,
    max_seconds: float | None,
    provider: ProviderChoice,
) -> None:
    """Run the HTTP gateway (POST /v1/images) with on-demand worker machines."""
    from uplodr.gateway.run import GatewayOptions, run_gateway
    from uplodr.limits import ImageLimits
    from uplodr.preset import DEFAULT_PRESET, load_preset_file, load_presets_file

    # a bad preset raises PresetError: said as one line by the command (USAGE_ERRORS)
    presets = load_presets_file(presets_file) if presets_file else {}
    if preset_file and "default" in presets:
        logging.getLogger("uplodr.gateway").warning(
            "--preset %s is the default preset; the presets file's `default` is not used",
            preset_file,
        )
    preset = (
        load_preset_file(preset_file) if preset_file else presets.get("default", DEFAULT_PRESET)
    )
    given: dict[str, Any] = {
        "max_pixels": max_pixels,
        "max_side": max_side,
        "max_frames": max_frames,
        "max_seconds": max_seconds,
    }
    try:
        limits = ImageLimits(**{name: value for name, value in given.items() if value is not None})
    except ValueError as error:
        message = str(error)
        for name in given:  # name the option, not the field
            message = message.replace(f"ImageLimits.{name}", f"--{name.replace('_', '-')}")
        raise ConfigError(message) from None
    if max_machines is not None:
        if pool_max is not None and pool_max != max_machines:
            raise ConfigError(
                f"--pool-max {pool_max} and --max-machines {max_machines} disagree "
                "(--max-machines is the old name of --pool-max: give one)"
            )
        logging.getLogger("uplodr.gateway").warning(
            "--max-machines (UPLODR_MAX_MACHINES) is the old name of --pool-max (UPLODR_POOL_MAX)"
        )
        pool_max = max_machines
    options = GatewayOptions(
        host=host,
        port=port,
        stores=stores,
        public_url=public_url,
        key_mode="name" if keys == "name" else "digest",
        max_upload_bytes=max_upload,
        max_in_flight=max_in_flight,
        spool_budget=spool_budget,
        spool_dir=spool_dir,
        body_timeout=body_timeout,
        tokens_file=tokens_file,
        secret_file=secret_file,
        metrics_token=metrics_token,
        boot_timeout=boot_timeout,
        job_timeout=job_timeout,
        reap_interval=reap_interval,
        price_per_hour=price_per_hour,
        preset=preset,
        presets=presets,
        provider=provider.name,
        provider_settings=provider.settings,
        worker_idle_timeout=worker_idle_timeout,
        max_machines=pool_max,
        max_queue=max_queue,
        pool_min=pool_min,
        pool_idle=pool_idle,
        jobs_per_machine=jobs_per_machine,
        max_jobs_per_machine=max_jobs_per_machine,
        pool_keep_stopped=pool_keep_stopped,
        limits=limits,
    )
    sys.exit(run_gateway(options))


main.add_command(worker)


@main.group()
def images() -> None:
    """The stored images of a gateway: list, show, delete (through its HTTP API)."""


for _name, _command in IMAGE_COMMANDS.items():
    images.command(_name)(_command)


@main.command()
@click.argument("name")
@click.option(
    "--prefix",
    "prefixes",
    multiple=True,
    help="A folder the token may write under, e.g. blog/ (repeat for more). Default: everywhere.",
)
@click.option(
    "--max-in-flight", type=click.IntRange(min=1), help="The token's own bound of uploads."
)
def token(name: str, prefixes: tuple[str, ...], max_in_flight: int | None) -> None:
    """Make a new gateway token: its secret (stdout, once; give it to the client) and its
    entry for the tokens file (stderr; it holds only the secret's SHA-256)."""
    import secrets

    from uplodr.gateway.tokens import NAME, secret_hash

    if not NAME.match(name):
        raise click.BadParameter("1–64 letters, digits, '-', '_' or '.'", param_hint="NAME")
    secret = secrets.token_urlsafe(32)  # 256 bits: see gateway/tokens.py for why SHA-256
    entry = [
        "[[tokens]]",
        f"name = {json.dumps(name)}",
        f'sha256 = "{secret_hash(secret).hex()}"',
        f"prefixes = {json.dumps(list(prefixes) or [''])}",
    ]
    if max_in_flight is not None:
        entry.append(f"max_in_flight = {max_in_flight}")
    click.echo("\n".join(entry), err=True)
    click.echo(secret)


def _alt_template(value: str) -> str:
    from uplodr.markup import MAX_ALT_CHARS

    if len(value) > MAX_ALT_CHARS:
        raise click.BadParameter(f"is {len(value)} characters; at most {MAX_ALT_CHARS}")
    return value


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "--folder",
    default="",
    callback=lambda _ctx, _param, value: store_folder(value),
    help="Folder for the variants, e.g. blog/2026.",
)
@gateway_options
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    default=4,
    envvar="UPLODR_JOBS",
    help="Uploads at once (4 keeps a default gateway's machines busy without filling its queue).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file on stdout.")
@click.option(
    "--html", "as_html", is_flag=True, help="Print each image's <picture> markup on stdout."
)
@click.option("--timeout", type=DURATION, default="10m", help="Longest wait for one image.")
@click.option("--preset", help="A named preset of the gateway (serve --presets); default: its own.")
@click.option(
    "--original",
    type=click.Choice(["keep", "only", "drop"]),
    help="keep: also store each upload as it came — WITH its metadata, GPS location included; "
    "only: store nothing else; drop: no original even if the preset keeps one.",
)
@click.option(
    "--alt",
    default="",
    callback=lambda _ctx, _param, value: _alt_template(value),
    help="Alt text of every image's markup; {stem} is the file's name without its extension, "
    "- and _ read as spaces. Default: empty, to be written per image.",
)
def convert(
    paths: tuple[str, ...],
    folder: str,
    server: str,
    token: str | None,
    jobs: int,
    as_json: bool,
    as_html: bool,
    timeout: float,
    preset: str | None,
    original: Literal["keep", "only", "drop"] | None,
    alt: str,
) -> None:
    """Upload images — files, folders (recursively) and globs — through a gateway.

    Files are recognised as images by their first bytes; others are skipped and counted. Exit
    status: 0 all converted, 1 any failed, 2 usage error, 130 interrupted (Ctrl-C).

    The alt text is empty unless --alt gives one: a file name does not describe a picture.
    """
    from uplodr.cli.convert import UploadOptions, convert_paths

    if as_json and as_html:
        raise click.UsageError("choose one of --json and --html")
    if as_html and original == "only":
        raise click.UsageError("--original only stores no variant, so there is no --html markup")
    sys.exit(
        convert_paths(
            paths,
            options=UploadOptions(folder, preset, original, alt),
            server=server,
            token=token,
            jobs=jobs,
            timeout=timeout,
            output="json" if as_json else "html" if as_html else "lines",
        )
    )


@main.command()
@click.option(
    "--older-than",
    type=DURATION,
    default="1h",
    help="Destroy uplodr machines older than this (and any past their deadline).",
)
@click.option("--dry-run", is_flag=True, help="Only list what would be destroyed.")
@provider_options
def reap(older_than: float, dry_run: bool, provider: ProviderChoice) -> None:
    """Destroy uplodr's machines that outlived their job (never any other machine)."""
    from uplodr.dispatch.reaper import reap as run_reap

    machines = provider.build()

    async def go() -> int:
        try:
            result = await run_reap(machines, older_than, dry_run)
        finally:
            await machines.aclose()
        verb = "would destroy" if dry_run else "destroyed"
        for machine in result.stale:
            if dry_run or machine.id in result.destroyed:
                click.echo(f"{verb} {machine.id} ({machine.state}, {_age(machine)} old)")
        for machine_id, why in result.failed.items():
            click.echo(f"failed to destroy {machine_id}: {why}", err=True)
        click.echo(
            f"{len(result.stale)} stale, {len(result.destroyed)} destroyed, "
            f"{len(result.failed)} failed"
        )
        return 1 if result.failed else 0

    sys.exit(asyncio.run(go()))


@main.command()
@click.option(
    "--store",
    "stores",
    multiple=True,
    help="A store as `uplodr serve` takes it (repeat for mirrors). Default: serve's default "
    "local store.",
)
@provider_options
def doctor(stores: tuple[str, ...], provider: ProviderChoice) -> None:
    """Check that `serve` with these options can convert now: provider, machines, stores."""
    from uplodr.cli.doctor import run_checks
    from uplodr.gateway.run import data_dir

    specs = list(stores) or [str(data_dir() / "store")]
    checks = asyncio.run(run_checks(provider.name, provider.settings, specs))
    for check in checks:
        click.echo(check.line())
    sys.exit(0 if all(check.ok for check in checks) else 1)


@main.command()
@click.option(
    "--store",
    "stores",
    multiple=True,
    help="A store as `uplodr serve` takes it (repeat for mirrors). Default: serve's default "
    "local store.",
)
@click.option(
    "--older-than",
    type=DURATION,
    default="1h",
    help="Only leftovers this old; keep it above the longest a worker lives (~22 min with serve's "
    "defaults: the pool's 15 min, a boot and a job).",
)
@click.option(
    "--folder",
    default="",
    callback=lambda _ctx, _param, value: store_folder(value),
    help="Only under this folder.",
)
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
def sweep(stores: tuple[str, ...], older_than: float, folder: str, dry_run: bool) -> None:
    """Delete what failed jobs left in the stores: variant sets that never got their manifest,
    and stray temporary and check objects. Complete sets are never touched."""
    from uplodr.cli.sweep import sweep_stores
    from uplodr.gateway.run import data_dir

    specs = list(stores) or [str(data_dir() / "store")]
    sys.exit(sweep_stores(specs, older_than, dry_run, folder))


@main.command()
@rebuild_options
@provider_options
def rebuild(
    folder: str,
    preset_name: str,
    presets_file: Path | None,
    replace: bool,
    pool_max: int | None,
    stores: tuple[str, ...],
    public_url: str | None,
    boot_timeout: float,
    job_timeout: float,
    price_per_hour: float | None,
    as_json: bool,
    provider: ProviderChoice,
) -> None:
    """Convert every set under --folder again with --preset, from its kept original, on a pool
    of machines. Sets already in the new preset are skipped (resumable: run it again after an
    interruption); sets without an original are listed, never re-encoded from a variant.

    Exit status: 0 all done, 1 any failed, 2 usage error, 130 stopped by a signal."""
    from uplodr.cli.rebuild import RebuildRequest, run_rebuild
    from uplodr.gateway.run import GatewayOptions
    from uplodr.preset import DEFAULT_PRESET, load_presets_file

    folder = store_folder(folder)
    presets = load_presets_file(presets_file) if presets_file else {}
    if preset_name != "default" and preset_name not in presets:
        known = ", ".join(["default", *(n for n in presets if n != "default")])
        raise click.BadParameter(
            f"no preset {preset_name!r} (known: {known}; name presets with --presets FILE)",
            param_hint="--preset",
        )
    options = GatewayOptions(
        stores=stores,
        public_url=public_url,
        boot_timeout=boot_timeout,
        job_timeout=job_timeout,
        price_per_hour=price_per_hour,
        preset=presets.get("default", DEFAULT_PRESET),
        presets=presets,
        provider=provider.name,
        provider_settings=provider.settings,
        max_machines=pool_max,
    )
    sys.exit(run_rebuild(options, RebuildRequest(folder, preset_name, replace, as_json)))


def run() -> NoReturn:
    """The `uplodr` command: `main`, then an exit that skips the interpreter's finalization.

    obstore runs S3 requests on a Rust (tokio) runtime whose threads may still be handing back
    a finished request while Python finalizes; now and then that aborts the process (SIGABRT,
    pyo3-async-runtimes' known exit race), turning a clean exit status into 134. Every command
    has closed its stores, machines and servers by the time `main` returns, so nothing is lost
    by leaving without finalization once output and logs are flushed.

    Errors of the command line are printed here as one line (see the module docstring)."""
    try:
        result = main.main(prog_name="uplodr", standalone_mode=False)
        # --help and ctx.exit(n) give their exit status; a finished command gives None.
        code = result if isinstance(result, int) else 0
    except click.exceptions.NoArgsIsHelpError as error:
        error.show()  # `uplodr` or `uplodr machines` alone: their help, as click prints it
        code = error.exit_code
    except click.ClickException as error:
        click.echo(one_line(error), err=True)
        code = error.exit_code
    except _Failed as error:
        click.echo(str(error), err=True)
        code = error.exit_code
    except click.Abort:
        click.echo("Aborted!", err=True)
        code = 1
    except ModuleNotFoundError as missing:
        code = _missing_extra(missing)
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


# Top-level modules of the `server` extra (pyproject.toml): a plain `pip install uplodr` is the
# client and lacks them.
SERVER_EXTRA = frozenset(
    {
        "pyvips",
        "PIL",
        "pillow_heif",
        "blurhash",
        "grpc",
        "grpc_health",
        "grpc_reflection",
        "google",
        "obstore",
        "starlette",
        "uvicorn",
        "markdown_it",
        "mdurl",
        "imagecodecs",
        "numpy",
        "ssimulacra2",
        "scipy",
        "mozjpeg_lossless_optimization",
        "multipart",
        "python_multipart",
        "prometheus_client",
        "psutil",
        "docker",
        "aiolimiter",
        "lightkube",
    }
)


def _missing_extra(missing: ModuleNotFoundError) -> int:
    """One line naming the extra to install, for a command run without the server's packages."""
    module = (missing.name or "").split(".")[0]
    if module not in SERVER_EXTRA:
        raise missing
    command = next((arg for arg in sys.argv[1:] if arg in main.commands), "this command")
    print(
        f"uplodr {command} needs the server extra ({module} is not installed): "
        "pip install 'uplodr[server]'",
        file=sys.stderr,
    )
    return 2


def _age(machine: Machine) -> str:
    created = created_time(machine)
    if created is None:
        return "unknown"
    return format_age(time.time() - created)


@main.group()
def machines() -> None:
    """Inspect uplodr's machines."""


@machines.command("ls")
@click.option("--json", "as_json", is_flag=True)
@provider_options
def machines_ls(as_json: bool, provider: ProviderChoice) -> None:
    """List uplodr's machines (only those carrying uplodr's tags)."""
    found = provider.build()

    async def go() -> None:
        try:
            listed = await found.list({})
        finally:
            await found.aclose()
        if as_json:
            click.echo(
                json.dumps(
                    [
                        {
                            "id": m.id,
                            "address": m.address,
                            "state": m.state,
                            "tags": dict(m.tags),
                            "created_at": m.created_at,
                        }
                        for m in listed
                    ],
                    indent=2,
                )
            )
            return
        header = ("id", "state", "address", "age", "gateway", "lease")
        rows = [
            (m.id, m.state, m.address, _age(m), m.tags.get("gateway", ""), m.tags.get("lease", ""))
            for m in listed
        ]
        if not sys.stdout.isatty():  # piped: whole values, tab-separated, for cut/awk
            for row in (header, *rows):
                click.echo("\t".join(row))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(*header)
        for row in rows:
            table.add_row(*row)
        Console().print(table)
        click.echo(f"{len(listed)} machine(s)")

    asyncio.run(go())
