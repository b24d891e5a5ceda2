"""Standard Webhooks signatures (https://www.standardwebhooks.com/, ``spec/standard-webhooks.md``).

A secret is ``whsec_`` followed by base64 of 24 to 64 random bytes. The signature
of a request is ``v1,`` + base64(HMAC-SHA256(secret bytes, ``<id>.<timestamp>.<body>``)),
sent in ``webhook-signature`` beside ``webhook-id`` and ``webhook-timestamp``
(seconds since the epoch). No I/O here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64


def parse_secret(secret: str) -> bytes:
    """The key bytes of a ``whsec_...`` secret; ValueError if it is not one."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise ValueError("secret must be a Standard Webhooks secret: whsec_<base64>")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("secret: the part after whsec_ is not base64") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(
            f"secret: the key must be {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, "
            f"not {len(key)}"
        )
    return key


def new_secret() -> str:
    """A fresh random secret (32 bytes)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one request."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")
