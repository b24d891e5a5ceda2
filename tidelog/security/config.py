"""Security settings (``ServerConfig.security``) and the startup check."""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

import attrs

from tidelog.security.errors import SecurityConfigError


@attrs.define
class SecurityConfig:
    """Authentication, authorization, TLS options and connection limits.

    See docs/security.md. The TLS certificate and key themselves are
    ``ServerConfig.tls_cert`` / ``tls_key`` (shared by every TLS listener).
    """

    password_file: str | None = None
    """Users, scrypt password hashes and token hashes (``tidelog passwd``)."""
    acl_file: str | None = None
    """Topic ACL rules; without one every topic but ``$SYS`` is open to every client."""
    allow_anonymous: bool | Literal["auto"] = "auto"
    """Clients without credentials: True, False, or ``"auto"`` (allowed only while every
    listener is bound to loopback). None is taken as ``"auto"``."""
    sys_users: list[str] = attrs.field(factory=list)
    """Users that may subscribe to and read ``$SYS/...`` (and see every topic's metadata)."""
    admin_users: list[str] = attrs.field(factory=list)
    """Users that see and manage every user's cursors (and, later, sessions, links and
    webhooks), and see all metadata. Never granted by an ACL rule."""
    webhook_urls: list[str] = attrs.field(factory=list)
    """Where webhooks may point (URL prefixes, ``tidelog.webhooks.spec.AllowedURL``);
    empty: anywhere."""
    require_tls_for_credentials: bool = False
    """With a TLS certificate configured, refuse passwords and tokens sent over a
    listener without TLS (they would cross the network in clear)."""
    auth_failures_per_address: int = 10
    """Failed authentications per remote address within ``auth_failure_window``
    before further attempts from it are refused (MQTT 0x9F, HTTP 429)."""
    auth_failures_per_user: int = 20
    """The same per user name (a locked user cannot log in from anywhere meanwhile)."""
    auth_failure_window: float = 60.0
    """Seconds a failed attempt counts."""
    tls_ca_file: str | None = None
    """PEM CA bundle to verify client certificates; enables client-certificate auth."""
    tls_require_client_cert: bool = False
    """Refuse TLS clients without a valid certificate (else it is optional)."""
    tls_cert_username: bool = False
    """Use a verified client certificate's subject CN as the user name."""
    http_tls: bool = False
    """Serve the REST port over HTTPS (needs ``tls_cert`` and ``tls_key``)."""
    ws_tls: bool = False
    """Serve the WebSocket port as WSS (needs ``tls_cert`` and ``tls_key``)."""
    max_connections: int | None = 65_536
    """Open client connections on all listeners together (MQTT, WebSocket, HTTP requests)."""
    max_connections_per_address: int | None = None
    """Open connections from one remote address."""
    max_subscriptions: int = 1000
    """Subscriptions one MQTT client may hold (SUBACK 0x97 / 0x80 beyond)."""
    max_topic_bytes: int = 1024
    """Longest topic name (UTF-8 bytes) a client may publish to."""
    max_filter_bytes: int = 1024
    """Longest topic filter (UTF-8 bytes) a client may subscribe or read with."""
    max_cursor_name_bytes: int = 200
    """Longest cursor name (UTF-8 bytes)."""
    max_client_id_bytes: int = 256
    """Longest MQTT client id (UTF-8 bytes)."""
    max_user_property_key_bytes: int = 256
    """Longest user property key (UTF-8 bytes) on a published event."""
    max_link_name_bytes: int = 200
    """Longest link name (UTF-8 bytes)."""
    max_webhook_name_bytes: int = 200
    """Longest webhook name (UTF-8 bytes)."""
    max_cursors_per_user: int = 1000
    """Durable cursors one user may own."""
    max_retained_per_user: int = 10_000
    """Retained messages one user may have set (counted since the broker started)."""
    max_subscriptions_per_user: int = 10_000
    """Live subscriptions one user may hold over all connections together."""
    max_sessions_per_user: int = 100_000
    """Persistent MQTT sessions one user may own."""

    @property
    def anonymous_mode(self) -> bool | Literal["auto"]:
        """``allow_anonymous`` with None read as ``"auto"``."""
        value = self.allow_anonymous
        return "auto" if value is None or value == "auto" else bool(value)


def is_loopback(host: str) -> bool:
    """True for loopback addresses (127.0.0.0/8, ::1) and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name or a wildcard: not known to be loopback


def anonymous_allowed(server_config: Any) -> bool:
    """True if clients without credentials are let in (``auto``: every listener on
    loopback; every listener binds ``server_config.bind``)."""
    mode = server_config.security.anonymous_mode
    if mode != "auto":
        return bool(mode)
    return is_loopback(server_config.bind)


def check_startup(server_config: Any) -> None:
    """Refuse a configuration that would expose the broker without authentication, or
    that nobody could use. Runs before anything binds."""
    security: SecurityConfig = server_config.security
    bind = server_config.bind
    has_tls = bool(server_config.tls_cert and server_config.tls_key)
    if (security.http_tls or security.ws_tls) and not has_tls:
        raise SecurityConfigError("http_tls and ws_tls need tls_cert and tls_key")
    if (security.tls_require_client_cert or security.tls_cert_username) and not (
        security.tls_ca_file
    ):
        raise SecurityConfigError("client certificate options need tls_ca_file")
    authenticates = security.password_file is not None or (security.tls_cert_username and has_tls)
    mode = security.anonymous_mode
    if mode == "auto" and not is_loopback(bind) and not authenticates:
        raise SecurityConfigError(
            f"refusing to listen on {bind} without authentication: configure a "
            "password file (security.password_file, see `tidelog passwd`) or client "
            "certificates, or set allow_anonymous = true explicitly"
        )
    if mode is False and not authenticates:
        raise SecurityConfigError(
            "allow_anonymous is false but no password file or certificate user names are "
            "configured: nobody could connect"
        )
