"""MQTT 5 reason codes, their names per packet type, and the 3.x return codes.

A reason code is one byte; below 0x80 it reports success, from 0x80 on failure
(MQTT 5.0 §2.4, Table 2-6). The same value can mean different things in
different packets (0x00 is *Success*, *Normal disconnection* or *Granted QoS 0*),
and each packet type may carry only some codes: :data:`REASON_CODE_NAMES` is the
one table both facts come from.

MQTT 3.x has no reason codes. Its CONNACK carries a *return code*
(:class:`ConnackReturnCode`, 3.1.1 §3.2.2.3) and its SUBACK the granted QoS or
0x80 (3.1.1 §3.9.3); :func:`connack_return_code` maps a v5 reason code to the
3.x return code a server sends instead, so server code speaks one vocabulary.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from tidelog.protocols.mqtt.protocol import PacketType


class ReasonCode(enum.IntEnum):
    """MQTT 5 reason codes (§2.4, Table 2-6).

    Aliases name the same value as it reads in other packets:
    ``NORMAL_DISCONNECTION`` and ``GRANTED_QOS_0`` are ``SUCCESS``.
    """

    SUCCESS = 0x00
    """Success (§2.4): CONNACK §3.2.2.2, PUBACK §3.4.2.1, PUBREC §3.5.2.1, PUBREL §3.6.2.1,
    PUBCOMP §3.7.2.1, UNSUBACK §3.11.3, AUTH §3.15.2.1."""
    NORMAL_DISCONNECTION = 0x00
    """Normal disconnection: DISCONNECT §3.14.2.1 (alias of SUCCESS)."""
    GRANTED_QOS_0 = 0x00
    """Granted QoS 0: SUBACK §3.9.3 (alias of SUCCESS)."""
    GRANTED_QOS_1 = 0x01
    """Granted QoS 1: SUBACK §3.9.3."""
    GRANTED_QOS_2 = 0x02
    """Granted QoS 2: SUBACK §3.9.3."""
    DISCONNECT_WITH_WILL_MESSAGE = 0x04
    """Disconnect with Will Message: DISCONNECT §3.14.2.1."""
    NO_MATCHING_SUBSCRIBERS = 0x10
    """No matching subscribers: PUBACK §3.4.2.1, PUBREC §3.5.2.1."""
    NO_SUBSCRIPTION_EXISTED = 0x11
    """No subscription existed: UNSUBACK §3.11.3."""
    CONTINUE_AUTHENTICATION = 0x18
    """Continue authentication: AUTH §3.15.2.1."""
    RE_AUTHENTICATE = 0x19
    """Re-authenticate: AUTH §3.15.2.1."""
    UNSPECIFIED_ERROR = 0x80
    """Unspecified error: CONNACK, PUBACK, PUBREC, SUBACK, UNSUBACK, DISCONNECT (§2.4)."""
    MALFORMED_PACKET = 0x81
    """Malformed Packet: CONNACK, DISCONNECT; a packet that cannot be parsed (§4.13.1)."""
    PROTOCOL_ERROR = 0x82
    """Protocol Error: CONNACK, DISCONNECT; parsed, but not allowed (§4.13.1)."""
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    """Implementation specific error: CONNACK, PUBACK, PUBREC, SUBACK, UNSUBACK, DISCONNECT."""
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    """Unsupported Protocol Version: CONNACK §3.2.2.2 (see §3.1.2.1, §3.1.2.2)."""
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    """Client Identifier not valid: CONNACK §3.2.2.2 (see §3.1.3.1)."""
    BAD_USER_NAME_OR_PASSWORD = 0x86
    """Bad User Name or Password: CONNACK §3.2.2.2."""
    NOT_AUTHORIZED = 0x87
    """Not authorized: CONNACK, PUBACK, PUBREC, SUBACK, UNSUBACK, DISCONNECT (§2.4)."""
    SERVER_UNAVAILABLE = 0x88
    """Server unavailable: CONNACK §3.2.2.2."""
    SERVER_BUSY = 0x89
    """Server busy: CONNACK §3.2.2.2, DISCONNECT §3.14.2.1."""
    BANNED = 0x8A
    """Banned: CONNACK §3.2.2.2."""
    SERVER_SHUTTING_DOWN = 0x8B
    """Server shutting down: DISCONNECT §3.14.2.1."""
    BAD_AUTHENTICATION_METHOD = 0x8C
    """Bad authentication method: CONNACK §3.2.2.2, DISCONNECT §3.14.2.1."""
    KEEP_ALIVE_TIMEOUT = 0x8D
    """Keep Alive timeout: DISCONNECT §3.14.2.1 (see §3.1.2.10)."""
    SESSION_TAKEN_OVER = 0x8E
    """Session taken over: DISCONNECT §3.14.2.1 (see §3.1.4)."""
    TOPIC_FILTER_INVALID = 0x8F
    """Topic Filter invalid: SUBACK §3.9.3, UNSUBACK §3.11.3, DISCONNECT §3.14.2.1."""
    TOPIC_NAME_INVALID = 0x90
    """Topic Name invalid: CONNACK, PUBACK, PUBREC, DISCONNECT (§2.4)."""
    PACKET_IDENTIFIER_IN_USE = 0x91
    """Packet Identifier in use: PUBACK, PUBREC, SUBACK, UNSUBACK (§2.4)."""
    PACKET_IDENTIFIER_NOT_FOUND = 0x92
    """Packet Identifier not found: PUBREL §3.6.2.1, PUBCOMP §3.7.2.1."""
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    """Receive Maximum exceeded: DISCONNECT §3.14.2.1 (see §4.9)."""
    TOPIC_ALIAS_INVALID = 0x94
    """Topic Alias invalid: DISCONNECT §3.14.2.1 (see §3.3.2.3.4)."""
    PACKET_TOO_LARGE = 0x95
    """Packet too large: CONNACK §3.2.2.2, DISCONNECT §3.14.2.1 (see §3.1.2.11.4)."""
    MESSAGE_RATE_TOO_HIGH = 0x96
    """Message rate too high: DISCONNECT §3.14.2.1."""
    QUOTA_EXCEEDED = 0x97
    """Quota exceeded: CONNACK, PUBACK, PUBREC, SUBACK, DISCONNECT (§2.4)."""
    ADMINISTRATIVE_ACTION = 0x98
    """Administrative action: DISCONNECT §3.14.2.1."""
    PAYLOAD_FORMAT_INVALID = 0x99
    """Payload format invalid: CONNACK, PUBACK, PUBREC, DISCONNECT (see §3.3.2.3.2)."""
    RETAIN_NOT_SUPPORTED = 0x9A
    """Retain not supported: CONNACK §3.2.2.2, DISCONNECT §3.14.2.1."""
    QOS_NOT_SUPPORTED = 0x9B
    """QoS not supported: CONNACK §3.2.2.2, DISCONNECT §3.14.2.1."""
    USE_ANOTHER_SERVER = 0x9C
    """Use another server: CONNACK §3.2.2.2, DISCONNECT §3.14.2.1 (see §4.11)."""
    SERVER_MOVED = 0x9D
    """Server moved: CONNACK §3.2.2.2, DISCONNECT §3.14.2.1 (see §4.11)."""
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    """Shared Subscriptions not supported: SUBACK §3.9.3, DISCONNECT §3.14.2.1."""
    CONNECTION_RATE_EXCEEDED = 0x9F
    """Connection rate exceeded: CONNACK §3.2.2.2, DISCONNECT §3.14.2.1."""
    MAXIMUM_CONNECT_TIME = 0xA0
    """Maximum connect time: DISCONNECT §3.14.2.1."""
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
    """Subscription Identifiers not supported: SUBACK §3.9.3, DISCONNECT §3.14.2.1."""
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2
    """Wildcard Subscriptions not supported: SUBACK §3.9.3, DISCONNECT §3.14.2.1."""

    @property
    def is_error(self) -> bool:
        """True for failure codes (0x80 and above, §2.4)."""
        return self >= 0x80


_P = PacketType
_CONNACK_PUBACK_PUBREC_SUBACK_UNSUBACK_DISCONNECT = (
    _P.CONNACK,
    _P.PUBACK,
    _P.PUBREC,
    _P.SUBACK,
    _P.UNSUBACK,
    _P.DISCONNECT,
)

# (code, name, packet types that may carry it under that name) -- Table 2-6.
_TABLE: tuple[tuple[int, str, tuple[PacketType, ...]], ...] = (
    (
        0x00,
        "Success",
        (_P.CONNACK, _P.PUBACK, _P.PUBREC, _P.PUBREL, _P.PUBCOMP, _P.UNSUBACK, _P.AUTH),
    ),
    (0x00, "Normal disconnection", (_P.DISCONNECT,)),
    (0x00, "Granted QoS 0", (_P.SUBACK,)),
    (0x01, "Granted QoS 1", (_P.SUBACK,)),
    (0x02, "Granted QoS 2", (_P.SUBACK,)),
    (0x04, "Disconnect with Will Message", (_P.DISCONNECT,)),
    (0x10, "No matching subscribers", (_P.PUBACK, _P.PUBREC)),
    (0x11, "No subscription existed", (_P.UNSUBACK,)),
    (0x18, "Continue authentication", (_P.AUTH,)),
    (0x19, "Re-authenticate", (_P.AUTH,)),
    (0x80, "Unspecified error", _CONNACK_PUBACK_PUBREC_SUBACK_UNSUBACK_DISCONNECT),
    (0x81, "Malformed Packet", (_P.CONNACK, _P.DISCONNECT)),
    (0x82, "Protocol Error", (_P.CONNACK, _P.DISCONNECT)),
    (0x83, "Implementation specific error", _CONNACK_PUBACK_PUBREC_SUBACK_UNSUBACK_DISCONNECT),
    (0x84, "Unsupported Protocol Version", (_P.CONNACK,)),
    (0x85, "Client Identifier not valid", (_P.CONNACK,)),
    (0x86, "Bad User Name or Password", (_P.CONNACK,)),
    (0x87, "Not authorized", _CONNACK_PUBACK_PUBREC_SUBACK_UNSUBACK_DISCONNECT),
    (0x88, "Server unavailable", (_P.CONNACK,)),
    (0x89, "Server busy", (_P.CONNACK, _P.DISCONNECT)),
    (0x8A, "Banned", (_P.CONNACK,)),
    (0x8B, "Server shutting down", (_P.DISCONNECT,)),
    (0x8C, "Bad authentication method", (_P.CONNACK, _P.DISCONNECT)),
    (0x8D, "Keep Alive timeout", (_P.DISCONNECT,)),
    (0x8E, "Session taken over", (_P.DISCONNECT,)),
    (0x8F, "Topic Filter invalid", (_P.SUBACK, _P.UNSUBACK, _P.DISCONNECT)),
    (0x90, "Topic Name invalid", (_P.CONNACK, _P.PUBACK, _P.PUBREC, _P.DISCONNECT)),
    (0x91, "Packet Identifier in use", (_P.PUBACK, _P.PUBREC, _P.SUBACK, _P.UNSUBACK)),
    (0x92, "Packet Identifier not found", (_P.PUBREL, _P.PUBCOMP)),
    (0x93, "Receive Maximum exceeded", (_P.DISCONNECT,)),
    (0x94, "Topic Alias invalid", (_P.DISCONNECT,)),
    (0x95, "Packet too large", (_P.CONNACK, _P.DISCONNECT)),
    (0x96, "Message rate too high", (_P.DISCONNECT,)),
    (0x97, "Quota exceeded", (_P.CONNACK, _P.PUBACK, _P.PUBREC, _P.SUBACK, _P.DISCONNECT)),
    (0x98, "Administrative action", (_P.DISCONNECT,)),
    (0x99, "Payload format invalid", (_P.CONNACK, _P.PUBACK, _P.PUBREC, _P.DISCONNECT)),
    (0x9A, "Retain not supported", (_P.CONNACK, _P.DISCONNECT)),
    (0x9B, "QoS not supported", (_P.CONNACK, _P.DISCONNECT)),
    (0x9C, "Use another server", (_P.CONNACK, _P.DISCONNECT)),
    (0x9D, "Server moved", (_P.CONNACK, _P.DISCONNECT)),
    (0x9E, "Shared Subscriptions not supported", (_P.SUBACK, _P.DISCONNECT)),
    (0x9F, "Connection rate exceeded", (_P.CONNACK, _P.DISCONNECT)),
    (0xA0, "Maximum connect time", (_P.DISCONNECT,)),
    (0xA1, "Subscription Identifiers not supported", (_P.SUBACK, _P.DISCONNECT)),
    (0xA2, "Wildcard Subscriptions not supported", (_P.SUBACK, _P.DISCONNECT)),
)


def _build_names() -> Mapping[PacketType, Mapping[ReasonCode, str]]:
    names: dict[PacketType, dict[ReasonCode, str]] = {}
    for code, name, packet_types in _TABLE:
        for packet_type in packet_types:
            names.setdefault(packet_type, {})[ReasonCode(code)] = name
    return MappingProxyType({pt: MappingProxyType(by_code) for pt, by_code in names.items()})


#: packet type -> reason code -> the code's name in that packet (Table 2-6).
#: A code absent for a packet type may not be sent in it.
REASON_CODE_NAMES: Final = _build_names()

#: packet type -> the reason codes it may carry (derived from REASON_CODE_NAMES).
REASON_CODES_BY_PACKET: Final[Mapping[PacketType, frozenset[ReasonCode]]] = MappingProxyType(
    {pt: frozenset(by_code) for pt, by_code in REASON_CODE_NAMES.items()}
)


def reason_code_name(code: int, packet_type: PacketType) -> str:
    """The name of ``code`` as it reads in ``packet_type`` (``"Granted QoS 0"`` for SUBACK 0).

    Falls back to ``"0x.. (not valid in <type>)"`` for a code the packet may not carry.
    """
    names = REASON_CODE_NAMES.get(packet_type, {})
    try:
        return names[ReasonCode(code)]
    except (KeyError, ValueError):
        return f"0x{code:02X} (not valid in {packet_type.name})"


class ConnackReturnCode(enum.IntEnum):
    """The CONNACK return code of MQTT 3.1 and 3.1.1 (3.1.1 §3.2.2.3, Table 3.1)."""

    ACCEPTED = 0
    """Connection accepted."""
    UNACCEPTABLE_PROTOCOL_VERSION = 1
    """The server does not support the level of the MQTT protocol requested."""
    IDENTIFIER_REJECTED = 2
    """The client identifier is correct UTF-8 but not allowed by the server."""
    SERVER_UNAVAILABLE = 3
    """The network connection has been made but the MQTT service is unavailable."""
    BAD_USER_NAME_OR_PASSWORD = 4
    """The data in the user name or password is malformed."""
    NOT_AUTHORIZED = 5
    """The client is not authorized to connect."""


_R = ReasonCode
_C = ConnackReturnCode

#: v5 CONNACK reason code -> the 3.x return code that says the same. Codes that
#: are missing (Malformed Packet, Protocol Error, Packet too large, ...) have no
#: 3.x CONNACK: a 3.x server closes the connection without one (3.1.1 §4.8).
V5_TO_V3_CONNACK: Final[Mapping[ReasonCode, ConnackReturnCode]] = MappingProxyType(
    {
        _R.SUCCESS: _C.ACCEPTED,
        _R.UNSUPPORTED_PROTOCOL_VERSION: _C.UNACCEPTABLE_PROTOCOL_VERSION,
        _R.CLIENT_IDENTIFIER_NOT_VALID: _C.IDENTIFIER_REJECTED,
        _R.SERVER_UNAVAILABLE: _C.SERVER_UNAVAILABLE,
        _R.SERVER_BUSY: _C.SERVER_UNAVAILABLE,
        _R.USE_ANOTHER_SERVER: _C.SERVER_UNAVAILABLE,
        _R.SERVER_MOVED: _C.SERVER_UNAVAILABLE,
        _R.CONNECTION_RATE_EXCEEDED: _C.SERVER_UNAVAILABLE,
        _R.QUOTA_EXCEEDED: _C.SERVER_UNAVAILABLE,
        _R.UNSPECIFIED_ERROR: _C.SERVER_UNAVAILABLE,
        _R.IMPLEMENTATION_SPECIFIC_ERROR: _C.SERVER_UNAVAILABLE,
        _R.BAD_USER_NAME_OR_PASSWORD: _C.BAD_USER_NAME_OR_PASSWORD,
        _R.NOT_AUTHORIZED: _C.NOT_AUTHORIZED,
        _R.BANNED: _C.NOT_AUTHORIZED,
        _R.BAD_AUTHENTICATION_METHOD: _C.NOT_AUTHORIZED,
    }
)

#: 3.x return code -> the v5 reason code a decoder reports for it (the inverse of
#: the first entry per return code in V5_TO_V3_CONNACK).
V3_TO_V5_CONNACK: Final[Mapping[ConnackReturnCode, ReasonCode]] = MappingProxyType(
    {
        _C.ACCEPTED: _R.SUCCESS,
        _C.UNACCEPTABLE_PROTOCOL_VERSION: _R.UNSUPPORTED_PROTOCOL_VERSION,
        _C.IDENTIFIER_REJECTED: _R.CLIENT_IDENTIFIER_NOT_VALID,
        _C.SERVER_UNAVAILABLE: _R.SERVER_UNAVAILABLE,
        _C.BAD_USER_NAME_OR_PASSWORD: _R.BAD_USER_NAME_OR_PASSWORD,
        _C.NOT_AUTHORIZED: _R.NOT_AUTHORIZED,
    }
)


def connack_return_code(reason_code: ReasonCode) -> ConnackReturnCode | None:
    """The 3.x CONNACK return code for a v5 reason code, or None if 3.x has none."""
    return V5_TO_V3_CONNACK.get(reason_code)


#: The 3.x SUBACK failure return code (3.1.1 §3.9.3); every v5 failure maps to it.
SUBACK_FAILURE: Final = 0x80
