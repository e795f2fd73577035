"""`uplodr doctor`: whether `uplodr serve` with these options could convert an upload now — one
line per check, before a user finds out from a failed upload.

Checks, in order: the provider's options fit (it can be built), the provider can start a machine
(`Provider.check`: local — state dir writable, memory cgroup usable; docker — engine answers,
image present; fly — token and app good, API answers), and each store is writable (a check
object written, read back, deleted) and reachable from the provider's machines (a local folder
needs a provider that shares this host's files). Each check is bounded in time, so a provider or
store that does not answer is a failed line, not a hang. Exit status 1 when any check failed.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from uplodr.errors import UplodrError
from uplodr.machines.base import Provider
from uplodr.machines.providers import build_provider
from uplodr.machines.settings import ProviderSettings
from uplodr.storage.s3 import quiet_retries
from uplodr.storage.spec import open_store

STORE_TIMEOUT = 15.0  # seconds a store's check may take
PROVIDER_TIMEOUT = 15.0  # seconds a provider's check may take (each bounds itself tighter)


@dataclass(frozen=True)
class Check:
    what: str
    ok: bool
    detail: str = ""

    def line(self) -> str:
        status = "ok" if self.ok else "failed"
        return f"{status:<7} {self.what}" + (f": {self.detail}" if self.detail else "")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def is_local(spec: str) -> bool:
    return "://" not in spec or spec.startswith("file://")


async def check_provider(name: str, settings: ProviderSettings) -> tuple[list[Check], Provider]:
    """The provider's check, and the provider (for the caller to close). Raises ProviderError
    when its options do not fit."""
    provider = build_provider(name, settings)
    try:
        async with asyncio.timeout(PROVIDER_TIMEOUT):
            await provider.check()
    except TimeoutError:
        return [Check(f"provider {name}", False, f"no answer in {PROVIDER_TIMEOUT:g} s")], provider
    except UplodrError as error:
        return [Check(f"provider {name}", False, _one_line(error))], provider
    return [Check(f"provider {name}", True, "can start a machine")], provider


def _missing_folder(spec: str) -> Check | None:
    """For a local folder that does not exist yet: whether serve can create it."""
    folder = Path(spec.removeprefix("file://")).expanduser()
    if folder.exists():
        return None
    parent = next((p for p in folder.parents if p.exists()), Path("/"))
    if os.access(parent, os.W_OK):
        return Check(f"store {spec}", True, "does not exist yet; serve creates it")
    return Check(f"store {spec}", False, f"does not exist, and {parent} is not writable")


async def check_store(spec: str, provider: Provider | None) -> Check:
    what = f"store {spec}"
    if is_local(spec):
        try:
            if (missing := _missing_folder(spec)) is not None:
                return missing
        except OSError as error:  # a parent folder this user may not even look into
            return Check(what, False, f"cannot look at it: {error.strerror or error}")
    try:
        store = open_store(spec, None, os.environ)
    except (ValueError, OSError, UplodrError) as error:
        return Check(what, False, _one_line(error).removeprefix(f"{spec}: "))
    try:
        async with asyncio.timeout(STORE_TIMEOUT):
            with quiet_retries():
                await store.check_writable()
    except TimeoutError:
        return Check(what, False, f"no answer in {STORE_TIMEOUT:g} s")
    except UplodrError as error:
        message = _one_line(error).removeprefix(f"{store.description}: ")
        return Check(what, False, message.removeprefix(f"{spec}: "))
    finally:
        await store.aclose()
    return Check(what, True, "writable")


async def run_checks(name: str, settings: ProviderSettings, stores: list[str]) -> list[Check]:
    checks: list[Check] = []
    provider: Provider | None = None
    try:
        found, provider = await check_provider(name, settings)
        checks += found
    except UplodrError as error:  # its options do not fit
        checks.append(Check(f"provider {name}", False, _one_line(error)))
    try:
        for spec in stores:
            checks.append(await check_store(spec, provider))
    finally:
        if provider is not None:
            await provider.aclose()
    return checks
