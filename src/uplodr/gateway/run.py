"""Assemble and run the gateway, as named steps that close what they opened on every exit path.

    listen (bind the port: one in use is one line) → load tokens → check exposure → resolve
    stores → open provider → check stores reachable → check provider → open stores → check
    writable → open dispatcher → open pool → start reaper loop → admission (bound of uploads in
    flight, spool folder) → the delete-token secret (made on the first start) → serve HTTP
    (with /readyz checking the stores and the provider again on demand)

Each step that opens something registers its closing on one AsyncExitStack, so a failure at any
step (a store that is not writable, a port in use) closes exactly what was opened before it, and
a normal shutdown closes everything in reverse: the reaper stops, the pool lets running jobs
finish and destroys its machines, destroys in flight finish, the machines still tagged with this
gateway are destroyed, then stores and provider close.
A step that refuses the configuration raises `StartupError` (one line, exit code 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import secrets
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import uvicorn
from starlette.applications import Starlette

from uplodr import retry_log
from uplodr.dispatch.dispatcher import Dispatcher, DispatchSettings
from uplodr.dispatch.lease import LeaseSettings
from uplodr.dispatch.pool import Pool, PoolSettings
from uplodr.dispatch.reaper import reap_periodically
from uplodr.errors import ProviderError, UplodrError, WorkerUnavailable
from uplodr.gateway import metrics
from uplodr.gateway.admission import Admission
from uplodr.gateway.app import create_app
from uplodr.gateway.delete_tokens import (
    SECRET_BYTES,
    DeleteTokens,
    SecretError,
    SecretNotCreated,
    create_secret,
    read_secret,
)
from uplodr.gateway.head_limit import READ_HEAD_BYTES
from uplodr.gateway.readiness import Check, Readiness
from uplodr.gateway.service import ConversionService
from uplodr.gateway.tokens import (
    Token,
    Tokens,
    TokensError,
    env_tokens,
    load_tokens_file,
    secret_hash,
)
from uplodr.limits import DEFAULT_LIMITS, ImageLimits
from uplodr.machines.base import Provider
from uplodr.machines.providers import build_provider
from uplodr.machines.settings import ProviderSettings
from uplodr.preset import DEFAULT_PRESET, Preset
from uplodr.storage import LocalStore, Publisher, Store, open_store
from uplodr.worker_env import WorkerEnv

log = logging.getLogger("uplodr.gateway")


@dataclass(frozen=True)
class GatewayOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    stores: tuple[str, ...] = ()
    public_url: str | None = None
    key_mode: Literal["digest", "name"] = "digest"
    max_upload_bytes: int = 64 * 1024 * 1024
    boot_timeout: float = 60.0
    job_timeout: float = 300.0
    reap_interval: float = 60.0
    price_per_hour: float | None = None
    preset: Preset = DEFAULT_PRESET
    presets: Mapping[str, Preset] = field(default_factory=dict)  # named: ?preset=NAME
    provider: str = "local"
    provider_settings: ProviderSettings = field(default_factory=ProviderSettings)
    worker_idle_timeout: float = 30.0
    max_machines: int | None = None  # --pool-max; None: the provider's default
    max_queue: int = 16
    pool_min: int = 0
    pool_idle: float = 30.0  # 0: a machine per job
    jobs_per_machine: int = 1
    max_jobs_per_machine: int = PoolSettings.max_jobs_per_machine
    pool_keep_stopped: int = 0
    limits: ImageLimits = DEFAULT_LIMITS
    tokens_file: Path | None = None  # --tokens-file (UPLODR_TOKENS adds to it)
    metrics_token: str | None = None  # --metrics-token: then only it reads /metrics
    max_in_flight: int | None = None  # None: the service's job slots plus --max-queue
    spool_budget: int | None = None  # bytes on the spool disk; None: no bound beyond in-flight
    spool_dir: Path | None = None  # None: the system's temporary folder
    body_timeout: float = 60.0  # seconds a request body may take to arrive
    secret_file: Path | None = None  # --secret-file; None: data_dir()/secret, made when absent


class StartupError(Exception):
    """The gateway cannot start with these options; the message is one line for the user."""


@dataclass
class Gateway:
    """A gateway's parts, open and ready to serve."""

    gateway_id: str
    app: Starlette
    provider: Provider
    dispatcher: Dispatcher
    pool: Pool
    service: ConversionService
    description: str  # the primary store, for the start-up line
    # Closes everything opened (idempotent): also called from the app's shutdown, before
    # uvicorn re-raises the signal that stopped it.
    close: Callable[[], Awaitable[None]]


def data_dir() -> Path:
    configured = os.environ.get("UPLODR_DATA_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".local" / "share" / "uplodr"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    return False


def tokens_from_env() -> list[str]:
    return [t.strip() for t in os.environ.get("UPLODR_TOKENS", "").split(",") if t.strip()]


# -- the steps ---------------------------------------------------------------------------------


def load_tokens(options: GatewayOptions) -> Tokens:
    """UPLODR_TOKENS (allowed everywhere) and the tokens file's entries (bound to prefixes)."""
    try:
        uploads = env_tokens(tokens_from_env())
        if options.tokens_file is not None:
            uploads += load_tokens_file(options.tokens_file)
        metrics_token = (
            Token("metrics", secret_hash(options.metrics_token)) if options.metrics_token else None
        )
        return Tokens(tuple(uploads), metrics_token)
    except TokensError as error:
        raise StartupError(str(error)) from None


def load_delete_tokens(options: GatewayOptions) -> DeleteTokens:
    """The secret images' delete tokens derive from: `--secret-file` (which must exist), or
    the one in the data folder, made on the first start (one log line says where; never the
    secret itself)."""
    try:
        if options.secret_file is not None:
            return DeleteTokens(read_secret(options.secret_file))
        path = data_dir() / "secret"
        try:
            created = create_secret(path)
        except SecretNotCreated as error:
            log.warning(
                "%s; delete tokens use a secret of this process only and stop working when it "
                "restarts (give --secret-file to keep them)",
                error,
            )
            return DeleteTokens(secrets.token_bytes(SECRET_BYTES))
        if created is not None:
            log.info("made a new secret for delete tokens in %s (mode 0600; keep it)", path)
            return DeleteTokens(created)
        return DeleteTokens(read_secret(path))
    except SecretError as error:
        raise StartupError(str(error)) from None


def check_exposure(options: GatewayOptions, tokens: Tokens) -> None:
    if not tokens.required and not is_loopback(options.host):
        raise StartupError(
            f"refusing to listen on {options.host} without UPLODR_TOKENS "
            "(comma-separated bearer tokens) or --tokens-file; listen on 127.0.0.1 or set tokens"
        )


def resolve_stores(options: GatewayOptions) -> tuple[list[str], str | None]:
    """Store specs with local folders made absolute (workers run elsewhere), and the URL
    template: a local primary store is served by this gateway under /files."""
    specs = list(options.stores) or [str(data_dir() / "store")]
    resolved = [
        s
        if "://" in s and not s.startswith("file://")
        else str(Path(s.removeprefix("file://")).expanduser().resolve())
        for s in specs
    ]
    for spec in resolved:
        if "://" not in spec:
            try:
                Path(spec).mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise StartupError(
                    f"store {spec}: cannot create the folder: {error.strerror}"
                ) from None
    public_url = options.public_url
    if public_url is None and "://" not in specs[0]:
        host = "127.0.0.1" if options.host in ("0.0.0.0", "::") else options.host
        public_url = f"http://{host}:{options.port}/files/{{key}}"
    return resolved, public_url


async def open_provider(
    stack: contextlib.AsyncExitStack, options: GatewayOptions, given: Provider | None
) -> Provider:
    try:
        provider = given or build_provider(options.provider, options.provider_settings)
    except ProviderError as error:
        raise StartupError(str(error)) from None
    stack.push_async_callback(provider.aclose)
    return provider


async def check_provider(provider: Provider) -> None:
    """A provider that cannot work as configured (no image, a refused token) stops start-up in
    one line, as a store that cannot be written does; one that is only unreachable now (an
    engine restarting, an API outage) does not: the gateway starts, says so, and /readyz
    answers 503 naming it until it is back."""
    try:
        await provider.check()
    except ProviderError as error:
        raise StartupError(f"provider {provider.name}: {error}") from None
    except WorkerUnavailable as error:
        log.warning("provider %s is not reachable yet: %s", provider.name, error)


async def open_stores(
    stack: contextlib.AsyncExitStack, stores: list[str], public_url: str | None, key_mode: str
) -> Publisher:
    opened: list[Store] = []
    try:
        for index, spec in enumerate(stores):
            store = open_store(spec, public_url if index == 0 else None, os.environ)
            stack.push_async_callback(store.aclose)
            opened.append(store)
        publisher = Publisher(opened, "name" if key_mode == "name" else "digest")
        await publisher.check_writable()
    except (ValueError, UplodrError) as error:
        raise StartupError(str(error)) from None
    return publisher


def worker_env(options: GatewayOptions) -> WorkerEnv:
    """What the workers are told: the preset, the limits — no store, no credential, nothing
    else of the gateway's environment (they send their outputs back; the gateway publishes)."""
    return WorkerEnv(
        preset=options.preset,
        limits=options.limits,
        max_file_bytes=options.max_upload_bytes,
        idle_timeout=options.worker_idle_timeout,
        max_jobs=options.jobs_per_machine,
    )


def open_dispatcher(
    stack: contextlib.AsyncExitStack,
    provider: Provider,
    env: WorkerEnv,
    options: GatewayOptions,
    gateway_id: str | None = None,
) -> Dispatcher:
    price = (
        options.price_per_hour / 3600
        if options.price_per_hour is not None
        else provider.capabilities.price_per_second
    )
    settings = DispatchSettings(
        job_timeout=options.job_timeout,
        price_per_second=price,
        lease=LeaseSettings(boot_timeout=options.boot_timeout),
    )
    gateway_id = gateway_id or f"{socket.gethostname()}-{secrets.token_hex(4)}"
    dispatcher = Dispatcher(provider, env, gateway_id, settings)
    # Closed in reverse: destroys still running first, then whatever still carries our tag.
    stack.push_async_callback(dispatcher.destroy_own_machines)
    stack.push_async_callback(dispatcher.drain)
    collector = metrics.DispatchCollector(lambda: dispatcher.totals)
    metrics.REGISTRY.register(collector)
    stack.callback(metrics.REGISTRY.unregister, collector)
    return dispatcher


async def open_pool(
    stack: contextlib.AsyncExitStack,
    dispatcher: Dispatcher,
    options: GatewayOptions,
    max_machines: int,
) -> Pool:
    try:
        settings = PoolSettings(
            min=options.pool_min,
            max=max_machines,
            idle=options.pool_idle,
            jobs_per_machine=options.jobs_per_machine,
            max_jobs_per_machine=options.max_jobs_per_machine,
            keep_stopped=options.pool_keep_stopped,
        )
        pool = Pool(dispatcher, settings)
    except ValueError as error:
        raise StartupError(str(error)) from None
    # Closed before the dispatcher's drain: running jobs finish, then every machine goes.
    stack.push_async_callback(pool.close)
    await pool.start()
    collector = metrics.PoolCollector(pool.stats)
    metrics.REGISTRY.register(collector)
    stack.callback(metrics.REGISTRY.unregister, collector)
    return pool


def start_reaper(stack: contextlib.AsyncExitStack, provider: Provider, interval: float) -> None:
    task = asyncio.create_task(reap_periodically(provider, interval))

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    stack.push_async_callback(stop)


# -- assembled ---------------------------------------------------------------------------------


@dataclass
class Conversions:
    """What converts: the provider, the stores, the dispatcher, the pool and the service on
    them — the gateway's, and `uplodr rebuild`'s without HTTP."""

    provider: Provider
    publisher: Publisher
    dispatcher: Dispatcher
    pool: Pool
    service: ConversionService


async def open_conversions(
    stack: contextlib.AsyncExitStack,
    options: GatewayOptions,
    provider: Provider | None = None,
    gateway_id: str | None = None,
) -> Conversions:
    """The steps from resolving the stores to the service, each closed by `stack`;
    `gateway_id`: the tag of the machines made (default: host name and a random suffix)."""
    stores, public_url = resolve_stores(options)
    provider = await open_provider(stack, options, provider)
    await check_provider(provider)
    publisher = await open_stores(stack, stores, public_url, options.key_mode)
    env = worker_env(options)
    dispatcher = open_dispatcher(stack, provider, env, options, gateway_id)
    max_machines = options.max_machines or provider.capabilities.default_max_machines
    pool = await open_pool(stack, dispatcher, options, max_machines)
    service = ConversionService(
        pool,
        publisher,
        options.preset,
        max_machines=max_machines,
        max_queue=options.max_queue,
        presets=options.presets,
        # without a pool every job has a machine of its own: max machines = max jobs
        jobs_per_machine=1 if pool.settings.per_job else options.jobs_per_machine,
    )
    return Conversions(provider, publisher, dispatcher, pool, service)


@contextlib.asynccontextmanager
async def open_gateway(
    options: GatewayOptions, provider: Provider | None = None
) -> AsyncIterator[Gateway]:
    """Every part of the gateway, open; all closed when the block ends, however it ends.
    `provider`: a ready provider instead of building `options.provider` (the gateway closes
    it either way). Raises StartupError with one line when the options do not fit."""
    retry_log.install()  # a retry's log record never carries the call's arguments
    async with contextlib.AsyncExitStack() as stack:
        tokens = load_tokens(options)
        check_exposure(options, tokens)
        parts = await open_conversions(stack, options, provider)
        provider, publisher, dispatcher, pool, service = (
            parts.provider,
            parts.publisher,
            parts.dispatcher,
            parts.pool,
            parts.service,
        )
        start_reaper(stack, provider, options.reap_interval)
        admission = open_admission(options, service)
        # Late, once everything else is known to work: a start that fails for another reason
        # says that one line only, and makes no secret.
        delete_tokens = load_delete_tokens(options)
        primary = publisher.primary
        app = create_app(
            service,
            tokens=tokens,
            delete_tokens=delete_tokens,
            admission=admission,
            max_upload_bytes=options.max_upload_bytes,
            body_timeout=options.body_timeout,
            spool_dir=options.spool_dir,
            files_root=primary.root if isinstance(primary, LocalStore) else None,
            readiness=readiness(provider, publisher),
            on_shutdown=stack.aclose,
        )
        log.info(
            "gateway %s: stores %s, provider %s",
            dispatcher.gateway_id,
            ", ".join(s.description for s in publisher.stores),
            provider.name,
        )
        yield Gateway(
            dispatcher.gateway_id,
            app,
            provider,
            dispatcher,
            pool,
            service,
            primary.description,
            stack.aclose,
        )


def open_admission(options: GatewayOptions, service: ConversionService) -> Admission:
    """The bound of uploads in flight: by default every job slot plus the wait queue, so an
    admitted upload is never then refused by the service's queue; a smaller bound refuses
    earlier (before the body), a larger one lets the queue refuse after spooling."""
    max_in_flight = options.max_in_flight or service.slots + service.max_queue
    budget = options.spool_budget
    if budget is not None and budget < options.max_upload_bytes:
        # an upload the size limit allows would then be "busy" forever: say so at start
        raise StartupError(
            f"--spool-budget ({budget} bytes) is smaller than --max-upload "
            f"({options.max_upload_bytes} bytes): an upload of the allowed size could never fit"
        )
    if options.spool_dir is not None:
        try:
            options.spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as error:
            raise StartupError(
                f"--spool-dir {options.spool_dir}: cannot create it: {error.strerror}"
            ) from None
    return Admission(max_in_flight, options.spool_budget)


def readiness(provider: Provider, publisher: Publisher) -> Readiness:
    """What /readyz checks: what a job needs."""
    stores = ", ".join(store.description for store in publisher.stores)
    return Readiness(
        [
            Check("store", publisher.check_writable, stores),
            Check("provider", provider.check, provider.name),
        ]
    )


def listening_socket(host: str, port: int) -> socket.socket:
    """The gateway's socket, bound before anything else is opened: a port in use is one line
    (StartupError), not uvicorn's multi-line error after "uplodr serving on …" was printed."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # As uvicorn binds its own: a restart does not wait for the old connections' TIME_WAIT.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise StartupError(f"--port {port}: {host}:{port} is already in use") from None
        raise StartupError(
            f"--host {host}: cannot listen on port {port}: {error.strerror}"
        ) from None
    return sock


async def serve_http(gateway: Gateway, options: GatewayOptions, sock: socket.socket) -> None:
    config = uvicorn.Config(
        gateway.app,
        host=options.host,
        port=options.port,
        log_level="warning",
        lifespan="on",
        # h11 reads a request head this long, so that an over-long one is answered (414, 431:
        # gateway.head_limit) rather than reset; httptools, if installed, has no such setting
        http="h11",
        h11_max_incomplete_event_size=READ_HEAD_BYTES,
        # SIGTERM: uvicorn stops taking requests and lets running ones finish for this long
        # before it cancels them; a job may take its boot and its job timeout
        timeout_graceful_shutdown=int(options.boot_timeout + options.job_timeout) + 5,
    )
    print(
        f"uplodr serving on http://{options.host}:{options.port}  (store: {gateway.description})",
        file=sys.stderr,
        flush=True,
    )
    await uvicorn.Server(config).serve(sockets=[sock])


async def serve_gateway(options: GatewayOptions, provider: Provider | None = None) -> int:
    try:
        with listening_socket(options.host, options.port) as sock:
            async with open_gateway(options, provider) as gateway:
                await serve_http(gateway, options, sock)
    except StartupError as error:
        print(f"uplodr serve: {error}", file=sys.stderr)
        return 2
    return 0


def run_gateway(options: GatewayOptions) -> int:
    return asyncio.run(serve_gateway(options))
