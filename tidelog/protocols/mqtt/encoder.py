"""Encoding packets to bytes for a protocol level.

``encode(packet, level)`` returns one packet's bytes; ``encode_many(packets,
level)`` returns one buffer for a whole batch (a server's acks and messages for
one ``send_all``). At levels 3 and 4 the MQTT 5-only parts of a packet
(properties, reason codes of acks, subscription options but the QoS) are left
out; a CONNACK reason code is mapped to the 3.x return code, and one with no
3.x equivalent raises. AUTH exists only at level 5.

Every size limit is enforced here: strings and binary data up to 65,535 bytes,
a Remaining Length up to 268,435,455 bytes. Whether a packet fits the peer's
Maximum Packet Size is the caller's check (``len()`` of the result).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

from tidelog.protocols.mqtt.errors import MQTTProtocolError, malformed, protocol_error
from tidelog.protocols.mqtt.packets import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
)
from tidelog.protocols.mqtt.properties import NO_PROPERTIES, WILL, Properties, encode_properties
from tidelog.protocols.mqtt.protocol import (
    MAX_REMAINING_LENGTH,
    MAX_STRING_BYTES,
    PROTOCOL_NAMES,
    PacketType,
)
from tidelog.protocols.mqtt.reason_codes import SUBACK_FAILURE, V5_TO_V3_CONNACK
from tidelog.protocols.mqtt.wire import U16, encode_binary, encode_utf8, encode_varint

_BYTE: Final = tuple(bytes((i,)) for i in range(256))


def _header(first: int, remaining_length: int) -> bytes:
    if remaining_length > MAX_REMAINING_LENGTH:
        raise malformed(
            f"packet body of {remaining_length} bytes is larger than the maximum"
            f" remaining length {MAX_REMAINING_LENGTH}"
        )
    return _BYTE[first] + encode_varint(remaining_length)


def _frame(first: int, body: bytes) -> bytes:
    return _header(first, len(body)) + body


def _properties(properties: Properties, level: int, context: int) -> bytes:
    if level < 5:
        return b""
    if properties is NO_PROPERTIES:
        return b"\x00"
    return encode_properties(properties, context)


def _encode_connect(packet: Connect, level: int) -> bytes:
    if level != packet.protocol_level:
        raise MQTTProtocolError(
            f"a level {packet.protocol_level} CONNECT cannot be encoded at level {level}",
            packet_type=PacketType.CONNECT,
        )
    will = packet.will
    flags = 0x02 if packet.clean_start else 0
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if packet.username is not None:
        flags |= 0x80
    if packet.password is not None:
        flags |= 0x40
    parts = [
        encode_utf8(PROTOCOL_NAMES[level]),
        bytes((level | (0x80 if packet.bridge else 0), flags)),
        U16.pack(packet.keep_alive),
        _properties(packet.properties, level, PacketType.CONNECT),
        encode_utf8(packet.client_id),
    ]
    if will is not None:
        parts.append(_properties(will.properties, level, WILL))
        parts.append(encode_utf8(will.topic))
        parts.append(encode_binary(will.payload))
    if packet.username is not None:
        parts.append(encode_utf8(packet.username))
    if packet.password is not None:
        parts.append(encode_binary(packet.password))
    return _frame(0x10, b"".join(parts))


def _encode_connack(packet: Connack, level: int) -> bytes:
    if level < 5:
        return_code = V5_TO_V3_CONNACK.get(packet.reason_code)
        if return_code is None:
            raise protocol_error(
                f"CONNACK reason code {packet.reason_code.name} has no MQTT 3.x return code"
            )
        if level == 3 and packet.session_present:
            raise protocol_error("MQTT 3.1 CONNACK has no Session Present flag")
        return bytes((0x20, 2, 1 if packet.session_present else 0, return_code))
    body = bytes((1 if packet.session_present else 0, packet.reason_code)) + _properties(
        packet.properties, level, PacketType.CONNACK
    )
    return _frame(0x20, body)


def _encode_publish(packet: Publish, level: int) -> bytes:
    try:
        topic = packet.topic.encode()
    except UnicodeEncodeError as exc:
        raise malformed(f"topic name is not valid UTF-8: {exc.reason}") from None
    topic_length = len(topic)
    if topic_length > MAX_STRING_BYTES:
        raise malformed(f"topic name is {topic_length} bytes long; the limit is {MAX_STRING_BYTES}")
    qos = packet.qos
    payload = packet.payload
    first = 0x30 | (qos << 1)
    if packet.retain:
        first |= 0x01
    if packet.dup:
        first |= 0x08
    if level == 5:
        properties = packet.properties
        props = (
            b"\x00"
            if properties is NO_PROPERTIES
            else encode_properties(properties, PacketType.PUBLISH)
        )
    elif topic_length:
        props = b""
    else:
        raise protocol_error("an empty topic name (topic alias) does not exist in MQTT 3.x")
    if qos:
        packet_id = U16.pack(packet.packet_id)  # not None: checked by Publish
        remaining = 4 + topic_length + len(props) + len(payload)
        return b"".join(
            (_header(first, remaining), U16.pack(topic_length), topic, packet_id, props, payload)
        )
    remaining = 2 + topic_length + len(props) + len(payload)
    return b"".join((_header(first, remaining), U16.pack(topic_length), topic, props, payload))


def _ack_encoder(first: int) -> Callable[[Any, int], bytes]:
    packet_type = PacketType(first >> 4)

    def encode(packet: Puback | Pubrec | Pubrel | Pubcomp, level: int) -> bytes:
        properties = packet.properties
        if level < 5 or (packet.reason_code == 0 and properties is NO_PROPERTIES):
            return bytes((first, 2)) + U16.pack(packet.packet_id)
        if properties is NO_PROPERTIES:
            return bytes((first, 3)) + U16.pack(packet.packet_id) + _BYTE[packet.reason_code]
        body = b"".join(
            (
                U16.pack(packet.packet_id),
                _BYTE[packet.reason_code],
                encode_properties(properties, packet_type),
            )
        )
        return _frame(first, body)

    return encode


def _encode_subscribe(packet: Subscribe, level: int) -> bytes:
    parts = [
        U16.pack(packet.packet_id),
        _properties(packet.properties, level, PacketType.SUBSCRIBE),
    ]
    for sub in packet.subscriptions:
        parts.append(encode_utf8(sub.topic_filter))
        options = sub.qos
        if level == 5:
            options |= sub.retain_handling << 4
            if sub.no_local:
                options |= 0x04
            if sub.retain_as_published:
                options |= 0x08
        parts.append(_BYTE[options])
    return _frame(0x82, b"".join(parts))


def _encode_suback(packet: Suback, level: int) -> bytes:
    if level == 5:
        codes = bytes(packet.reason_codes)
    else:
        codes = bytes(code if code < 0x80 else SUBACK_FAILURE for code in packet.reason_codes)
    body = b"".join(
        (
            U16.pack(packet.packet_id),
            _properties(packet.properties, level, PacketType.SUBACK),
            codes,
        )
    )
    return _frame(0x90, body)


def _encode_unsubscribe(packet: Unsubscribe, level: int) -> bytes:
    parts = [
        U16.pack(packet.packet_id),
        _properties(packet.properties, level, PacketType.UNSUBSCRIBE),
    ]
    parts.extend(encode_utf8(topic_filter) for topic_filter in packet.topic_filters)
    return _frame(0xA2, b"".join(parts))


def _encode_unsuback(packet: Unsuback, level: int) -> bytes:
    if level < 5:
        return b"\xb0\x02" + U16.pack(packet.packet_id)
    if not packet.reason_codes:
        raise protocol_error("an MQTT 5 UNSUBACK needs a reason code per topic filter (§3.11.3)")
    body = b"".join(
        (
            U16.pack(packet.packet_id),
            _properties(packet.properties, level, PacketType.UNSUBACK),
            bytes(packet.reason_codes),
        )
    )
    return _frame(0xB0, body)


def _encode_pingreq(_packet: Pingreq, _level: int) -> bytes:
    return b"\xc0\x00"


def _encode_pingresp(_packet: Pingresp, _level: int) -> bytes:
    return b"\xd0\x00"


def _encode_disconnect(packet: Disconnect, level: int) -> bytes:
    properties = packet.properties
    if level < 5 or (packet.reason_code == 0 and properties is NO_PROPERTIES):
        return b"\xe0\x00"
    if properties is NO_PROPERTIES:
        return b"\xe0\x01" + _BYTE[packet.reason_code]
    body = _BYTE[packet.reason_code] + encode_properties(properties, PacketType.DISCONNECT)
    return _frame(0xE0, body)


def _encode_auth(packet: Auth, level: int) -> bytes:
    if level < 5:
        raise protocol_error("AUTH does not exist before MQTT 5")
    if packet.reason_code == 0 and packet.properties is NO_PROPERTIES:
        return b"\xf0\x00"
    properties = _properties(packet.properties, level, PacketType.AUTH)
    return _frame(0xF0, _BYTE[packet.reason_code] + properties)


_ENCODERS: Final[dict[type[Any], Callable[[Any, int], bytes]]] = {
    Connect: _encode_connect,
    Connack: _encode_connack,
    Publish: _encode_publish,
    Puback: _ack_encoder(0x40),
    Pubrec: _ack_encoder(0x50),
    Pubrel: _ack_encoder(0x62),
    Pubcomp: _ack_encoder(0x70),
    Subscribe: _encode_subscribe,
    Suback: _encode_suback,
    Unsubscribe: _encode_unsubscribe,
    Unsuback: _encode_unsuback,
    Pingreq: _encode_pingreq,
    Pingresp: _encode_pingresp,
    Disconnect: _encode_disconnect,
    Auth: _encode_auth,
}


def _check_level(protocol_level: int) -> None:
    if protocol_level not in PROTOCOL_NAMES:
        raise ValueError(f"protocol level must be 3, 4 or 5, not {protocol_level}")


def encode(packet: Packet, protocol_level: int) -> bytes:
    """The bytes of ``packet`` at ``protocol_level`` (3, 4 or 5)."""
    _check_level(protocol_level)
    return _ENCODERS[type(packet)](packet, protocol_level)


def encode_many(packets: Iterable[Packet], protocol_level: int) -> bytes:
    """The bytes of all ``packets`` at ``protocol_level``, concatenated in order."""
    _check_level(protocol_level)
    encoders = _ENCODERS
    return b"".join([encoders[type(packet)](packet, protocol_level) for packet in packets])
