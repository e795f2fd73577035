"""An image's own delete token: derived from the image's id and one server secret, so the gateway
stores nothing per image (pict-rs keeps a token per upload in its database; uplodr has none).

    delete_token = base64url(HMAC-SHA256(secret, "uplodr-delete-v1\\n" + id)[:16])

128 bits of the MAC are kept (22 characters): guessing one is as hopeless as guessing the full
MAC, and it fits a header, a form field or a password manager. The check recomputes the MAC and
compares with `hmac.compare_digest`, so timing says nothing about how much of a guess was right.
The label in the message keeps these MACs apart from any other use of the same secret.

The token is handed out once, in the answer of the upload that stored the set
(`deduplicated` false): a repeat of the same bytes is answered from storage by anyone who has the
bytes, and must not be a way to obtain the right to delete another person's upload. Rotating the
secret (a new `--secret-file`) invalidates every token given so far; gateway tokens still delete.

The secret is 32 random bytes in a file of mode 0600 (`serve --secret-file`, or
`UPLODR_DATA_DIR/secret`, made on the first start when absent, so `scripts/serve` needs no setup);
it never reaches a log, an answer or a worker. Where the data folder cannot be written (a
read-only root filesystem with an S3 store, as in deploy/kubernetes) the gateway still starts,
with a secret for this process only and a warning: its delete tokens stop working when it
restarts, until `--secret-file` names a kept secret (a Kubernetes Secret, a Fly secret file).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

SECRET_BYTES: Final = 32
MIN_SECRET_BYTES: Final = 16  # a shorter file is a mistake (an empty file, a truncated copy)
TOKEN_BYTES: Final = 16
_LABEL: Final = b"uplodr-delete-v1\n"


class SecretError(ValueError):
    """The secret file cannot be used; the message is one line naming the file (never its
    content)."""


class SecretNotCreated(SecretError):
    """The default secret file could not be made (a read-only root filesystem, as the
    Kubernetes kit runs the gateway with)."""


@dataclass(frozen=True)
class DeleteTokens:
    """Makes and checks images' delete tokens under one server secret."""

    secret: bytes = field(repr=False)

    def for_image(self, image_id: str) -> str:
        mac = hmac.new(self.secret, _LABEL + image_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:TOKEN_BYTES]).rstrip(b"=").decode()

    def matches(self, image_id: str, token: str) -> bool:
        return hmac.compare_digest(self.for_image(image_id).encode(), token.encode())


def read_secret(path: Path) -> bytes:
    try:
        secret = path.read_bytes()
    except OSError as error:
        raise SecretError(f"secret file {path}: {error.strerror}") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise SecretError(
            f"secret file {path} holds {len(secret)} bytes; at least {MIN_SECRET_BYTES} "
            f"(delete it to have a new one of {SECRET_BYTES} made)"
        )
    return secret


def create_secret(path: Path) -> bytes | None:
    """A new secret in a new file of mode 0600 (its folder 0700 when made here); None when the
    file exists already (another gateway made it first: read that one)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return None
    except OSError as error:
        raise SecretNotCreated(f"secret file {path}: cannot create it: {error.strerror}") from None
    secret = secrets.token_bytes(SECRET_BYTES)
    with os.fdopen(fd, "wb") as file:
        file.write(secret)
    return secret
