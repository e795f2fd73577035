"""Admission: how many uploads the gateway holds at once, decided when a request arrives —
before one byte of its body is read.

An upload is *in flight* from admission until its answer: while its body spools, while it waits
for a machine slot (`ConversionService`'s queue), while it converts. Before this bound the
gateway spooled every body first and only then found out it was busy, so a burst of large
bodies filled the disk with uploads it was going to refuse anyway. Now an upload past the bound
is answered 503 `busy` with `Retry-After` at once; its body is never written to a file (the
server discards what the client still sends, so the client reads its answer cleanly).

Three bounds, each a 503 `busy` before the body:
- `max_in_flight` — uploads in flight in the whole gateway (`--max-in-flight`);
- a token's own `max_in_flight` (tokens file), so one tenant cannot take every slot;
- `spool_budget` — bytes on the spool disk: a declared `Content-Length` is reserved on
  admission; a body without one (chunked) reserves as it grows, and is refused (503) when it
  would pass the budget.

`ConversionService`'s queue (`--max-queue`) still bounds the uploads waiting for a machine
slot; by default the in-flight bound is the service's slots plus its queue, so every admitted
upload fits (gateway/run.py).

Single-threaded by design: it is only touched from the event loop, so plain counters suffice.
"""

from __future__ import annotations

from collections import Counter
from types import TracebackType

from uplodr.errors import Busy
from uplodr.gateway import metrics
from uplodr.gateway.tokens import Token

RETRY_AFTER_S = 2


class Ticket:
    """One admitted upload: its share of the bounds until `release` (or the `with` block's end)."""

    def __init__(self, admission: Admission, token: Token | None, reserved: int) -> None:
        self._admission = admission
        self.token = token
        self.reserved = reserved
        self._released = False

    def reserve(self, total: int) -> None:
        """The body has reached `total` bytes: grow the reservation (Busy past the budget)."""
        if total > self.reserved:
            self._admission._grow(self, total)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._admission._release(self)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


class Admission:
    def __init__(
        self,
        max_in_flight: int,
        spool_budget: int | None = None,
        retry_after: int = RETRY_AFTER_S,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.max_in_flight = max_in_flight
        self.spool_budget = spool_budget
        self.retry_after = retry_after
        self.in_flight = 0
        self.spooled = 0  # bytes reserved on the spool disk
        self._by_token: Counter[str] = Counter()

    def admit(self, token: Token | None, declared: int | None) -> Ticket:
        """A ticket for one upload whose body declares `declared` bytes (None: unknown), or
        Busy (503 with Retry-After) past a bound."""
        if self.in_flight >= self.max_in_flight:
            self._refuse(
                "in_flight",
                f"busy: {self.in_flight} uploads in flight, the gateway's bound; try again shortly",
            )
        limit = token.max_in_flight if token is not None else None
        if token is not None and limit is not None and self._by_token[token.name] >= limit:
            self._refuse(
                "token_in_flight",
                f"busy: token {token.name!r} has {limit} uploads in flight, its bound; "
                "try again shortly",
            )
        reserved = declared or 0
        self._check_budget(reserved)
        self.in_flight += 1
        self.spooled += reserved
        if token is not None:
            self._by_token[token.name] += 1
        metrics.IN_FLIGHT.set(self.in_flight)
        metrics.SPOOL_RESERVED.set(self.spooled)
        return Ticket(self, token, reserved)

    def in_flight_of(self, token_name: str) -> int:
        return self._by_token[token_name]

    def _check_budget(self, more: int) -> None:
        if self.spool_budget is not None and self.spooled + more > self.spool_budget:
            self._refuse(
                "spool_budget",
                f"busy: the spool holds {self.spooled} of its {self.spool_budget} bytes; "
                "try again shortly",
            )

    def _refuse(self, reason: str, message: str) -> None:
        metrics.ADMISSION_REFUSED.labels(reason=reason).inc()
        metrics.UPLOADS.labels(outcome="busy").inc()
        raise Busy(message, retry_after=self.retry_after)

    def _grow(self, ticket: Ticket, total: int) -> None:
        self._check_budget(total - ticket.reserved)
        self.spooled += total - ticket.reserved
        ticket.reserved = total
        metrics.SPOOL_RESERVED.set(self.spooled)

    def _release(self, ticket: Ticket) -> None:
        self.in_flight -= 1
        self.spooled -= ticket.reserved
        if ticket.token is not None:
            self._by_token[ticket.token.name] -= 1
        metrics.IN_FLIGHT.set(self.in_flight)
        metrics.SPOOL_RESERVED.set(self.spooled)
