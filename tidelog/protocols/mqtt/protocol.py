"""Protocol-wide constants of MQTT: packet types, protocol levels, size limits.

Section numbers refer to MQTT 5.0 (OASIS Standard, 7 March 2019) unless they
say 3.1.1 (OASIS Standard, 29 October 2014) or 3.1 (IBM, 2010).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final


class PacketType(enum.IntEnum):
    """The control packet type in the high nibble of the first byte (§2.1.2).

    0 is reserved (forbidden) at every level; 15 is AUTH in MQTT 5 and reserved
    in 3.x.
    """

    CONNECT = 1
    """Client request to connect to a server (§3.1)."""
    CONNACK = 2
    """Connect acknowledgment (§3.2)."""
    PUBLISH = 3
    """Publish message (§3.3)."""
    PUBACK = 4
    """Publish acknowledgment, QoS 1 (§3.4)."""
    PUBREC = 5
    """Publish received, QoS 2 delivery part 1 (§3.5)."""
    PUBREL = 6
    """Publish release, QoS 2 delivery part 2 (§3.6)."""
    PUBCOMP = 7
    """Publish complete, QoS 2 delivery part 3 (§3.7)."""
    SUBSCRIBE = 8
    """Subscribe request (§3.8)."""
    SUBACK = 9
    """Subscribe acknowledgment (§3.9)."""
    UNSUBSCRIBE = 10
    """Unsubscribe request (§3.10)."""
    UNSUBACK = 11
    """Unsubscribe acknowledgment (§3.11)."""
    PINGREQ = 12
    """PING request (§3.12)."""
    PINGRESP = 13
    """PING response (§3.13)."""
    DISCONNECT = 14
    """Disconnect notification (§3.14); client to server only in 3.x."""
    AUTH = 15
    """Authentication exchange (§3.15); MQTT 5 only."""


class ProtocolLevel(enum.IntEnum):
    """The protocol level byte of CONNECT (§3.1.2.2; 3.1.1 §3.1.2.2)."""

    MQTT_3_1 = 3
    """MQTT 3.1, protocol name ``MQIsdp``."""
    MQTT_3_1_1 = 4
    """MQTT 3.1.1, protocol name ``MQTT``."""
    MQTT_5 = 5
    """MQTT 5.0, protocol name ``MQTT``."""


#: The protocol name each supported level must carry in CONNECT.
PROTOCOL_NAMES: Final[Mapping[int, str]] = MappingProxyType(
    {
        ProtocolLevel.MQTT_3_1: "MQIsdp",
        ProtocolLevel.MQTT_3_1_1: "MQTT",
        ProtocolLevel.MQTT_5: "MQTT",
    }
)

#: Largest value of the Remaining Length (a 4-byte Variable Byte Integer, §1.5.5).
MAX_REMAINING_LENGTH: Final = 268_435_455
#: Largest possible packet: a 5-byte fixed header plus the largest remaining length.
MAX_PACKET_SIZE: Final = MAX_REMAINING_LENGTH + 5
#: Largest Variable Byte Integer (§1.5.5), also the largest Subscription Identifier.
MAX_VARIABLE_BYTE_INTEGER: Final = 268_435_455
#: Packet identifiers are non-zero Two Byte Integers (§2.2.1).
MAX_PACKET_ID: Final = 65_535
#: UTF-8 strings and binary data carry a Two Byte Integer length (§1.5.4, §1.5.6).
MAX_STRING_BYTES: Final = 65_535
#: MQTT 3.1 limits client identifiers to 23 characters (3.1 §3.1, "Client Identifier").
MQTT_3_1_MAX_CLIENT_ID: Final = 23

#: Packet types a server receives (sent by clients), per level.
CLIENT_TO_SERVER: Final = {
    3: frozenset(
        {
            PacketType.CONNECT,
            PacketType.PUBLISH,
            PacketType.PUBACK,
            PacketType.PUBREC,
            PacketType.PUBREL,
            PacketType.PUBCOMP,
            PacketType.SUBSCRIBE,
            PacketType.UNSUBSCRIBE,
            PacketType.PINGREQ,
            PacketType.DISCONNECT,
        }
    ),
}
CLIENT_TO_SERVER[4] = CLIENT_TO_SERVER[3]
CLIENT_TO_SERVER[5] = CLIENT_TO_SERVER[3] | {PacketType.AUTH}

#: Packet types a client receives (sent by servers), per level.
SERVER_TO_CLIENT: Final = {
    3: frozenset(
        {
            PacketType.CONNACK,
            PacketType.PUBLISH,
            PacketType.PUBACK,
            PacketType.PUBREC,
            PacketType.PUBREL,
            PacketType.PUBCOMP,
            PacketType.SUBACK,
            PacketType.UNSUBACK,
            PacketType.PINGRESP,
        }
    ),
}
SERVER_TO_CLIENT[4] = SERVER_TO_CLIENT[3]
SERVER_TO_CLIENT[5] = SERVER_TO_CLIENT[3] | {PacketType.DISCONNECT, PacketType.AUTH}
