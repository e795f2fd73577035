"""Assemble and run the gateway: stores, provider, dispatcher, reaper, HTTP server."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import secrets
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import uvicorn

from uplodr.dispatch.job import Dispatcher, DispatchSettings
from uplodr.dispatch.reaper import reap
from uplodr.errors import UplodrError
from uplodr.gateway import metrics
from uplodr.gateway.app import create_app
from uplodr.gateway.service import ConversionService
from uplodr.machines.base import Provider
from uplodr.machines.fly import FlyProvider
from uplodr.machines.pricing import fly_price_per_second
from uplodr.preset import DEFAULT_PRESET, Preset
from uplodr.storage import LocalStore, Publisher, open_store, store_env

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
    preset_file: Path | None = None
    provider: str = "local"
    machine_memory_mb: int | None = None
    worker_idle_timeout: float = 30.0
    max_machines: int | None = None  # None: the provider's default
    max_queue: int = 16
    # ImageLimits overrides for the workers (max_pixels, max_side, max_frames, max_seconds).
    limits: dict[str, float] = field(default_factory=dict)


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
            Path(spec).mkdir(parents=True, exist_ok=True)
    public_url = options.public_url
    if public_url is None and "://" not in specs[0]:
        host = "127.0.0.1" if options.host in ("0.0.0.0", "::") else options.host
        public_url = f"http://{host}:{options.port}/files/{{key}}"
    return resolved, public_url


def default_max_machines(provider: str) -> int:
    """Local machines share this host: one per core (each peaks near 450 MB). Remote machines
    bring their own cores; the cap only bounds the bill."""
    return (os.cpu_count() or 1) if provider == "local" else 16


def provider_price_per_second(provider: Provider, memory_mb: int | None) -> float:
    if isinstance(provider, FlyProvider):
        guest = provider.config.guest
        return fly_price_per_second(guest.cpu_kind, guest.cpus, memory_mb or guest.memory_mb)
    return 0.0


def worker_env(
    stores: list[str], public_url: str | None, options: GatewayOptions, preset: Preset
) -> dict[str, str]:
    """Only what a worker needs: its stores' settings and credentials, never anything else of
    the gateway's environment."""
    env: dict[str, str] = {}
    for index, spec in enumerate(stores):
        env.update(store_env(spec, public_url if index == 0 else None, os.environ))
    env["UPLODR_STORES"] = json.dumps(stores)
    if public_url:
        env["UPLODR_PUBLIC_URL"] = public_url
    env["UPLODR_KEYS"] = options.key_mode
    env["UPLODR_PRESET"] = preset.to_json()
    env["UPLODR_MAX_FILE_BYTES"] = str(options.max_upload_bytes)
    env["UPLODR_IDLE_TIMEOUT"] = str(options.worker_idle_timeout)
    if options.limits:
        env["UPLODR_LIMITS"] = json.dumps(options.limits)
    return env


async def serve_gateway(options: GatewayOptions, provider: Provider) -> int:
    tokens = tokens_from_env()
    if not tokens and not is_loopback(options.host):
        print(
            f"uplodr serve: refusing to listen on {options.host} without UPLODR_TOKENS "
            "(comma-separated bearer tokens); listen on 127.0.0.1 or set tokens",
            file=sys.stderr,
        )
        return 2
    preset = (
        Preset.from_json(options.preset_file.read_text()) if options.preset_file else DEFAULT_PRESET
    )
    stores_specs, public_url = resolve_stores(options)
    if options.provider != "local" and any("://" not in s for s in stores_specs):
        print(
            "uplodr serve: remote machines cannot write to a local folder; use --store s3://BUCKET",
            file=sys.stderr,
        )
        return 2
    stores = [
        open_store(spec, public_url if index == 0 else None, os.environ)
        for index, spec in enumerate(stores_specs)
    ]
    publisher = Publisher(stores, options.key_mode)
    try:
        await publisher.check_writable()
    except UplodrError as error:
        print(f"uplodr serve: {error}", file=sys.stderr)
        await publisher.aclose()
        await provider.aclose()
        return 2
    gateway_id = f"{socket.gethostname()}-{secrets.token_hex(4)}"
    price = (
        options.price_per_hour / 3600
        if options.price_per_hour is not None
        else provider_price_per_second(provider, options.machine_memory_mb)
    )
    dispatcher = Dispatcher(
        provider,
        worker_env(stores_specs, public_url, options, preset),
        gateway_id,
        DispatchSettings(
            boot_timeout=options.boot_timeout,
            job_timeout=options.job_timeout,
            memory_mb=options.machine_memory_mb,
            price_per_second=price,
        ),
    )
    metrics.REGISTRY.register(metrics.DispatchCollector(lambda: dispatcher.totals))
    reaper: asyncio.Task[None] | None = None

    async def reap_forever() -> None:
        while True:
            with contextlib.suppress(Exception):
                await reap(provider, older_than=None)
            await asyncio.sleep(options.reap_interval)

    async def startup() -> None:
        nonlocal reaper
        reaper = asyncio.create_task(reap_forever())
        log.info(
            "gateway %s: stores %s, provider %s",
            gateway_id,
            ", ".join(s.description for s in stores),
            options.provider,
        )

    async def shutdown() -> None:
        if reaper is not None:
            reaper.cancel()
        await dispatcher.drain()
        # Whatever this gateway still owns goes with it.
        for machine in await provider.list({"gateway": gateway_id}):
            with contextlib.suppress(Exception):
                await provider.destroy(machine.id)
        await provider.aclose()
        await publisher.aclose()

    primary = stores[0]
    app = create_app(
        ConversionService(
            dispatcher,
            publisher,
            preset,
            max_machines=options.max_machines or default_max_machines(options.provider),
            max_queue=options.max_queue,
        ),
        tokens=tokens,
        max_upload_bytes=options.max_upload_bytes,
        files_root=primary.root if isinstance(primary, LocalStore) else None,
        on_startup=startup,
        on_shutdown=shutdown,
    )
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=30,
    )
    server = uvicorn.Server(config)
    print(
        f"uplodr serving on http://{options.host}:{options.port}  (store: {stores[0].description})",
        file=sys.stderr,
        flush=True,
    )
    await server.serve()
    return 0


def run_gateway(options: GatewayOptions, provider: Provider) -> int:
    return asyncio.run(serve_gateway(options, provider))
