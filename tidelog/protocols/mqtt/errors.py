"""The codec's one error class, carrying the reason code the spec requires.

Every problem the codec finds -- in bytes it decodes or in a packet it is asked
to build or encode -- raises :class:`MQTTProtocolError` (a
:class:`tidelog.errors.TidelogError` and a :class:`ValueError`). Its
``reason_code`` is what MQTT 5 puts in the CONNACK or DISCONNECT that answers
the error (§4.13); :func:`tidelog.protocols.mqtt.replies.error_reply` turns an
error into those bytes for any protocol level.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tidelog.errors import TidelogError
from tidelog.protocols.mqtt.protocol import PacketType
from tidelog.protocols.mqtt.reason_codes import ReasonCode

if TYPE_CHECKING:
    from tidelog.protocols.mqtt.packets import Packet


class MQTTProtocolError(TidelogError, ValueError):
    """Bytes or a packet break the MQTT rules.

    Attributes:
        reason_code: the MQTT 5 reason code for the answer (0x81 Malformed Packet
            when the bytes cannot be parsed, 0x82 Protocol Error when they parse
            but are not allowed, or a more specific code).
        packet_type: the type of the packet being decoded, when known.
        protocol_level: the connection's protocol level when the error was found
            (for a CONNECT, the level it asked for), or None if not yet known.
        packets: packets that were complete and valid before the bad one in the
            same :meth:`Decoder.feed` call, in order; a server may still act on
            them before it answers the error and closes the connection.
    """

    def __init__(
        self,
        message: str,
        reason_code: ReasonCode = ReasonCode.MALFORMED_PACKET,
        *,
        packet_type: PacketType | None = None,
        protocol_level: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason_code = reason_code
        self.packet_type = packet_type
        self.protocol_level = protocol_level
        self.packets: tuple[Packet, ...] = ()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, {self.reason_code.name},"
            f" packet_type={self.packet_type!r}, protocol_level={self.protocol_level!r})"
        )


class UnsupportedProtocolVersionError(MQTTProtocolError):
    """CONNECT asked for a protocol name and level this codec does not speak.

    Reason code 0x84 (§3.1.2.1, §3.1.2.2; 3.1.1 return code 1, §3.1.2.2).
    ``protocol_level`` is the level byte the client sent.
    """

    def __init__(self, protocol_name: str, protocol_level: int) -> None:
        super().__init__(
            f"unsupported protocol {protocol_name!r} level {protocol_level}"
            " (supported: MQIsdp 3, MQTT 4, MQTT 5)",
            ReasonCode.UNSUPPORTED_PROTOCOL_VERSION,
            packet_type=PacketType.CONNECT,
            protocol_level=protocol_level,
        )
        self.protocol_name = protocol_name


def malformed(message: str) -> MQTTProtocolError:
    """A Malformed Packet error (0x81): the bytes cannot be parsed (§4.13.1)."""
    return MQTTProtocolError(message, ReasonCode.MALFORMED_PACKET)


def protocol_error(message: str) -> MQTTProtocolError:
    """A Protocol Error (0x82): parsed, but not allowed (§4.13.1)."""
    return MQTTProtocolError(message, ReasonCode.PROTOCOL_ERROR)
