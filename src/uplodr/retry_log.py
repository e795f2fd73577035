"""What a retry leaves in the log: which call, which retry, the wait before the next attempt and
the kind of failure — never the call's arguments.

stamina's own logging hook attaches a scheduled retry's positional and keyword arguments
(`stamina.args`, `stamina.kwargs`) and the cause's repr to the log record. A plain formatter
does not print them, but any structured handler (JSON to a log shipper) ships them. uplodr's
retried calls go through `AsyncRetryingCaller` and `retry_context`, which (stamina 26.1) hand
the hooks no arguments — but the decorator form, `@stamina.retry`, does, and the call most
worth retrying, a Fly create, takes the machine's body: its environment, with the worker's
token in it. One refactoring away from a leak, so every uplodr process (`serve`, `worker`, the
other commands, and `open_gateway` for code that embeds the gateway) replaces that hook with
`log_retry`, which logs on the same "stamina" logger (its level and filters still apply) and
keeps stamina's Prometheus counter when prometheus_client is installed (callable name, retry
number and error type: no arguments). tests/test_retry_log.py shows stamina's own hook
shipping a decorated call's secret argument, and this one not.

The cause is named by its type; its message only when it is an uplodr error, whose message is
written to be shown to a client (uplodr.errors) — a foreign exception's text (an HTTP library's,
an S3 client's) may quote a URL, a header or a body.
"""

from __future__ import annotations

import importlib.util
import logging

from stamina.instrumentation import (
    PrometheusOnRetryHook,
    RetryDetails,
    RetryHook,
    RetryHookFactory,
    set_on_retry_hooks,
)

from uplodr.errors import UplodrError

log = logging.getLogger("stamina")


def cause(error: BaseException) -> str:
    """The failure as the log may say it: its type, and an uplodr error's one-line message."""
    kind = type(error).__name__
    if isinstance(error, UplodrError):
        return f"{kind}: {' '.join(str(error).split())}"
    return kind


def log_retry(details: RetryDetails) -> None:
    log.warning(
        "retry %d of %s in %.2f s (%.2f s so far) after %s",
        details.retry_num,
        details.name,
        details.wait_for,
        details.waited_so_far,
        cause(details.caused_by),
    )


def _installed(module: str) -> bool:
    """Whether `module` could be imported, without importing it (a client-only install,
    `uplodr convert`, loads nothing of the server's)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def install() -> None:
    """Make `log_retry` stamina's only logging hook in this process (idempotent)."""
    hooks: list[RetryHook | RetryHookFactory] = []
    if _installed("prometheus_client"):
        hooks.append(PrometheusOnRetryHook)
    hooks.append(log_retry)
    set_on_retry_hooks(hooks)
