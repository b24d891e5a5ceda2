"""Admission: whether a CONNECT is accepted, and on what terms (CONNACK negotiation).

:func:`admit` is the one place a CONNECT is judged: connection limits, the
client's credentials (password, TLS client certificate, or the principal of an
authenticated WebSocket handshake), the will's ACL and the server's
authentication hook, the client id's length, and whether the client id's
connection and stored session belong to the user (ownership). What the client
and the server agree on (windows, packet sizes, topic aliases, keep alive,
session expiry) is :func:`negotiate`'s, and
the CONNACK that says so is :func:`connack`'s. Nothing here does transport I/O;
the login may await the security layer (a password hash runs on a thread).
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any

from tidelog.engine.sessions import NEVER_EXPIRES
from tidelog.protocols.mqtt.encoder import encode
from tidelog.protocols.mqtt.errors import MQTTProtocolError
from tidelog.protocols.mqtt.packets import Connack, Connect
from tidelog.protocols.mqtt.properties import NO_PROPERTIES, Properties
from tidelog.protocols.mqtt.protocol import MAX_PACKET_SIZE
from tidelog.protocols.mqtt.reason_codes import ReasonCode
from tidelog.protocols.mqtt.settings import ConnectInfo, MQTTSettings
from tidelog.security import Access, AuthenticationError, Principal, Right, TooManyAttemptsError
from tidelog.security.auth import peer_address
from tidelog.security.limits import Name, NameTooLongError, Quota, QuotaExceededError
from tidelog.storage.records import BRIDGE_CLIENT_PREFIX

if TYPE_CHECKING:
    from tidelog.protocols.mqtt.server import MQTTServer

log = logging.getLogger("tidelog.protocols.mqtt.connection")


class Admission:
    """The outcome of :func:`admit`: a reason code, and on success who the client is.

    ``slot`` is the connection-limit slot taken (also on refusal: the caller
    releases it when the connection closes)."""

    __slots__ = ("access", "code", "slot")

    def __init__(self, code: ReasonCode, access: Access | None, slot: str | None) -> None:
        self.code = code
        self.access = access
        self.slot = slot


class Limits:
    """What the client asked for at CONNECT, as the session applies it."""

    __slots__ = ("alias_max_out", "keep_alive", "max_packet", "problem_info", "window")

    def __init__(
        self,
        window: int,
        max_packet: int = MAX_PACKET_SIZE,
        alias_max_out: int = 0,
        problem_info: bool = True,
        keep_alive: int = 0,
    ) -> None:
        self.window = window
        """The client's Receive Maximum: QoS 1/2 PUBLISHes unacknowledged at once."""
        self.max_packet = max_packet
        self.alias_max_out = alias_max_out
        self.problem_info = problem_info
        self.keep_alive = keep_alive
        """Seconds; 0: none (the server's Server Keep Alive if it set one)."""


def client_id_of(connect: Connect) -> str:
    """The client identifier: the client's, or one assigned (§3.1.3.1)."""
    return connect.client_id or f"tidelog-{secrets.token_hex(8)}"


async def admit(
    server: MQTTServer, info: ConnectInfo, stream: Any, preset: Principal | None, who: object
) -> Admission:
    """Judge a CONNECT (see docs/security.md); ``stream`` is asked for a TLS client
    certificate, ``preset`` is who the transport authenticated (a WebSocket login),
    ``who`` names the connection in logs.

    The client id's length is checked first (0x85 Client Identifier not valid,
    3.1.1 return code 2: before a password is hashed), and its prefix: ``bridge:``
    marks what bridges append (docs/mesh.md), so no client may use it. Ownership and the per-user
    session quota (:func:`_claimable`) come last, after every await: nothing runs
    between them and the shell's :meth:`MQTTServer.claim`, so no other CONNECT
    can slip in between the check and the takeover. They run before any session
    is opened or taken over."""
    try:
        server.security.limits.check_name(Name.CLIENT_ID, info.client_id)
    except NameTooLongError as exc:
        log.info("%r: refused: %s", who, exc)
        return Admission(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, None, None)
    if info.client_id.startswith(BRIDGE_CLIENT_PREFIX):
        log.info("%r: refused: the client id prefix %r is for bridges", who, BRIDGE_CLIENT_PREFIX)
        return Admission(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, None, None)
    admission = await _authenticate(server, info, stream, preset, who)
    if admission.code == ReasonCode.SUCCESS:
        admission.code = await server.authenticate(info)
    method = info.connect.properties.authentication_method
    if admission.code == ReasonCode.SUCCESS and method is not None:
        admission.code = ReasonCode.BAD_AUTHENTICATION_METHOD
    if admission.code == ReasonCode.SUCCESS and admission.access is not None:
        admission.code = _claimable(server, info, admission.access.owner, who)
    return admission


def _claimable(server: MQTTServer, info: ConnectInfo, owner: str, who: object) -> ReasonCode:
    """Whether ``owner`` may have the session of ``info.client_id`` (docs/security.md,
    "Ownership"): not while another user's connection has that client id, nor
    another user's stored session (0x87 Not authorized, 3.1.1 return code 5: the
    owner is neither disconnected nor touched). A new persistent session counts
    against the user's ``max_sessions_per_user`` (0x97 Quota exceeded, 3.1.1 return
    code 3 Server unavailable). Synchronous on purpose (see :func:`admit`)."""
    client_id = info.client_id
    connected = server.connections.get(client_id)
    if connected is not None and connected.owner not in (None, owner):
        log.warning(
            "%r: refused: client id %r is connected as user %r", who, client_id, connected.owner
        )
        return ReasonCode.NOT_AUTHORIZED
    sessions = server.broker.sessions
    stored = sessions.get(client_id)
    if stored is not None and stored.owner not in (None, owner):
        log.warning(
            "%r: refused: the session of client id %r belongs to user %r",
            who,
            client_id,
            stored.owner,
        )
        return ReasonCode.NOT_AUTHORIZED
    if session_expiry(info.connect) > 0 and (stored is None or stored.owner != owner):
        try:
            server.security.quotas.check(Quota.SESSIONS, owner, sessions.owned(owner))
        except QuotaExceededError as exc:
            log.warning("%r: refused: %s", who, exc)
            return ReasonCode.QUOTA_EXCEEDED
    return ReasonCode.SUCCESS


async def _authenticate(
    server: MQTTServer, info: ConnectInfo, stream: Any, preset: Principal | None, who: object
) -> Admission:
    """Connection limits, credentials and the will's ACL."""
    connect, client_id, peer = info.connect, info.client_id, info.peer
    security = server.security
    address = peer_address(peer)
    refusal = security.connections.acquire(address)
    if refusal is not None:
        log.warning("%r: refused: %s", who, refusal)
        return Admission(ReasonCode.SERVER_BUSY, None, None)
    user = connect.username
    cert_user = security.certificate_user(stream)
    try:
        if user is not None and connect.password is not None:
            password = connect.password.decode("utf-8", "replace")
            principal = await security.login(
                user, password, peer, f"mqtt-{info.transport}", client_id
            )
        elif user is not None and user in (cert_user, preset and preset.user):
            principal = Principal(user, client_id)
        elif user is not None and security.authenticates:
            log.warning("%r: user %r without a password", who, user)
            return Admission(ReasonCode.BAD_USER_NAME_OR_PASSWORD, None, address)
        elif cert_user is not None:
            principal = Principal(cert_user, client_id)
        elif preset is not None:
            principal = preset.with_client_id(client_id)
        else:
            principal = security.anonymous_principal(client_id)
    except TooManyAttemptsError:
        return Admission(ReasonCode.CONNECTION_RATE_EXCEEDED, None, address)
    except AuthenticationError:
        code = ReasonCode.NOT_AUTHORIZED if user is None else ReasonCode.BAD_USER_NAME_OR_PASSWORD
        return Admission(code, None, address)
    access = security.access(principal)
    will = connect.will
    if will is not None:
        try:
            security.limits.check_name(Name.TOPIC, will.topic)
        except NameTooLongError as exc:
            log.info("%r: will: %s", who, exc)
            return Admission(ReasonCode.TOPIC_NAME_INVALID, access, address)
    if will is not None and not access.allows(Right.PUBLISH, will.topic):
        log.info("%r: will topic %r not authorized", who, will.topic)
        return Admission(ReasonCode.NOT_AUTHORIZED, access, address)
    return Admission(ReasonCode.SUCCESS, access, address)


def refusal(code: ReasonCode, level: int) -> bytes:
    """The CONNACK refusing a CONNECT (NOT_AUTHORIZED where 3.x has no such code)."""
    try:
        return encode(Connack(code), level)
    except MQTTProtocolError:
        return encode(Connack(ReasonCode.NOT_AUTHORIZED), level)


def keep_alive(connect: Connect, settings: MQTTSettings) -> int:
    """The keep alive in force, in seconds (0: none): a configured Server Keep Alive
    replaces the client's (MQTT 5 only: 3.x cannot be told, §3.2.2.3.14); else
    ``max_keep_alive`` caps it, and a client asking for none gets the cap."""
    asked = connect.keep_alive
    if connect.protocol_level == 5 and settings.server_keep_alive is not None:
        return settings.server_keep_alive
    cap = settings.max_keep_alive
    if cap is not None and (asked == 0 or asked > cap):
        return cap
    return asked


def negotiate(connect: Connect, settings: MQTTSettings) -> Limits:
    """The client's limits (MQTT 5 properties; 3.x gets the configured window) and
    the keep alive in force (:func:`keep_alive`)."""
    props = connect.properties
    if connect.protocol_level == 5:
        return Limits(
            props.receive_maximum or 65_535,
            props.maximum_packet_size or MAX_PACKET_SIZE,
            props.topic_alias_maximum or 0,
            props.request_problem_information != 0,
            keep_alive(connect, settings),
        )
    return Limits(settings.v3_inflight_window, keep_alive=keep_alive(connect, settings))


def session_expiry(connect: Connect) -> int:
    """Seconds the session outlives the connection (3.x: clean session 0 is forever)."""
    if connect.protocol_level == 5:
        return connect.properties.session_expiry_interval or 0
    return 0 if connect.clean_start else NEVER_EXPIRES


def connack(connect: Connect, settings: MQTTSettings, client_id: str, present: bool) -> bytes:
    """The CONNACK accepting ``connect`` (MQTT 5: with the server's limits)."""
    level = connect.protocol_level
    props = NO_PROPERTIES
    if level == 5:
        server_keep_alive: int | None = keep_alive(connect, settings)
        if server_keep_alive == connect.keep_alive:
            server_keep_alive = None  # §3.2.2.3.14: absent means the client's own
        props = Properties(
            receive_maximum=settings.receive_maximum,
            topic_alias_maximum=settings.topic_alias_maximum or None,
            maximum_packet_size=(
                settings.max_packet_size if settings.max_packet_size < MAX_PACKET_SIZE else None
            ),
            assigned_client_identifier=None if connect.client_id else client_id,
            server_keep_alive=server_keep_alive,
        )
    return encode(Connack(ReasonCode.SUCCESS, present and level >= 4, props), level)
