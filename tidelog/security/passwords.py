"""The password file: salted scrypt hashes, and bearer tokens, one entry per line.

Format (UTF-8, one entry a line, ``#`` starts a comment line)::

    alice:$scrypt$n=16384,r=8,p=1$<salt, base64>$<hash, base64>
    alice:$token$<SHA-256 of the token, hex>

The scrypt parameters are stored with each entry, so raising the defaults
later does not break existing entries. A user may have one password and any
number of tokens. Tokens are 32 random bytes (``tl_`` + base64url) generated
by ``tidelog passwd --token``; only their SHA-256 is stored (a token is
high-entropy, so a slow hash buys nothing), and a presented token is found by
its hash.

Verifying a password runs scrypt (tens of milliseconds, 16 MiB) in a worker
thread so it never stalls the event loop; comparisons use
:func:`hmac.compare_digest`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

import attrs

from tidelog.security.errors import SecurityConfigError

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
TOKEN_PREFIX = "tl_"
_MAX_SCRYPT_N = 2**20


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """A new ``$scrypt$...`` hash of ``password`` with a random salt."""
    salt = os.urandom(SALT_BYTES)
    digest = _scrypt(password.encode("utf-8"), salt, n, r, p)
    return f"$scrypt$n={n},r={r},p={p}${_b64(salt)}${_b64(digest)}"


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password, salt=salt, n=n, r=r, p=p, maxmem=256 * r * n + 2**20, dklen=HASH_BYTES
    )


def check_password(password: str, stored: str) -> bool:
    """True if ``password`` matches a ``$scrypt$`` hash (slow: call in a worker thread)."""
    try:
        _, scheme, params, salt_text, hash_text = stored.split("$")
        if scheme != "scrypt":
            return False
        values = dict(item.split("=", 1) for item in params.split(","))
        n, r, p = int(values["n"]), int(values["r"]), int(values["p"])
        salt = base64.b64decode(salt_text, validate=True)
        expected = base64.b64decode(hash_text, validate=True)
    except (ValueError, KeyError):
        return False
    if not (1 < n <= _MAX_SCRYPT_N and 0 < r <= 64 and 0 < p <= 16):
        return False
    return hmac.compare_digest(_scrypt(password.encode("utf-8"), salt, n, r, p), expected)


def new_token() -> str:
    """A fresh bearer token (shown once; only its hash is stored)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return "$token$" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def validate_user_name(user: str) -> str:
    if not user or ":" in user or any(ch in user for ch in "\r\n\x00") or user != user.strip():
        raise SecurityConfigError(
            f"user name {user!r} must be non-empty, without ':', line breaks or outer spaces"
        )
    return user


@attrs.define
class PasswordFile:
    """The entries of a password file, in file order: ``(user, hash)`` pairs."""

    entries: list[tuple[str, str]] = attrs.field(factory=list)

    @classmethod
    def load(cls, path: str | Path) -> PasswordFile:
        """Read a password file; :class:`SecurityConfigError` names the bad line."""
        try:
            text = Path(path).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SecurityConfigError(f"cannot read password file {path}: {exc}") from None
        entries = []
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, stored = line.partition(":")
            if not sep or not user or not stored.startswith(("$scrypt$", "$token$")):
                raise SecurityConfigError(
                    f"{path}:{number}: expected user:$scrypt$... or user:$token$..."
                )
            entries.append((user, stored))
        return cls(entries)

    def save(self, path: str | Path) -> None:
        """Write atomically (a temporary file renamed over), readable by the owner only."""
        path = Path(path)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.writelines(f"{user}:{stored}\n" for user, stored in self.entries)
        os.replace(temporary, path)

    def users(self) -> list[str]:
        return list(dict.fromkeys(user for user, _ in self.entries))

    def set_password(self, user: str, stored: str) -> None:
        """Replace the user's password (keeping its tokens), or add the user."""
        validate_user_name(user)
        for index, (name, old) in enumerate(self.entries):
            if name == user and old.startswith("$scrypt$"):
                self.entries[index] = (user, stored)
                return
        self.entries.append((user, stored))

    def add_token(self, user: str, token: str) -> None:
        self.entries.append((validate_user_name(user), token_hash(token)))

    def delete(self, user: str) -> bool:
        """Remove the user's password and tokens; False if there were none."""
        kept = [(name, stored) for name, stored in self.entries if name != user]
        removed = len(kept) != len(self.entries)
        self.entries = kept
        return removed


@attrs.frozen
class Credentials:
    """A loaded password file, ready for lookups."""

    passwords: dict[str, str]
    """user -> ``$scrypt$`` hash."""
    tokens: dict[str, str]
    """``$token$`` hash -> user."""

    @classmethod
    def from_entries(cls, entries: Iterable[tuple[str, str]]) -> Credentials:
        passwords: dict[str, str] = {}
        tokens: dict[str, str] = {}
        for user, stored in entries:
            if stored.startswith("$token$"):
                tokens[stored] = user
            else:
                passwords[user] = stored
        return cls(passwords, tokens)

    def token_user(self, token: str) -> str | None:
        """The user a bearer token belongs to, or None (a lookup by hash)."""
        return self.tokens.get(token_hash(token))

    def password_hash(self, user: str) -> str | None:
        return self.passwords.get(user)
