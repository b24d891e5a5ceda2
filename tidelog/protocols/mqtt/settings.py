"""Settings of the MQTT server and the authentication hook's types."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs

from tidelog.protocols.mqtt.packets import Connect
from tidelog.protocols.mqtt.reason_codes import ReasonCode

MEBIBYTE = 1024 * 1024


@attrs.frozen
class MQTTSettings:
    """Limits and timeouts of the MQTT server (``ServerConfig.mqtt_options``)."""

    receive_maximum: int = 1024
    """QoS 1/2 PUBLISHes a v5 client may have unacknowledged towards the server
    (announced in CONNACK; exceeding it is DISCONNECT 0x93)."""
    max_packet_size: int = 16 * MEBIBYTE
    """Largest packet accepted (announced to v5 clients); larger ones get 0x95."""
    topic_alias_maximum: int = 64
    """Topic aliases a v5 client may set towards the server."""
    server_keep_alive: int | None = None
    """If set, v5 clients are told to use this keep alive instead of their own."""
    max_keep_alive: int | None = None
    """If set, the longest keep alive (seconds) a client is held to: a v5 client asking
    for more, or for none (0), is told this one in CONNACK's Server Keep Alive; a 3.x
    client, which cannot be told, is held to it all the same. ``server_keep_alive``,
    when set too, wins."""
    connect_timeout: float = 10.0
    """Seconds a new connection has to complete CONNECT (and the TLS handshake)."""
    v3_inflight_window: int = 1024
    """Outbound in-flight QoS 1/2 messages for clients that announce no Receive Maximum."""
    session_save_interval: float = 1.0
    """Seconds between saves of a persistent session's position (saves coalesce)."""
    pending_deliveries: int = 1000
    """Deliveries a connection takes from its feeds ahead of sending them; past this a
    slow client's feed falls behind and later catches up from the log."""
    max_send_bytes: int = 4 * MEBIBYTE
    """Largest buffer the writer hands to one ``send_all`` (more waits for the next)."""
    close_timeout: float = 2.0
    """Seconds spent on a final DISCONNECT and on saving state when a connection ends."""


@attrs.frozen
class ConnectInfo:
    """What the authentication hook is asked about."""

    connect: Connect
    """The CONNECT packet (client id, user name, password, properties, will)."""
    client_id: str
    """The client identifier the session will use (assigned if the client sent none)."""
    transport: str
    """``tcp``, ``tls`` or ``websocket``."""
    peer: str
    """The remote address, for logs."""


Authenticator = Callable[[ConnectInfo], Awaitable[ReasonCode]]
"""Returns ReasonCode.SUCCESS to accept a CONNECT, or the CONNACK reason to refuse it
(e.g. BAD_USER_NAME_OR_PASSWORD, NOT_AUTHORIZED; 3.x clients get the mapped return code)."""


async def allow_all(info: ConnectInfo) -> ReasonCode:
    """The default authentication hook: every client is accepted."""
    return ReasonCode.SUCCESS
