"""Tokens and admission on their own (no server): which token an Authorization header is, what
a prefix allows, who reads /metrics, and the bounds of uploads in flight and spool bytes."""

from __future__ import annotations

import pytest

from uplodr.errors import Busy, Forbidden, Unauthenticated
from uplodr.gateway.admission import Admission
from uplodr.gateway.tokens import Token, Tokens, TokensError, env_tokens, secret_hash


def token(name: str, *prefixes: str, max_in_flight: int | None = None) -> Token:
    return Token(name, secret_hash(name + "-secret"), prefixes or ("",), max_in_flight)


def bearer(name: str) -> str:
    return f"Bearer {name}-secret"


def test_a_prefix_is_a_folder_and_the_header_picks_the_token() -> None:
    blog = token("blog", "blog", "shared/pics")
    tokens = Tokens((blog, token("all")))
    assert tokens.for_upload(bearer("blog")) is blog
    assert [blog.may_write(f) for f in ("blog", "blog/2026", "shared/pics/x", "blogger", "")] == [
        True,
        True,
        True,
        False,
        False,
    ]
    with pytest.raises(Forbidden, match=r"token 'blog' may not write to 'shop'; only under blog/"):
        blog.check_folder("shop")
    for header in ("", "Bearer ", "Basic blog-secret", "Bearer blog-secret ", bearer("nobody")):
        with pytest.raises(Unauthenticated):
            tokens.for_upload(header)
    assert Tokens().for_upload("") is None  # no tokens: open


def test_env_tokens_are_named_by_position_and_names_are_unique() -> None:
    assert [t.name for t in env_tokens(["a", "b"])] == ["env-1", "env-2"]
    with pytest.raises(TokensError, match="two tokens are named 'x'"):
        Tokens((token("x"), token("x")))


@pytest.mark.parametrize(
    ("tokens", "header", "outcome"),
    [
        (Tokens(), "", None),
        (Tokens((token("up"),)), "", Unauthenticated),
        (Tokens((token("up"),)), bearer("up"), None),
        (Tokens((token("up"),), token("metrics")), bearer("up"), Forbidden),
        (Tokens((token("up"),), token("metrics")), bearer("metrics"), None),
        (Tokens((), token("metrics")), "", Unauthenticated),
    ],
)
def test_who_reads_metrics(tokens: Tokens, header: str, outcome: type[Exception] | None) -> None:
    if outcome is None:
        tokens.check_metrics(header)
    else:
        with pytest.raises(outcome):
            tokens.check_metrics(header)


def test_admission_bounds_in_flight_per_token_and_spool_bytes() -> None:
    admission = Admission(max_in_flight=3, spool_budget=1000)
    slow = token("slow", max_in_flight=1)
    first = admission.admit(slow, 100)
    with pytest.raises(Busy, match="token 'slow' has 1 uploads in flight") as busy:
        admission.admit(slow, 100)
    assert busy.value.retry_after >= 1
    with pytest.raises(Busy, match="the spool holds 100 of its 1000 bytes"):
        admission.admit(None, 901)  # a declared length past what is left
    second = admission.admit(None, None)  # chunked: reserves as it grows
    second.reserve(500)
    with pytest.raises(Busy):
        second.reserve(901)
    with admission.admit(None, 0), pytest.raises(Busy, match="3 uploads in flight"):
        admission.admit(token("other"), 0)
    first.release()
    first.release()  # once only
    second.release()
    assert (admission.in_flight, admission.spooled, admission.in_flight_of("slow")) == (0, 0, 0)
    admission.admit(slow, 1000).release()  # the slot and the bytes are free again
