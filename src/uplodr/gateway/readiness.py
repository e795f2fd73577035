"""Readiness (`GET /readyz`): can this gateway run a job right now?

`/healthz` is liveness — the process answers — and an orchestrator restarts a gateway that stops
answering it (Docker's HEALTHCHECK, a Kubernetes liveness probe). Readiness is different: while
the store or the provider is down a restart would not help, but new uploads should go elsewhere
(or wait). So `/readyz` runs what a job needs — every store writable (a check object written,
read back and deleted) and the provider reachable (`Provider.check`) — and answers 503 naming
the check that failed, in one line: the check, what it checked and the kind of failure (the
error's code, or "no answer") — never the failure's own text. `/readyz` answers anyone (a load
balancer has no token), and a failure's text can hold what an outsider should not read: an
endpoint's address, a bucket's layout, a library's words about credentials. That text goes
to the gateway's log instead, once each time a check's outcome changes.

Each check has a time limit (`CHECK_TIMEOUT_S`), under the 5 s a load balancer or Fly's check
typically waits: an S3 endpoint that does not answer would otherwise hold the probe for the
store's whole retry budget (20 s). Results are kept for `KEEP_FOR_S` and concurrent probes share one
run, so several balancers probing every few seconds (or a fuzzer) do not each write an object.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from uplodr.errors import UplodrError

log = logging.getLogger("uplodr.gateway")

CHECK_TIMEOUT_S = 4.0
KEEP_FOR_S = 2.0


@dataclass(frozen=True)
class Check:
    """One thing a job needs: `run` returns when it is fine and raises when it is not.
    `subject` names what is checked when the check itself cannot (it did not answer)."""

    name: str
    run: Callable[[], Awaitable[None]]
    subject: str = ""


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    message: str  # "ok", or one line saying what failed


class Readiness:
    """The checks of one gateway, run together, at most once per `keep_for` seconds."""

    def __init__(
        self,
        checks: Sequence[Check],
        *,
        timeout: float = CHECK_TIMEOUT_S,
        keep_for: float = KEEP_FOR_S,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.checks = tuple(checks)
        self.timeout = timeout
        self.keep_for = keep_for
        self._now = now
        self._lock = asyncio.Lock()
        self._last: tuple[float, tuple[CheckResult, ...]] | None = None
        self._abandoned: set[asyncio.Task[None]] = set()  # checks cut off, still cleaning up
        self._failures: dict[str, str | None] = {}  # the last failure logged, by check

    async def results(self) -> tuple[CheckResult, ...]:
        async with self._lock:  # a probe arriving during a run gets that run's results
            if self._last is not None and self._now() - self._last[0] < self.keep_for:
                return self._last[1]
            results = tuple(await asyncio.gather(*(self._run(check) for check in self.checks)))
            self._last = (self._now(), results)
            return results

    async def _run(self, check: Check) -> CheckResult:
        # The check runs as its own task: one that is cut off at the time limit is cancelled
        # but not waited for, so its clean-up (e.g. deleting a check object on a slow store)
        # cannot hold the next probe past the limit.
        task = asyncio.ensure_future(check.run())
        done, _ = await asyncio.wait({task}, timeout=self.timeout)
        if not done:
            task.cancel()
            self._abandoned.add(task)
            task.add_done_callback(self._forget)
            where = f"{check.subject}: " if check.subject else ""
            return CheckResult(check.name, False, f"{where}no answer within {self.timeout:g} s")
        error = task.exception()
        if error is None:
            self._note(check.name, None)
            return CheckResult(check.name, True, "ok")
        where = f"{check.subject}: " if check.subject else ""
        if isinstance(error, UplodrError):
            # an UplodrError's message is safe for a client, but it is the log's to tell
            self._note(check.name, str(error))
            return CheckResult(check.name, False, f"{where}failed ({error.code})")
        # a check must never turn into a traceback for the prober, nor show a foreign
        # exception's text (it may hold anything): its type goes to the log
        self._note(check.name, f"unexpected {type(error).__name__}")
        return CheckResult(check.name, False, f"{where}failed (internal)")

    def _note(self, name: str, failure: str | None) -> None:
        """Log a check's failure when it starts or changes, and its recovery, once each."""
        before = self._failures.get(name)
        if failure == before:
            return
        self._failures[name] = failure
        if failure is None:
            log.info("readiness check %s: ok again", name)
        else:
            log.warning("readiness check %s failed: %s", name, " ".join(failure.split()))

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("an abandoned readiness check ended with: %s", task.exception())


def failed_line(results: Sequence[CheckResult]) -> str:
    """One line naming every failed check, e.g. "store: s3://media: failed
    (storage_unavailable)"."""
    return "; ".join(f"{r.name}: {r.message}" for r in results if not r.ok)
