"""Authentication: the :class:`Security` every listener of a server asks.

:func:`load_security` reads the password and ACL files and decides whether
anonymous clients are allowed (before anything binds, so errors stop the
start); the server hands the result to every listener in its
:class:`~tidelog.context.ServerContext`. There is no open default to fall
back to: an embedded server or a test that wants one builds it explicitly
with :meth:`Security.open`.

Credentials are checked in this order, the same for every protocol:

1. a user name and password (MQTT CONNECT, HTTP Basic) or a bearer token
   (HTTP ``Authorization: Bearer``, WebSocket ``?access_token=``, or as the
   MQTT password of its user);
2. else a verified client certificate whose CN is the user name
   (``tls_cert_username``), or HTTP credentials of the WebSocket handshake
   that carries MQTT;
3. else the client is anonymous, if anonymous clients are allowed.

Wrong credentials are refused, never downgraded to anonymous. Every attempt
that checks a password first passes the rate limits (per address and per user),
runs scrypt in a worker thread (at most :data:`MAX_PARALLEL_HASHES` at once),
and is logged when it fails. Successful password checks are remembered for
:data:`CACHE_SECONDS` (keyed by an HMAC of user and password under a key that
lives only in this process) so HTTP Basic does not cost scrypt per request.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import logging
import os
import ssl
from typing import Any

import trio

from tidelog.security.acl import ACL, Access, Policy, Principal, sys_open_to_all
from tidelog.security.config import (
    SecurityConfig,
    anonymous_allowed,
    check_startup,
    is_loopback,
)
from tidelog.security.errors import AuthenticationError, TooManyAttemptsError
from tidelog.security.limits import Limits, UserQuotas
from tidelog.security.passwords import (
    TOKEN_PREFIX,
    Credentials,
    PasswordFile,
    check_password,
    hash_password,
)
from tidelog.security.ratelimit import ConnectionLimiter, FailureLimiter

log = logging.getLogger("tidelog.security")

MAX_PARALLEL_HASHES = 4
CACHE_SECONDS = 300.0
CACHE_SIZE = 1024


@functools.cache
def _dummy_hash() -> str:
    """Checked for unknown users, so their attempts take as long as real ones."""
    return hash_password("tidelog-dummy")


def peer_address(peer: str) -> str:
    """``host`` of ``host:port`` (or of ``[v6]:port``)."""
    host = peer.rsplit(":", 1)[0] if peer.count(":") == 1 or peer.startswith("[") else peer
    return host.strip("[]")


class Security:
    """Authentication, authorization and limits for one broker's listeners."""

    def __init__(
        self,
        config: SecurityConfig | None = None,
        *,
        anonymous: bool = True,
        credentials: Credentials | None = None,
        policy: Policy | None = None,
        tls_configured: bool = False,
    ) -> None:
        self.config = config = config or SecurityConfig()
        self.anonymous = anonymous
        self.credentials = credentials
        self.policy = policy or Policy(config.sys_users)
        self.admin_users = frozenset(config.admin_users)
        self.limits = Limits(config)
        """Name maxima and quota sizes (tidelog/security/limits.py)."""
        self.quotas = UserQuotas(self.limits)
        """What each user holds, for the per-user quotas."""
        self.tls_configured = tls_configured
        """A TLS certificate is configured (``require_tls_for_credentials`` applies)."""
        self.connections = ConnectionLimiter(
            config.max_connections, config.max_connections_per_address
        )
        window = config.auth_failure_window
        self._by_address = FailureLimiter(config.auth_failures_per_address, window)
        self._by_user = FailureLimiter(config.auth_failures_per_user, window)
        self._hashing = trio.CapacityLimiter(MAX_PARALLEL_HASHES)
        self._cache_key = os.urandom(32)
        self._cache: dict[bytes, float] = {}

    @classmethod
    def open(cls) -> Security:
        """Anonymous clients allowed, no password file, no ACL file (``$SYS`` for
        ``sys_users`` only): for embedded servers and tests, said explicitly."""
        return cls(SecurityConfig(allow_anonymous=True), anonymous=True)

    @property
    def authenticates(self) -> bool:
        """True if credentials are checked (a password file is configured)."""
        return self.credentials is not None

    def access(self, principal: Principal) -> Access:
        admin = principal.user is not None and principal.user in self.admin_users
        return Access(self.policy, principal, admin=admin)

    def encrypted(self, transport: str) -> bool:
        """True if credentials sent over ``transport`` travel inside TLS.

        Transports: ``mqtt-tls`` (and any ``...-tls``/``wss``), ``mqtt-tcp``, ``http``
        (TLS with ``http_tls``), ``ws`` and ``mqtt-websocket`` (TLS with ``ws_tls``)."""
        if transport.endswith(("tls", "wss", "https")):
            return True
        if transport == "http":
            return self.config.http_tls
        if transport in ("ws", "websocket", "mqtt-websocket"):
            return self.config.ws_tls
        return False

    def _check_transport(self, transport: str) -> None:
        """``require_tls_for_credentials``: refuse secrets sent in clear."""
        if (
            self.config.require_tls_for_credentials
            and self.tls_configured
            and not self.encrypted(transport)
        ):
            raise AuthenticationError(
                "credentials are accepted only over TLS on this server "
                "(security.require_tls_for_credentials)"
            )

    # -- the three ways in ---------------------------------------------------------

    def anonymous_principal(self, client_id: str | None = None) -> Principal:
        if not self.anonymous:
            raise AuthenticationError("authentication required: anonymous access is disabled")
        return Principal(None, client_id)

    async def login(
        self, user: str, password: str, peer: str, transport: str, client_id: str | None = None
    ) -> Principal:
        """Check a user name and password (or a token as the password)."""
        if self.credentials is None:
            # no password file: credentials are not checked, the client is anonymous
            return self.anonymous_principal(client_id)
        self._check_transport(transport)
        address = peer_address(peer)
        if password.startswith(TOKEN_PREFIX):
            # a token of this user as the password: a password lockout of the user
            # does not stop it (tokens cannot be guessed; the address limit still holds)
            self._check_rate(address, None, transport)
            owner = self.credentials.token_user(password)
            if owner is not None and hmac.compare_digest(owner.encode(), user.encode()):
                await trio.lowlevel.checkpoint()
                return Principal(user, client_id)
        self._check_rate(address, user, transport)
        self._by_address.failed(address)
        self._by_user.failed(user)
        if await self._verify(user, password):
            self._by_address.forgive(address)
            self._by_user.forgive(user)
            return Principal(user, client_id)
        log.warning("authentication failed: user %r from %s over %s", user, peer, transport)
        raise AuthenticationError("bad user name or password")

    async def login_token(
        self, token: str, peer: str, transport: str, client_id: str | None = None
    ) -> Principal:
        if self.credentials is None:
            return self.anonymous_principal(client_id)
        self._check_transport(transport)
        address = peer_address(peer)
        self._check_rate(address, None, transport)
        user = self.credentials.token_user(token)
        await trio.lowlevel.checkpoint()
        if user is None:
            self._by_address.failed(address)
            log.warning("authentication failed: unknown bearer token from %s over %s", peer,
                        transport)  # fmt: skip
            raise AuthenticationError("unknown bearer token")
        return Principal(user, client_id)

    def _check_rate(self, address: str, user: str | None, transport: str) -> None:
        wait = self._by_address.retry_after(address)
        if user is not None:
            wait = max(wait, self._by_user.retry_after(user))
        if wait > 0:
            log.info(
                "authentication refused (too many failures): user %r from %s over %s",
                user,
                address,
                transport,
            )
            raise TooManyAttemptsError(
                f"too many failed authentications; retry in {wait:.0f} s", wait
            )

    async def _verify(self, user: str, password: str) -> bool:
        credentials = self.credentials
        assert credentials is not None
        key = hmac.new(self._cache_key, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        now = trio.current_time()
        expires = self._cache.get(key)
        if expires is not None and expires > now:
            await trio.lowlevel.checkpoint()
            return True
        stored = credentials.password_hash(user)
        ok = await trio.to_thread.run_sync(
            check_password, password, stored or _dummy_hash(), limiter=self._hashing
        )
        ok = ok and stored is not None
        if ok:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = now + CACHE_SECONDS
        return ok

    # -- HTTP ----------------------------------------------------------------------

    async def authenticate_http(
        self,
        authorization: str | None,
        peer: str,
        transport: str,
        *,
        access_token: str | None = None,
        certificate_user: str | None = None,
        client_id: str | None = None,
    ) -> Principal:
        """The principal of an HTTP request or WebSocket handshake (see the module docs)."""
        if authorization:
            scheme, _, value = authorization.strip().partition(" ")
            value = value.strip()
            if scheme.lower() == "basic":
                try:
                    decoded = base64.b64decode(value, validate=True).decode("utf-8")
                except (binascii.Error, UnicodeDecodeError):
                    raise AuthenticationError("malformed Basic credentials") from None
                user, sep, password = decoded.partition(":")
                if not sep or not user:
                    raise AuthenticationError("malformed Basic credentials")
                return await self.login(user, password, peer, transport, client_id)
            if scheme.lower() == "bearer" and value:
                return await self.login_token(value, peer, transport, client_id)
            raise AuthenticationError(f"unsupported authorization scheme {scheme!r}")
        if access_token:
            return await self.login_token(access_token, peer, transport, client_id)
        if certificate_user is not None:
            return Principal(certificate_user, client_id)
        return self.anonymous_principal(client_id)

    # -- TLS -----------------------------------------------------------------------

    def certificate_user(self, stream: Any) -> str | None:
        """The CN of a verified client certificate on ``stream`` (a trio.SSLStream), if
        ``tls_cert_username`` is on."""
        if not self.config.tls_cert_username or not isinstance(stream, trio.SSLStream):
            return None
        try:
            cert = stream.getpeercert()
        except (ssl.SSLError, ValueError, trio.NeedHandshakeError):
            return None
        return common_name(cert)


def common_name(cert: Any) -> str | None:
    """The subject's CN of a certificate dict from ``getpeercert()``."""
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for name, value in rdn:
            if name == "commonName" and value:
                return str(value)
    return None


# -- from the configuration ---------------------------------------------------------


def load_security(server_config: Any) -> Security:
    """Check the configuration and load its files; raises SecurityConfigError."""
    config: SecurityConfig = server_config.security
    check_startup(server_config)
    credentials = None
    if config.password_file is not None:
        credentials = Credentials.from_entries(PasswordFile.load(config.password_file).entries)
    anonymous = anonymous_allowed(server_config)
    sys_open = sys_open_to_all(config.sys_users, anonymous, is_loopback(server_config.bind))
    policy: Policy
    if config.acl_file is not None:
        policy = ACL.load(config.acl_file, config.sys_users, sys_open=sys_open)
    else:
        policy = Policy(config.sys_users, sys_open=sys_open)
    log.info(
        "security: %s, %s, anonymous clients %s, $SYS %s",
        f"{len(credentials.passwords)} users" if credentials else "no password file",
        f"ACL {config.acl_file}" if config.acl_file else "no ACL file",
        "allowed" if anonymous else "refused",
        "open to local clients" if sys_open else "for sys_users only",
    )
    return Security(
        config,
        anonymous=anonymous,
        credentials=credentials,
        policy=policy,
        tls_configured=bool(server_config.tls_cert and server_config.tls_key),
    )
