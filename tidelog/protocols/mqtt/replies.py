"""What to send before closing a connection on a protocol error (§4.13; 3.1.1 §4.8).

MQTT 5 answers a bad CONNECT with a CONNACK carrying the reason code, and a
bad packet later on with a DISCONNECT; MQTT 3.x has a CONNACK return code for
a few CONNECT refusals and otherwise just closes the connection. An
unsupported protocol version gets the CONNACK the client can read: a 3.1.1
style one (return code 1) for levels below 5, an MQTT 5 one (0x84) otherwise.

:class:`Close` is how the session tells the shell that a connected client's
connection ends: why, whether its will goes out, and what to send last.
"""

from __future__ import annotations

from typing import Any

import attrs

from tidelog.protocols.mqtt.encoder import encode
from tidelog.protocols.mqtt.errors import MQTTProtocolError, UnsupportedProtocolVersionError
from tidelog.protocols.mqtt.packets import Connack, Disconnect
from tidelog.protocols.mqtt.properties import NO_PROPERTIES, Properties
from tidelog.protocols.mqtt.protocol import MAX_PACKET_SIZE, PacketType
from tidelog.protocols.mqtt.reason_codes import (
    REASON_CODES_BY_PACKET,
    V5_TO_V3_CONNACK,
    ReasonCode,
)

MAX_REASON_STRING = 200


def _reason_string(message: str) -> Properties:
    text = message[:MAX_REASON_STRING].replace("\x00", "\\x00")
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return Properties(reason_string=text)


def fitted(packet: Any, level: int, max_packet: int) -> bytes:
    """``packet`` (an ack, SUBACK or DISCONNECT) encoded, without its properties if
    they (a Reason String) would take it past the client's Maximum Packet Size: the
    sender MUST NOT send them then ([MQTT-3.4.2-2], [MQTT-3.9.2-1], [MQTT-3.14.2-3]
    and the like)."""
    data = encode(packet, level)
    if len(data) > max_packet and packet.properties is not NO_PROPERTIES:
        data = encode(attrs.evolve(packet, properties=NO_PROPERTIES), level)
    return data


def error_reply(error: MQTTProtocolError, *, reason_string: bool = True) -> bytes:
    """The bytes to send in answer to ``error`` before closing; ``b""`` for none.

    With ``reason_string`` an MQTT 5 answer carries the error message as its
    Reason String (allowed on CONNACK and DISCONNECT whatever the client's
    Request Problem Information, §3.1.2.11.7).
    """
    level = error.protocol_level
    if level is None:
        return b""
    code = error.reason_code
    if isinstance(error, UnsupportedProtocolVersionError):
        if level < 5:
            return encode(Connack(ReasonCode.UNSUPPORTED_PROTOCOL_VERSION), 4)
        return encode(Connack(ReasonCode.UNSUPPORTED_PROTOCOL_VERSION), 5)
    if level < 5:
        if error.packet_type is PacketType.CONNECT and code in V5_TO_V3_CONNACK:
            return encode(Connack(code), level)
        return b""
    properties = _reason_string(error.message) if reason_string else Properties()
    if error.packet_type is PacketType.CONNECT:
        if code not in REASON_CODES_BY_PACKET[PacketType.CONNACK]:
            code = ReasonCode.PROTOCOL_ERROR
        return encode(Connack(code, properties=properties), 5)
    if code not in REASON_CODES_BY_PACKET[PacketType.DISCONNECT]:
        code = ReasonCode.PROTOCOL_ERROR
    return encode(Disconnect(code, properties), 5)


class Close(Exception):
    """Why a connection ends, and what that means for its will and final packet."""

    def __init__(
        self,
        code: ReasonCode,
        message: str,
        *,
        will: bool = True,
        reply: bool = True,
        reply_bytes: bytes | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.will = will
        self.reply = reply
        self.reply_bytes = reply_bytes

    @classmethod
    def from_error(cls, error: MQTTProtocolError) -> Close:
        """For an error after CONNACK (a second CONNECT gets DISCONNECT, not CONNACK)."""
        if error.packet_type is PacketType.CONNECT:
            return cls(error.reason_code, error.message)
        return cls(error.reason_code, error.message, reply_bytes=error_reply(error))

    def final_packet(self, level: int, max_packet: int = MAX_PACKET_SIZE) -> bytes:
        """The DISCONNECT to send last (none for 3.x), within the client's Maximum
        Packet Size (its Reason String left out if need be)."""
        if self.reply_bytes is not None:
            if len(self.reply_bytes) <= max_packet:
                return self.reply_bytes
            return encode(Disconnect(self.code), 5)
        if not self.reply or level < 5:
            return b""
        disconnect = Disconnect(self.code, Properties(reason_string=self.message[:200]))
        return fitted(disconnect, 5, max_packet)
