"""What a retry leaves in the log (uplodr.retry_log): the call, the retry's number, the wait and
the kind of failure — never the call's arguments, never a foreign exception's text. stamina's
own hook, which every uplodr process replaces, ships both."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator

import pytest
import stamina
from stamina.instrumentation import set_on_retry_hooks

from uplodr import retry_log
from uplodr.errors import StorageUnavailable

SECRET = f"secret-{secrets.token_hex(16)}"


def flaky(error: Exception) -> object:
    calls = 0

    @stamina.retry(on=Exception, attempts=2, wait_initial=0.0, wait_max=0.0, wait_jitter=0.0)
    def create(body: dict[str, object]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise error

    return create


def records_of(caplog: pytest.LogCaptureFixture, error: Exception) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="stamina"):
        flaky(error)({"env": {"AWS_SECRET_ACCESS_KEY": SECRET}})  # type: ignore[operator]
    return [f"{r.getMessage()} {r.__dict__!r}" for r in caplog.records]


@pytest.fixture(autouse=True)
def our_hook() -> Iterator[None]:
    retry_log.install()
    yield
    retry_log.install()


def test_a_retry_record_holds_neither_the_arguments_nor_a_foreign_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    (record,) = records_of(caplog, RuntimeError(f"refused with {SECRET}"))
    assert SECRET not in record
    assert record.startswith("retry 1 of ")
    assert " after RuntimeError " in record
    # an uplodr error's message is written for clients: it stays
    (record,) = records_of(caplog, StorageUnavailable("s3://media: cannot connect"))
    assert "after StorageUnavailable: s3://media: cannot connect" in record


def test_stamina_own_hook_would_have_shipped_the_secret(caplog: pytest.LogCaptureFixture) -> None:
    set_on_retry_hooks(None)  # stamina's defaults
    (record,) = records_of(caplog, RuntimeError("refused"))
    assert SECRET in record  # in the record's `stamina.args`: what a JSON handler ships
