"""The reaper: destroys uplodr's machines that outlived their job.

It lists only machines that carry uplodr's marker tag (the provider guarantees that filter), so
nothing else in the account or app is ever touched. A machine is stale when its `deadline` tag
has passed, when it is older than `older_than`, or when it stopped and its provider cannot start
it again (nobody will use it: a local worker whose gateway died, an exited container).
`uplodr serve` runs it every `--reap-interval` (`reap_periodically`); `uplodr reap` once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from uplodr.machines.base import Machine, Provider

log = logging.getLogger("uplodr.reaper")


@dataclass(frozen=True)
class ReapResult:
    stale: list[Machine]
    destroyed: list[str]
    failed: dict[str, str]


def _number(tags: Mapping[str, str], key: str) -> float | None:
    try:
        return float(tags[key])
    except (KeyError, ValueError):
        return None


def created_time(machine: Machine) -> float | None:
    """When the machine was created (unix time): uplodr's tag, else the provider's own record;
    None when neither is known (never taken as "very old")."""
    return _number(machine.tags, "created_at") or machine.created_at or None


def is_stale(machine: Machine, older_than: float | None, now: float, can_stop: bool) -> bool:
    if machine.state == "stopped" and not can_stop:
        return True
    deadline = _number(machine.tags, "deadline")
    if deadline is not None and now >= deadline:
        return True
    created = created_time(machine)
    return older_than is not None and created is not None and now - created >= older_than


async def reap(provider: Provider, older_than: float | None, dry_run: bool = False) -> ReapResult:
    now = time.time()
    can_stop = provider.capabilities.can_stop
    stale = [m for m in await provider.list({}) if is_stale(m, older_than, now, can_stop)]
    destroyed: list[str] = []
    failed: dict[str, str] = {}
    for machine in stale:
        if dry_run:
            continue
        try:
            await provider.destroy(machine.id)
            destroyed.append(machine.id)
            log.info("reaped machine %s", machine.id)
        except Exception as error:
            failed[machine.id] = str(error)
            log.warning("could not reap machine %s: %s", machine.id, error)
    return ReapResult(stale, destroyed, failed)


async def reap_periodically(provider: Provider, interval: float) -> None:
    """Reap every `interval` seconds until cancelled; a pass that fails (the provider's API is
    down, say) is logged and the next one tries again."""
    while True:
        try:
            await reap(provider, older_than=None)
        except Exception as error:
            log.warning("reaper pass failed, next in %gs: %s", interval, error)
        await asyncio.sleep(interval)


async def reap_orphans(provider: Provider, prefix: str, owner_gone: Callable[[str], bool]) -> int:
    """Destroy the machines whose `gateway` tag is `prefix` + an owner that `owner_gone` says
    is gone (a run that was killed before it could destroy its own: `uplodr rebuild` tags its
    machines with its host and process id, and its next run removes what a SIGKILL left,
    without waiting for their deadline). Returns how many were destroyed."""
    destroyed = 0
    for machine in await provider.list({}):
        owner = machine.tags.get("gateway", "")
        if not owner.startswith(prefix) or not owner_gone(owner[len(prefix) :]):
            continue
        try:
            await provider.destroy(machine.id)
            destroyed += 1
            log.info("reaped machine %s of %s (its run is gone)", machine.id, owner)
        except Exception as error:
            log.warning("could not reap machine %s: %s", machine.id, error)
    return destroyed
