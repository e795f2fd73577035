"""Who may upload where: bearer tokens, each with a name, the folders it may write under and its
own bound of uploads in flight.

Tokens come from `UPLODR_TOKENS` (comma-separated secrets, each allowed everywhere, named
`env-1`, `env-2`, … by position) and from a tokens file (`--tokens-file`, TOML or JSON):

    [[tokens]]
    name = "blog"                  # what logs and metrics say; never the secret
    sha256 = "9f86d081884c7d65…"   # hex SHA-256 of the secret (`uplodr token NAME` makes one)
    prefixes = ["blog/"]           # folders it may write under; "" is everywhere
    max_in_flight = 4              # its own bound of uploads in flight (optional)

The file holds only a hash of each secret, so the file itself (a config repo, a backup, a
`kubectl describe`) grants nothing. A plain SHA-256 rather than a password hash (bcrypt, argon2):
the secrets are machine-made and high-entropy (`uplodr token` draws 256 bits), so the hash
cannot be reversed by guessing, which is all that a slow, salted hash adds — for passwords people
choose. A slow hash would instead cost every request tens of milliseconds of gateway CPU. The
SHA-256 of the presented token is compared with every entry's hash by `hmac.compare_digest`,
so timing says nothing about which entry nearly matched.

A prefix is a folder: `blog/` (or `blog`) allows `blog` and `blog/2026`, not `blogger`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import msgspec

from uplodr.errors import Forbidden, InvalidRequest, Unauthenticated
from uplodr.names import safe_folder

NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SHA256_HEX: Final = re.compile(r"^[0-9a-f]{64}$")


class TokensError(ValueError):
    """A tokens file that cannot be used; the message is one line naming the file and entry."""


def secret_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@dataclass(frozen=True)
class Token:
    name: str
    digest: bytes  # SHA-256 of the secret
    prefixes: tuple[str, ...] = ("",)  # folders without a trailing "/"; "" is everywhere
    max_in_flight: int | None = None  # its own bound; None: only the gateway's

    def may_write(self, folder: str) -> bool:
        return any(p == "" or folder == p or folder.startswith(p + "/") for p in self.prefixes)

    def check_folder(self, folder: str, doing: str = "write to") -> None:
        """Forbidden (403, one line) when this token may not write to `folder` (nor read, list
        or delete there: its prefixes bound all it does)."""
        if not self.may_write(folder):
            shown = folder if len(folder) <= 60 else folder[:59] + "…"
            allowed = ", ".join(f"{p}/" for p in self.prefixes)
            raise Forbidden(f"token {self.name!r} may not {doing} {shown!r}; only under {allowed}")


class _Entry(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    sha256: str
    prefixes: list[str]
    max_in_flight: int | None = None


class _File(msgspec.Struct, forbid_unknown_fields=True):
    tokens: list[_Entry]


def _prefix(raw: str, where: str) -> str:
    stripped = raw.strip("/")
    if stripped == "":
        return ""
    try:
        return safe_folder(stripped)
    except InvalidRequest as error:
        raise TokensError(f"{where}: prefix {raw!r}: {error}") from None


def _entry(entry: _Entry, where: str) -> Token:
    if not NAME.match(entry.name):
        raise TokensError(
            f"{where}: name {entry.name[:70]!r} must be 1–64 letters, digits, '-', '_' or '.'"
        )
    where = f"{where} ({entry.name})"
    digest = entry.sha256.lower()
    if not SHA256_HEX.match(digest):
        raise TokensError(
            f"{where}: sha256 must be the 64 hex digits of the secret's SHA-256 "
            "(make one with `uplodr token NAME`)"
        )
    if not entry.prefixes:
        raise TokensError(f'{where}: prefixes is empty; give at least one ("" for everywhere)')
    if entry.max_in_flight is not None and entry.max_in_flight < 1:
        raise TokensError(f"{where}: max_in_flight must be at least 1")
    prefixes = tuple(dict.fromkeys(_prefix(p, where) for p in entry.prefixes))
    return Token(entry.name, bytes.fromhex(digest), prefixes, entry.max_in_flight)


def load_tokens_file(path: Path) -> list[Token]:
    """The tokens of a TOML (.toml) or JSON file; TokensError (one line) when it is unusable."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise TokensError(f"tokens file {path}: {error.strerror}") from None
    try:
        if path.suffix == ".toml":
            parsed = msgspec.toml.decode(data, type=_File)
        else:
            parsed = msgspec.json.decode(data, type=_File)
    except msgspec.DecodeError as error:
        raise TokensError(f"tokens file {path}: {error}") from None
    return [
        _entry(entry, f"tokens file {path}, entry {index + 1}")
        for index, entry in enumerate(parsed.tokens)
    ]


def env_tokens(secrets_: Iterable[str]) -> list[Token]:
    """UPLODR_TOKENS: each secret allowed everywhere, named by its position."""
    return [Token(f"env-{i + 1}", secret_hash(s)) for i, s in enumerate(secrets_)]


def _bearer(header: str) -> bytes | None:
    return secret_hash(header.removeprefix("Bearer ")) if header.startswith("Bearer ") else None


def _find(digest: bytes | None, tokens: Sequence[Token]) -> Token | None:
    if digest is None:
        return None
    # compare_digest on every entry (no early exit), so timing says nothing about which one.
    matches = [token for token in tokens if hmac.compare_digest(digest, token.digest)]
    return matches[0] if matches else None


@dataclass(frozen=True)
class Tokens:
    """The gateway's tokens. No upload tokens: uploads need none (loopback only)."""

    uploads: tuple[Token, ...] = ()
    metrics: Token | None = None  # --metrics-token: then only it reads /metrics

    def __post_init__(self) -> None:
        names = [t.name for t in self.uploads]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate is not None:
            raise TokensError(f"two tokens are named {duplicate!r}; names must be unique")

    @property
    def required(self) -> bool:
        return bool(self.uploads)

    def for_upload(self, authorization: str) -> Token | None:
        """The token of an upload's `Authorization` header (None when none are configured);
        Unauthenticated (401) when tokens are configured and it is none of them."""
        if not self.uploads:
            return None
        token = _find(_bearer(authorization), self.uploads)
        if token is None:
            raise Unauthenticated("missing or wrong bearer token")
        return token

    def check_metrics(self, authorization: str) -> None:
        """/metrics: open when no token of any kind is configured; with --metrics-token only
        that token reads it (an upload token is Forbidden); otherwise any upload token does."""
        if self.metrics is None and not self.uploads:
            return
        digest = _bearer(authorization)
        if self.metrics is not None:
            if _find(digest, (self.metrics,)) is not None:
                return
            if _find(digest, self.uploads) is not None:
                raise Forbidden("this token may not read /metrics; use the metrics token")
        elif _find(digest, self.uploads) is not None:
            return
        raise Unauthenticated("/metrics needs a bearer token")
