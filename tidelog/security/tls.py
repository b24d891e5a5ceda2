"""TLS server contexts for every listener, with optional client certificates.

One certificate and key (``ServerConfig.tls_cert`` / ``tls_key``) serve MQTT
over TLS, WSS and HTTPS. With ``SecurityConfig.tls_ca_file`` clients may (or,
with ``tls_require_client_cert``, must) present a certificate signed by that
CA; with ``tls_cert_username`` its subject CN is the client's user name.

HTTPS runs in Hypercorn, which does not hand the peer certificate to the
ASGI app. :class:`_RecordingSSLObject` records it, right after the handshake,
in the :data:`peer_certificate` context variable of the task that did the
handshake; Hypercorn runs the app in tasks that task spawns, which inherit a
copy of its context, so the request sees its own connection's certificate.
"""

from __future__ import annotations

import contextvars
import ssl
from typing import Any

from tidelog.security.config import SecurityConfig

peer_certificate: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "tidelog_peer_certificate", default=None
)


class _RecordingSSLObject(ssl.SSLObject):
    def do_handshake(self) -> None:
        super().do_handshake()
        peer_certificate.set(self.getpeercert() or None)


def server_context(
    cert: str, key: str, security: SecurityConfig | None = None, *, record_peer: bool = False
) -> ssl.SSLContext:
    """A server context for ``cert``/``key``; verifies client certificates against
    ``security.tls_ca_file`` when set. ``record_peer`` sets :data:`peer_certificate`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if security is not None and security.tls_ca_file:
        context.load_verify_locations(security.tls_ca_file)
        context.verify_mode = (
            ssl.CERT_REQUIRED if security.tls_require_client_cert else ssl.CERT_OPTIONAL
        )
    if record_peer:
        context.sslobject_class = _RecordingSSLObject
    return context
