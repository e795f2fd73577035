"""The reaper: destroys uplodr's machines that outlived their job.

It lists only machines that carry uplodr's marker tag (the provider guarantees that filter), so
nothing else in the account or app is ever touched. A machine is stale when its `deadline` tag
has passed or it is older than `older_than`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
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


def is_stale(machine: Machine, older_than: float | None, now: float) -> bool:
    deadline = _number(machine.tags, "deadline")
    if deadline is not None and now >= deadline:
        return True
    created = created_time(machine)
    return older_than is not None and created is not None and now - created >= older_than


async def reap(provider: Provider, older_than: float | None, dry_run: bool = False) -> ReapResult:
    now = time.time()
    stale = [m for m in await provider.list({}) if is_stale(m, older_than, now)]
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
