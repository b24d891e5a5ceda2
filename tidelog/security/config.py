"""Security settings (``ServerConfig.security``) and the startup check."""

from __future__ import annotations

import ipaddress
from typing import Any

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
    allow_anonymous: bool | None = None
    """Clients without credentials. None: allowed only while bound to loopback."""
    sys_users: list[str] = attrs.field(factory=list)
    """Users that may subscribe to and read ``$SYS/...``."""
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


def is_loopback(host: str) -> bool:
    """True for loopback addresses (127.0.0.0/8, ::1) and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name or a wildcard: not known to be loopback


def anonymous_allowed(server_config: Any) -> bool:
    security: SecurityConfig = server_config.security
    if security.allow_anonymous is not None:
        return security.allow_anonymous
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
    if security.allow_anonymous is None and not is_loopback(bind) and not authenticates:
        raise SecurityConfigError(
            f"refusing to listen on {bind} without authentication: configure a "
            "password file (security.password_file, see `tidelog passwd`) or client "
            "certificates, or set allow_anonymous = true explicitly"
        )
    if security.allow_anonymous is False and not authenticates:
        raise SecurityConfigError(
            "allow_anonymous is false but no password file or certificate user names are "
            "configured: nobody could connect"
        )
