"""`uplodr convert PATH…`: upload files, folders and globs through a gateway, a few at a time,
with a progress bar on a terminal and one line (or one JSON object) per file otherwise.

Built on `uplodr.client.AsyncClient`: each upload is streamed from disk, a `busy` gateway is
waited out as its Retry-After says, and Ctrl-C cancels the uploads in flight — their requests
close, so the gateway stops those jobs and destroys their machines — then prints a one-line
summary and exits 130. A second run over the same folder is cheap: the gateway answers images it
has already converted from storage (`deduplicated`), without a machine.

Every upload of a run asks for the same `--preset` (checked once against the gateway's
`GET /v1/presets` before any upload, so a typo is one line rather than one failure per file)
and `--original` choice. The alt text is different: it describes one picture, and a folder
holds many, so there is no good default for it — a file name is not a description (WCAG
technique F30), and an `alt` that says "IMG_2682" is worse than an empty one, which marks the
markup as still to be written. `--alt` gives every file the same text, in which `{stem}` is
the file's name without its extension, `-` and `_` read as spaces, for folders whose files are
named for what they show (`red-bicycle_harbour.jpg` → "red bicycle harbour").

Exit status: 0 when every image was converted or deduplicated (non-images are skipped, not
failures), 1 when any failed, 2 for a usage error (a path that is not there, a preset the
gateway does not know), 130 on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import click
import msgspec
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Column

from uplodr.cli.inputs import Inputs, NoSuchInput, find_images
from uplodr.client import ApiError, AsyncClient, Client, Conversion, Original, TransportError

# The gateway runs one machine per core by default (2 on a small host) and lets 16 more uploads
# wait; 4 at a time keeps its machines busy while the next uploads arrive, without filling the
# queue that other clients share.
DEFAULT_JOBS = 4
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

Output = Literal["lines", "json", "html"]


@dataclass(frozen=True)
class UploadOptions:
    """What every upload of a run asks the gateway for (POST /v1/images' query parameters)."""

    folder: str = ""
    preset: str | None = None
    original: Original | None = None
    alt: str = ""  # `{stem}`: the file's stem, - and _ read as spaces

    def alt_for(self, path: Path) -> str | None:
        if not self.alt:
            return None
        stem = " ".join(part for part in re.split(r"[-_\s]+", path.stem) if part)
        return self.alt.replace("{stem}", stem)


@dataclass
class Tally:
    images: int
    converted: int = 0
    deduplicated: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    cancelled: int = 0
    markup_missing: int = 0

    @property
    def finished(self) -> int:
        return self.converted + self.deduplicated + sum(self.failed.values())

    def summary(self, seconds: float, interrupted: bool = False) -> str:
        parts = [f"{self.converted} converted", f"{self.deduplicated} deduplicated"]
        failed = sum(self.failed.values())
        parts.append(f"{failed} failed" + (f" ({_counts(self.failed)})" if failed else ""))
        line = f"{self.images} image{'s' if self.images != 1 else ''}: " + ", ".join(parts)
        skipped = sum(self.skipped.values())
        if skipped:
            line += f"; {skipped} skipped ({_counts(self.skipped)})"
        if interrupted:
            not_started = self.images - self.finished - self.cancelled
            line = f"interrupted: {line}; {self.cancelled} cancelled, {not_started} not started"
        return f"{line} in {seconds:.1f} s"

    def exit_code(self) -> int:
        return EXIT_FAILED if self.failed else EXIT_OK


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{key} {count}" for key, count in sorted(counter.items()))


class Report:
    """One line or one JSON object per file on stdout; with --html, the `<picture>` markup on
    stdout and the per-file lines on stderr."""

    def __init__(self, output: Output) -> None:
        self.output = output

    def _line(self, status: str, path: Path, detail: str) -> None:
        click.echo(f"{status:<12} {path}  {detail}", err=self.output == "html")

    def _json(self, record: dict[str, Any]) -> None:
        click.echo(json.dumps(record, ensure_ascii=False))

    def skipped(self, path: Path, reason: str) -> None:
        if self.output == "json":
            self._json({"path": str(path), "status": "skipped", "reason": reason})
        else:
            self._line("skipped", path, reason)

    def done(self, path: Path, conversion: Conversion) -> None:
        status = "deduplicated" if conversion.deduplicated else "converted"
        if self.output == "json":
            self._json(
                {
                    "path": str(path),
                    "status": status,
                    "conversion": msgspec.to_builtins(conversion),
                }
            )
            return
        took = "" if conversion.deduplicated else f" in {conversion.timings.get('total', 0):.2f} s"
        first = conversion.variants[0].url if conversion.variants else ""
        self._line(status, path, f"{len(conversion.variants)} variants{took}  {first}")
        if self.output == "html" and conversion.html:
            click.echo(conversion.html)

    def failed(self, path: Path, code: str, message: str, status: int | None) -> None:
        if self.output == "json":
            self._json(
                {
                    "path": str(path),
                    "status": "failed",
                    "code": code,
                    "error": message,
                    "http_status": status,
                }
            )
        else:
            self._line("failed", path, f"{code}: {message}")


class Bar:
    """The progress bar on stderr when it is a terminal (files and bytes done, the files being
    uploaded, time left); nothing otherwise. Lines printed to stdout while it runs appear above
    it when stdout is the same terminal."""

    def __init__(self, enabled: bool, files: int, total_bytes: int) -> None:
        self.files = files
        self.done = 0
        self.current: list[str] = []
        self.progress: Progress | None = None
        self.task = TaskID(0)
        if enabled:
            self.progress = Progress(
                SpinnerColumn(),
                TextColumn(
                    "{task.description}",
                    table_column=Column(width=32, no_wrap=True, overflow="ellipsis"),
                ),
                BarColumn(),
                TextColumn("{task.fields[files]}"),
                DownloadColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                redirect_stdout=sys.stdout.isatty(),
                redirect_stderr=False,
            )
            self.task = self.progress.add_task("starting", total=total_bytes, files=self._files())

    def _files(self) -> str:
        return f"{self.done}/{self.files} files"

    def _update(self, advance: int = 0) -> None:
        if self.progress is not None:
            shown = ", ".join(self.current[:2]) + (
                f" +{len(self.current) - 2}" if len(self.current) > 2 else ""
            )
            self.progress.update(
                self.task, advance=advance, description=shown or "…", files=self._files()
            )

    def start(self, path: Path) -> None:
        self.current.append(path.name)
        self._update()

    def finish(self, path: Path, size: int) -> None:
        self.current.remove(path.name)
        self.done += 1
        self._update(advance=size)

    def __enter__(self) -> Bar:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.progress is not None:
            self.progress.stop()


async def _convert_all(
    images: Sequence[Path],
    *,
    client: AsyncClient,
    options: UploadOptions,
    jobs: int,
    tally: Tally,
    report: Report,
    bar: Bar,
) -> None:
    pending: Iterator[Path] = iter(images)

    async def uploader() -> None:
        for path in pending:  # shared by every uploader: each file is taken once
            size = path.stat().st_size if path.exists() else 0
            bar.start(path)
            try:
                conversion = await client.convert(
                    path,
                    folder=options.folder or None,
                    preset=options.preset,
                    original=options.original,
                    alt=options.alt_for(path),
                )
            except asyncio.CancelledError:
                tally.cancelled += 1
                raise
            except ApiError as error:
                tally.failed[error.code] += 1
                report.failed(path, error.code, error.message, error.status)
            except TransportError as error:
                tally.failed["unreachable"] += 1
                report.failed(path, "unreachable", str(error), None)
            except OSError as error:
                tally.failed["unreadable"] += 1
                report.failed(path, "unreadable", str(error), None)
            else:
                if conversion.deduplicated:
                    tally.deduplicated += 1
                else:
                    tally.converted += 1
                if report.output == "html" and not conversion.html:
                    tally.markup_missing += 1
                report.done(path, conversion)
            bar.finish(path, size)

    async with asyncio.TaskGroup() as group:
        for _ in range(min(jobs, len(images))):
            group.create_task(uploader())


def unknown_preset(client: Client, preset: str | None) -> str | None:
    """Why `preset` cannot be used with this gateway (one line), or None when it can — or
    when the gateway cannot say (unreachable, or older than GET /v1/presets): then each
    upload's own answer tells."""
    if preset is None:
        return None
    try:
        known = [p.name for p in client.presets().presets]
    except (ApiError, TransportError):
        return None
    if preset in known:
        return None
    return f"the gateway has no preset {preset!r}; its presets: {', '.join(known)}"


def convert_paths(
    arguments: Sequence[str],
    *,
    options: UploadOptions,
    server: str,
    token: str | None,
    jobs: int,
    timeout: float,
    output: Output,
) -> int:
    try:
        inputs: Inputs = find_images(arguments)
    except NoSuchInput as error:
        click.echo(f"uplodr convert: {error}", err=True)
        return EXIT_USAGE
    with Client(server, token=token, timeout=timeout) as client:
        if refused := unknown_preset(client, options.preset):
            click.echo(f"uplodr convert: {refused}", err=True)
            return EXIT_USAGE
    # The client retries a busy gateway itself; the CLI's summary says what happened.
    logging.getLogger("stamina").setLevel(logging.ERROR)
    report = Report(output)
    tally = Tally(images=len(inputs.images), skipped=inputs.skipped_by_reason())
    for path, reason in inputs.skipped:
        report.skipped(path, reason)
    started = time.monotonic()
    bar = Bar(Console(stderr=True).is_terminal, len(inputs.images), inputs.total_bytes)

    async def run() -> None:
        async with AsyncClient(
            server, token=token, timeout=timeout, max_connections=jobs
        ) as client:
            await _convert_all(
                inputs.images,
                client=client,
                options=options,
                jobs=jobs,
                tally=tally,
                report=report,
                bar=bar,
            )

    try:
        with bar:
            asyncio.run(run())
    except KeyboardInterrupt:
        click.echo(tally.summary(time.monotonic() - started, interrupted=True), err=True)
        return EXIT_INTERRUPTED
    click.echo(tally.summary(time.monotonic() - started), err=True)
    if tally.markup_missing:
        click.echo(
            f"{tally.markup_missing} answer(s) carried no <picture> markup: "
            "this gateway does not make it",
            err=True,
        )
    return tally.exit_code()
