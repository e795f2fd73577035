"""`imaging.rivals`: a format is skipped before its full encode only when its sample is far from
winning against every fallback it may get, and a wait for a fallback always ends."""

from __future__ import annotations

import threading
import time

from uplodr.imaging.rivals import SLACK, Rivals

FORMATS = ("webp", "avif", "jpeg")


def test_a_clear_loser_is_skipped_and_a_close_one_is_encoded() -> None:
    rivals = Rivals(FORMATS, 10, transparent=False)
    assert rivals.verdict("jpeg", 100_000, wait=0) is None  # the last fallback: always kept
    reason = rivals.verdict("webp", 99_500, wait=1)  # 0.5 % below the JPEG: far from 10
    assert reason is not None and "jpeg's" in reason and "\n" not in reason
    # AVIF 5 % below the JPEG (its fallback now, WebP being out): within the slack, encoded
    assert rivals.verdict("avif", 95_000, wait=1) is None
    assert 10 - SLACK < 5  # (what makes it "within the slack")


def test_a_loser_against_one_fallback_but_not_another_is_encoded() -> None:
    rivals = Rivals(FORMATS, 10, transparent=False)
    rivals.verdict("jpeg", 100_000, wait=0)
    assert rivals.verdict("webp", 80_000, wait=0) is None  # wins against the JPEG
    # not 2 % below the WebP, but 20 % below the JPEG: winners may still drop the WebP
    assert rivals.verdict("avif", 80_000, wait=0) is None


def test_a_transparent_image_compares_only_the_formats_with_alpha() -> None:
    rivals = Rivals(FORMATS, 10, transparent=True)
    rivals.verdict("jpeg", 10_000, wait=0)  # flattened: no baseline
    assert rivals.verdict("webp", 100_000, wait=0) is None  # the first with alpha: kept
    assert rivals.verdict("avif", 99_000, wait=0) is not None


def test_a_format_waits_for_its_fallback_and_cancel_ends_the_wait() -> None:
    rivals = Rivals(FORMATS, 10, transparent=False)
    verdicts: list[str | None] = []
    waiting = threading.Thread(target=lambda: verdicts.append(rivals.verdict("webp", 99, 30)))
    waiting.start()
    time.sleep(0.05)  # not readiness: the verdict must not come before the JPEG's record
    assert verdicts == []
    rivals.verdict("jpeg", 100, wait=0)
    waiting.join(5)
    assert verdicts and verdicts[0] is not None  # decided against the JPEG once it came
    other = Rivals(FORMATS, 10, transparent=False)
    started = time.monotonic()
    late = threading.Thread(target=lambda: verdicts.append(other.verdict("webp", 99, 30)))
    late.start()
    other.cancel()  # the job failed: the JPEG will never record
    late.join(5)
    assert not late.is_alive() and verdicts[-1] is None
    assert time.monotonic() - started < 5


def test_a_search_stops_once_a_short_trial_already_loses() -> None:
    """`hopeless` mid-search: a trial below the goal bounds the sample from below; it skips the
    format only when that bound loses, never before its fallback recorded, without waiting."""
    rivals = Rivals(FORMATS, 10, transparent=False)
    assert rivals.hopeless("webp", 99_000) is None  # the JPEG not recorded yet: no verdict
    rivals.verdict("jpeg", 100_000, wait=0)
    assert rivals.hopeless("webp", 95_000) is None  # 5 % below: it may still win
    reason = rivals.hopeless("webp", 99_000)  # 1 % below, and only growing from here
    assert reason is not None and "at most 1 % below jpeg's" in reason
    # recorded as the loser: the AVIF is judged against the JPEG alone, and does not wait
    assert rivals.verdict("avif", 95_000, wait=30) is None
    assert rivals.hopeless("jpeg", 200_000) is None  # the last fallback: always kept
