"""Readiness checks on their own: every check runs, a failure is one line naming the check, a
check that does not answer is cut off at its time limit, results are shared between probes."""

from __future__ import annotations

import asyncio
import logging

import pytest

from uplodr.errors import StorageUnavailable
from uplodr.gateway.readiness import Check, Readiness, failed_line


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_all_checks_pass() -> None:
    async def fine() -> None:
        return None

    results = await Readiness([Check("store", fine), Check("provider", fine)]).results()
    assert [(r.name, r.ok, r.message) for r in results] == [
        ("store", True, "ok"),
        ("provider", True, "ok"),
    ]
    assert failed_line(results) == ""


async def test_a_failure_is_one_line_naming_its_check() -> None:
    async def fine() -> None:
        return None

    async def broken() -> None:
        raise StorageUnavailable("s3://media: cannot connect to the endpoint")

    async def surprising() -> None:
        raise KeyError("AWS_REGION")

    results = await Readiness(
        [Check("store", broken, "s3://media"), Check("provider", fine), Check("other", surprising)]
    ).results()
    assert failed_line(results) == (
        "store: s3://media: failed (storage_unavailable); other: failed (internal)"
    )


async def test_a_failure_names_its_kind_never_its_text(caplog: pytest.LogCaptureFixture) -> None:
    """/readyz answers anyone: the answer says only the check and the kind of failure. An
    uplodr error's line (safe by contract, but an internal address) goes to the log, once
    while the failure lasts; a foreign exception's text (it may hold anything) goes nowhere."""
    endpoint = "http://10.0.0.7:9000"
    secret = "X-Amz-Signature=deadbeef"

    async def leaky() -> None:
        raise StorageUnavailable(f"s3://media: cannot connect to {endpoint}")

    async def foreign() -> None:
        raise RuntimeError(secret)

    clock = Clock()
    readiness = Readiness(
        [Check("store", leaky, "s3://media"), Check("other", foreign)], keep_for=1.0, now=clock
    )
    with caplog.at_level(logging.INFO, logger="uplodr.gateway"):
        for step in range(3):
            clock.now = 2.0 * step  # a fresh run each time
            line = failed_line(await readiness.results())
    assert line == "store: s3://media: failed (storage_unavailable); other: failed (internal)"
    logged = [r.getMessage() for r in caplog.records]
    assert logged == [
        f"readiness check store failed: s3://media: cannot connect to {endpoint}",
        "readiness check other failed: unexpected RuntimeError",
    ]
    assert secret not in caplog.text


async def test_a_check_that_does_not_answer_is_cut_off_naming_its_subject() -> None:
    never = asyncio.Event()

    async def hangs() -> None:
        await never.wait()

    results = await Readiness([Check("store", hangs, "s3://media")], timeout=0.05).results()
    assert failed_line(results) == "store: s3://media: no answer within 0.05 s"


async def test_results_are_kept_for_a_while_and_shared_by_concurrent_probes() -> None:
    runs = 0
    release = asyncio.Event()

    async def counted() -> None:
        nonlocal runs
        runs += 1
        await release.wait()

    clock = Clock()
    readiness = Readiness([Check("store", counted)], keep_for=2.0, now=clock)
    probes = [asyncio.create_task(readiness.results()) for _ in range(5)]
    while runs == 0:
        await asyncio.sleep(0)  # let the first probe start its run
    release.set()
    await asyncio.gather(*probes)
    assert runs == 1
    clock.now = 1.9
    await readiness.results()
    assert runs == 1
    clock.now = 2.1
    await readiness.results()
    assert runs == 2


async def test_a_check_cut_off_does_not_hold_the_probe_for_its_clean_up() -> None:
    """The store check deletes its object in a `finally`; on a store that does not answer
    that delete may take the store's whole retry budget, which the probe must not wait for."""
    release, cleaned = asyncio.Event(), asyncio.Event()

    async def slow_to_clean_up() -> None:
        try:
            await asyncio.Event().wait()  # the write that never answers
        finally:
            await release.wait()  # the delete on the same slow store
            cleaned.set()

    results = await Readiness([Check("store", slow_to_clean_up)], timeout=0.05).results()
    assert failed_line(results) == "store: no answer within 0.05 s"
    assert not cleaned.is_set()  # answered before the clean-up was done
    release.set()
    await asyncio.wait_for(cleaned.wait(), 5)  # and the clean-up still ran to its end
