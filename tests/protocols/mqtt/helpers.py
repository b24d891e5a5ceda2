"""Building raw packets by hand and picking the decoder that receives a packet."""

from __future__ import annotations

from tidelog.protocols.mqtt import Decoder, PacketType, Role
from tidelog.protocols.mqtt.protocol import CLIENT_TO_SERVER


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        digit = value & 0x7F
        value >>= 7
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def packet(first: int, *parts: bytes) -> bytes:
    """A raw packet: first byte, remaining length, then the parts."""
    body = b"".join(parts)
    return bytes((first,)) + varint(len(body)) + body


def string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return len(raw).to_bytes(2, "big") + raw


def u16(value: int) -> bytes:
    return value.to_bytes(2, "big")


def props(*parts: bytes) -> bytes:
    """A property block from encoded properties (identifier byte + value)."""
    body = b"".join(parts)
    return varint(len(body)) + body


def connect(
    level: int = 4,
    *,
    name: str = "",
    flags: int = 0x02,
    client_id: str = "c",
    properties: bytes = b"\x00",
    rest: bytes = b"",
) -> bytes:
    name = name or ("MQIsdp" if level == 3 else "MQTT")
    return packet(
        0x10,
        string(name),
        bytes((level, flags)),
        u16(60),
        properties if level == 5 else b"",
        string(client_id),
        rest,
    )


def receiving_decoder(packet_type: PacketType, level: int) -> Decoder:
    """A decoder on the side that receives ``packet_type`` at ``level``."""
    if packet_type is PacketType.CONNECT:
        return Decoder()
    if packet_type in CLIENT_TO_SERVER[level] and not (
        packet_type is PacketType.PUBLISH and level == 5
    ):
        return Decoder(level, role=Role.SERVER)
    # A v5 PUBLISH may carry Subscription Identifiers only from server to client.
    return Decoder(level, role=Role.CLIENT)
