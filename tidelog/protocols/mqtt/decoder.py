"""Incremental MQTT decoder: bytes in, complete packets out.

Theory of operation
-------------------
A :class:`Decoder` belongs to one side of one connection. ``feed(data)`` takes
whatever a socket read (or a WebSocket frame) produced and returns every packet
completed by it, in order: a packet split across reads is kept until its last
byte arrives, several packets in one read all come back from one call. A
server hands the whole list to the engine at once.

Framing (§2.1): the first byte holds the packet type and flags; the Remaining
Length follows as a Variable Byte Integer of at most 4 bytes. Both are checked
as soon as they arrive -- an unknown type, wrong reserved flags, a packet the
peer may not send, a length over ``max_packet_size`` -- so garbage and
oversized packets fail before their body is buffered. The bytes of an
incomplete packet wait as the reads that brought them (the first as a view of
its read from the packet's start when that is at least half the read, else
copied) and are joined once, when the packet is complete; so a 64 KiB
PUBLISH spread over two reads is copied once by the join and once into its
payload (three or four times with one growing buffer, before issue 19).

Protocol level: a server-side decoder (``Role.SERVER``, the default) starts
with no level, accepts only CONNECT, and takes the level from it (3 = MQTT 3.1
``MQIsdp``, 4 = 3.1.1, 5 = 5.0); a second CONNECT is a Protocol Error
[MQTT-3.1.0-2]. A client-side decoder (``Role.CLIENT``, for clients, tests and
load generators) is given the level it connected with.

Errors: the first problem raises :class:`MQTTProtocolError` with the reason
code the spec requires; its ``packets`` holds the valid packets that preceded
the bad one in the same call. A decoder that failed stays failed: MQTT closes
the connection after a malformed packet (§4.13), so there is nothing to resync.

PUBLISH, and acks without properties, are decoded inline in the loop: they are
the traffic. Everything else goes through one function per packet type.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Final

from tidelog.protocols.mqtt.errors import (
    MQTTProtocolError,
    UnsupportedProtocolVersionError,
    malformed,
    protocol_error,
)
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
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
)
from tidelog.protocols.mqtt.properties import NO_PROPERTIES, WILL, Properties, decode_properties
from tidelog.protocols.mqtt.protocol import (
    CLIENT_TO_SERVER,
    MAX_PACKET_SIZE,
    MQTT_3_1_MAX_CLIENT_ID,
    PROTOCOL_NAMES,
    SERVER_TO_CLIENT,
    PacketType,
)
from tidelog.protocols.mqtt.reason_codes import (
    REASON_CODES_BY_PACKET,
    SUBACK_FAILURE,
    V3_TO_V5_CONNACK,
    ConnackReturnCode,
    ReasonCode,
)
from tidelog.protocols.mqtt.wire import Reader, decode_utf8


class Role(enum.Enum):
    """Which side of the connection the decoder runs on."""

    SERVER = "server"
    """Decodes what clients send (CONNECT, PUBLISH, SUBSCRIBE, ...)."""
    CLIENT = "client"
    """Decodes what servers send (CONNACK, PUBLISH, SUBACK, ...)."""


# -- first-byte checks -------------------------------------------------------

_Problem = tuple[str, ReasonCode] | None

# Fixed header flags every packet but PUBLISH must carry (§2.1.3, Table 2-2).
_REQUIRED_FLAGS: Final = {
    PacketType.PUBREL: 0x2,
    PacketType.SUBSCRIBE: 0x2,
    PacketType.UNSUBSCRIBE: 0x2,
}


def _first_byte_problem(first: int, level: int | None, role: Role) -> _Problem:
    number = first >> 4
    flags = first & 0x0F
    if number == 0:
        return "packet type 0 is reserved (§2.1.2)", ReasonCode.MALFORMED_PACKET
    if number == 15 and level is not None and level < 5:
        return "packet type 15 is reserved in MQTT 3.x", ReasonCode.MALFORMED_PACKET
    packet_type = PacketType(number)
    if level is None:  # a server before CONNECT
        if packet_type is not PacketType.CONNECT:
            return (
                f"the first packet must be CONNECT, not {packet_type.name} [MQTT-3.1.0-1]",
                ReasonCode.PROTOCOL_ERROR,
            )
    else:
        allowed = CLIENT_TO_SERVER[level] if role is Role.SERVER else SERVER_TO_CLIENT[level]
        if packet_type is PacketType.CONNECT and role is Role.SERVER:
            return "a second CONNECT [MQTT-3.1.0-2]", ReasonCode.PROTOCOL_ERROR
        if packet_type not in allowed:
            sender = "client" if role is Role.SERVER else "server"
            return (
                f"a {sender} does not send {packet_type.name} at protocol level {level}",
                ReasonCode.PROTOCOL_ERROR,
            )
    if packet_type is PacketType.PUBLISH:
        qos = (flags >> 1) & 3
        if qos == 3:
            return "PUBLISH with QoS 3 (§3.3.1.2)", ReasonCode.MALFORMED_PACKET
        if qos == 0 and flags & 0x8:
            return "DUP must be 0 in a QoS 0 PUBLISH [MQTT-3.3.1-2]", ReasonCode.MALFORMED_PACKET
        return None
    required = _REQUIRED_FLAGS.get(packet_type, 0)
    if flags == required:
        return None
    if level == 3 and required and flags == required | 0x8:
        return None  # MQTT 3.1 sets DUP on resent PUBREL, SUBSCRIBE, UNSUBSCRIBE
    return (
        f"{packet_type.name} fixed header flags must be 0x{required:X}, not 0x{flags:X} (§2.1.3)",
        ReasonCode.MALFORMED_PACKET,
    )


_TABLES: dict[tuple[int | None, Role], tuple[_Problem, ...]] = {}


def _first_byte_table(level: int | None, role: Role) -> tuple[_Problem, ...]:
    key = (level, role)
    table = _TABLES.get(key)
    if table is None:
        table = _TABLES[key] = tuple(_first_byte_problem(b, level, role) for b in range(256))
    return table


# -- packet bodies -------------------------------------------------------------

_BodyDecoder = Callable[[int, int, bytes, int, int], Packet]


def _codes_for(packet_type: PacketType) -> dict[int, ReasonCode]:
    return {int(code): code for code in REASON_CODES_BY_PACKET[packet_type]}


_ACK_CODES: Final = {pt: _codes_for(pt) for pt in PacketType if pt in REASON_CODES_BY_PACKET}
_V3_SUBACK_CODES: Final = {
    0: ReasonCode.GRANTED_QOS_0,
    1: ReasonCode.GRANTED_QOS_1,
    2: ReasonCode.GRANTED_QOS_2,
    SUBACK_FAILURE: ReasonCode.UNSPECIFIED_ERROR,
}


def _reason_code(code: int, packet_type: PacketType) -> ReasonCode:
    reason = _ACK_CODES[packet_type].get(code)
    if reason is None:
        raise malformed(f"reason code 0x{code:02X} is not valid in {packet_type.name}")
    return reason


def _properties(reader: Reader, level: int, context: int) -> Properties:
    if level < 5:
        return NO_PROPERTIES
    properties, reader.pos = decode_properties(reader.buf, reader.pos, reader.end, context)
    return properties


def _decode_connect(_level: int, _first: int, buf: bytes, pos: int, end: int) -> Connect:
    reader = Reader(buf, pos, end)
    name_length = reader.u16("the protocol name")
    name = decode_utf8(reader.take(name_length, "the protocol name"))
    level = reader.u8("the protocol level")
    bridge = level in (0x83, 0x84)  # the 3.x bridge bit (mosquitto's try_private)
    if bridge:
        level &= 0x7F
    if PROTOCOL_NAMES.get(level) != name:
        raise UnsupportedProtocolVersionError(name, level)
    try:
        connect = _decode_connect_rest(reader, level)
        if bridge:
            connect.bridge = True
        return connect
    except MQTTProtocolError as exc:
        if exc.protocol_level is None:
            exc.protocol_level = level
        raise


def _decode_connect_rest(reader: Reader, level: int) -> Connect:
    flags = reader.u8("the connect flags")
    if flags & 0x01:
        raise malformed("the reserved connect flag must be 0 [MQTT-3.1.2-3]")
    clean_start = (flags & 0x02) != 0
    will_flag = flags & 0x04
    will_qos = (flags >> 3) & 0x03
    will_retain = (flags & 0x20) != 0
    if not will_flag and (will_qos or will_retain):
        raise malformed("will QoS and will retain must be 0 without a will [MQTT-3.1.2-11]")
    if will_qos == 3:
        raise malformed("will QoS 3 (§3.1.2.6)")
    keep_alive = reader.u16("the keep alive")
    properties = _properties(reader, level, PacketType.CONNECT)
    client_id = reader.utf8("the client identifier")
    will = None
    if will_flag:
        will_properties = _properties(reader, level, WILL)
        will_topic = reader.utf8("the will topic")
        will_payload = reader.binary("the will payload")
        will = Will(will_topic, will_payload, will_qos, will_retain, will_properties)
    username = reader.utf8("the user name") if flags & 0x80 else None
    password = reader.binary("the password") if flags & 0x40 else None
    reader.expect_end("the CONNECT payload")
    if level == 3 and not 1 <= len(client_id) <= MQTT_3_1_MAX_CLIENT_ID:
        raise MQTTProtocolError(
            f"an MQTT 3.1 client identifier has 1 to {MQTT_3_1_MAX_CLIENT_ID} characters,"
            f" not {len(client_id)}",
            ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
        )
    if level == 4 and not client_id and not clean_start:
        raise MQTTProtocolError(
            "a zero-length client identifier needs Clean Session 1 [MQTT-3.1.3-8]",
            ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
        )
    return Connect(client_id, level, clean_start, keep_alive, username, password, will, properties)


def _decode_connack(level: int, _first: int, buf: bytes, pos: int, end: int) -> Connack:
    reader = Reader(buf, pos, end)
    ack_flags = reader.u8("the acknowledge flags")
    code = reader.u8("the return code")
    if level == 3:
        session_present = False  # 3.1: the first byte is reserved and unused
    else:
        if ack_flags & 0xFE:
            raise malformed("CONNACK acknowledge flags bits 7-1 are reserved (§3.2.2.1)")
        session_present = ack_flags == 1
    if level < 5:
        if code > max(ConnackReturnCode):
            raise malformed(f"CONNACK return code {code} is reserved (3.1.1 §3.2.2.3)")
        reason = V3_TO_V5_CONNACK[ConnackReturnCode(code)]
        properties = NO_PROPERTIES
    else:
        reason = _reason_code(code, PacketType.CONNACK)
        properties = _properties(reader, level, PacketType.CONNACK)
    reader.expect_end("CONNACK")
    return Connack(reason, session_present, properties)


def _ack_decoder(cls: type[Puback | Pubrec | Pubrel | Pubcomp]) -> _BodyDecoder:
    packet_type = cls.packet_type
    codes = _ACK_CODES[packet_type]

    def decode(level: int, _first: int, buf: bytes, pos: int, end: int) -> Packet:
        reader = Reader(buf, pos, end)
        packet_id = reader.u16("the packet identifier")
        if level < 5 or pos + 2 == end:
            reader.expect_end(packet_type.name)
            return cls(packet_id)
        code = reader.u8("the reason code")
        reason = codes.get(code)
        if reason is None:
            raise malformed(f"reason code 0x{code:02X} is not valid in {packet_type.name}")
        properties = NO_PROPERTIES
        if reader.pos < end:
            properties = _properties(reader, level, packet_type)
        reader.expect_end(packet_type.name)
        return cls(packet_id, reason, properties)

    return decode


def _decode_subscribe(level: int, _first: int, buf: bytes, pos: int, end: int) -> Subscribe:
    reader = Reader(buf, pos, end)
    packet_id = reader.u16("the packet identifier")
    properties = _properties(reader, level, PacketType.SUBSCRIBE)
    subscriptions = []
    while reader.pos < end:
        topic_filter = reader.utf8("a topic filter")
        options = reader.u8("the subscription options")
        if level < 5:
            if options & 0xFC or options == 3:
                raise malformed(
                    f"requested QoS byte 0x{options:02X}: reserved bits or QoS 3 [MQTT-3.8.3-4]"
                )
            subscriptions.append(Subscription(topic_filter, options))
        else:
            if options & 0xC0:
                raise malformed("subscription options bits 7-6 are reserved [MQTT-3.8.3-5]")
            subscriptions.append(
                Subscription(
                    topic_filter,
                    options & 0x03,
                    (options & 0x04) != 0,
                    (options & 0x08) != 0,
                    (options >> 4) & 0x03,
                )
            )
    return Subscribe(packet_id, subscriptions, properties)


def _decode_suback(level: int, _first: int, buf: bytes, pos: int, end: int) -> Suback:
    reader = Reader(buf, pos, end)
    packet_id = reader.u16("the packet identifier")
    properties = _properties(reader, level, PacketType.SUBACK)
    codes = _ACK_CODES[PacketType.SUBACK] if level == 5 else _V3_SUBACK_CODES
    reasons = []
    for code in reader.rest():
        reason = codes.get(code)
        if reason is None:
            raise malformed(f"SUBACK return code 0x{code:02X} is not valid [MQTT-3.9.3-2]")
        reasons.append(reason)
    return Suback(packet_id, reasons, properties)


def _decode_unsubscribe(level: int, _first: int, buf: bytes, pos: int, end: int) -> Unsubscribe:
    reader = Reader(buf, pos, end)
    packet_id = reader.u16("the packet identifier")
    properties = _properties(reader, level, PacketType.UNSUBSCRIBE)
    topic_filters = []
    while reader.pos < end:
        topic_filters.append(reader.utf8("a topic filter"))
    return Unsubscribe(packet_id, topic_filters, properties)


def _decode_unsuback(level: int, _first: int, buf: bytes, pos: int, end: int) -> Unsuback:
    reader = Reader(buf, pos, end)
    packet_id = reader.u16("the packet identifier")
    if level < 5:
        reader.expect_end("UNSUBACK")
        return Unsuback(packet_id)
    properties = _properties(reader, level, PacketType.UNSUBACK)
    reasons = [_reason_code(code, PacketType.UNSUBACK) for code in reader.rest()]
    if not reasons:
        raise protocol_error("an MQTT 5 UNSUBACK has a reason code per topic filter (§3.11.3)")
    return Unsuback(packet_id, reasons, properties)


def _decode_empty(cls: type[Pingreq | Pingresp]) -> _BodyDecoder:
    def decode(_level: int, _first: int, _buf: bytes, pos: int, end: int) -> Packet:
        if pos != end:
            raise malformed(f"{cls.packet_type.name} has no variable header or payload")
        return cls()

    return decode


def _decode_disconnect(level: int, _first: int, buf: bytes, pos: int, end: int) -> Disconnect:
    reader = Reader(buf, pos, end)
    if level < 5 or pos == end:
        reader.expect_end("DISCONNECT")
        return Disconnect()
    reason = _reason_code(reader.u8("the reason code"), PacketType.DISCONNECT)
    properties = NO_PROPERTIES
    if reader.pos < end:
        properties = _properties(reader, level, PacketType.DISCONNECT)
    reader.expect_end("DISCONNECT")
    return Disconnect(reason, properties)


def _decode_auth(level: int, _first: int, buf: bytes, pos: int, end: int) -> Auth:
    reader = Reader(buf, pos, end)
    if pos == end:
        return Auth()
    reason = _reason_code(reader.u8("the reason code"), PacketType.AUTH)
    properties = NO_PROPERTIES
    if reader.pos < end:
        properties = _properties(reader, level, PacketType.AUTH)
    reader.expect_end("AUTH")
    return Auth(reason, properties)


_BODY_DECODERS: Final[dict[int, _BodyDecoder]] = {
    PacketType.CONNECT: _decode_connect,
    PacketType.CONNACK: _decode_connack,
    PacketType.PUBACK: _ack_decoder(Puback),
    PacketType.PUBREC: _ack_decoder(Pubrec),
    PacketType.PUBREL: _ack_decoder(Pubrel),
    PacketType.PUBCOMP: _ack_decoder(Pubcomp),
    PacketType.SUBSCRIBE: _decode_subscribe,
    PacketType.SUBACK: _decode_suback,
    PacketType.UNSUBSCRIBE: _decode_unsubscribe,
    PacketType.UNSUBACK: _decode_unsuback,
    PacketType.PINGREQ: _decode_empty(Pingreq),
    PacketType.PINGRESP: _decode_empty(Pingresp),
    PacketType.DISCONNECT: _decode_disconnect,
    PacketType.AUTH: _decode_auth,
}

# Acks without reason code or properties (remaining length 2): the common case.
_SHORT_ACKS: Final[dict[int, type[Puback | Pubrec | Pubrel | Pubcomp]]] = {
    0x40: Puback,
    0x50: Pubrec,
    0x62: Pubrel,
    0x70: Pubcomp,
}


def _check_publish_topic(topic: str, properties: Properties) -> None:
    """Raise for a topic name the PUBLISH fast path flagged (see Publish)."""
    Publish(topic, properties=properties)


def _long_remaining_length(buf: bytes, pos: int, size: int) -> tuple[int, int]:
    """Decode a Remaining Length of 2-4 bytes after ``buf[pos]``.

    Returns ``(length, body_start)``, or ``(-1, bytes_needed)`` when ``buf`` ends
    inside it. At most 4 bytes and shortest form only (§1.5.5).
    """
    value = 0
    shift = 0
    index = pos + 1
    for count in range(4):
        if index >= size:
            return -1, index - pos + 1
        byte = buf[index]
        index += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0 and count:
                raise malformed("remaining length is not in its shortest form (§1.5.5)")
            return value, index
        shift += 7
    raise malformed("remaining length is longer than 4 bytes (§2.1.4)")


class Decoder:
    """Turns the bytes of one connection into packets (see the module docs).

    Args:
        protocol_level: 3, 4 or 5. Leave None for a server-side decoder that
            learns it from CONNECT; a decoder given a level treats the
            connection as established (no CONNECT expected).
        role: :attr:`Role.SERVER` decodes what clients send,
            :attr:`Role.CLIENT` what servers send.
        max_packet_size: the largest packet accepted, fixed header included
            (the MQTT 5 Maximum Packet Size this side announces); a larger one
            raises 0x95 Packet too large before its body is buffered.
    """

    __slots__ = (
        "_buffered",
        "_chunks",
        "_failed",
        "_level",
        "_need",
        "_table",
        "max_packet_size",
        "role",
    )

    def __init__(
        self,
        protocol_level: int | None = None,
        *,
        role: Role = Role.SERVER,
        max_packet_size: int = MAX_PACKET_SIZE,
    ) -> None:
        if protocol_level is not None and protocol_level not in PROTOCOL_NAMES:
            raise ValueError(f"protocol level must be 3, 4 or 5, not {protocol_level}")
        if protocol_level is None and role is Role.CLIENT:
            raise ValueError("a client-side decoder needs the protocol level it connected with")
        if max_packet_size < 2:
            raise ValueError("max_packet_size must be at least 2")
        self.role = role
        self.max_packet_size = max_packet_size
        self._level = protocol_level
        self._table = _first_byte_table(protocol_level, role)
        self._chunks: list[bytes | memoryview] = []
        """The incomplete packet: its first chunk may be a view of an earlier read
        (from the packet's start), the others are whole reads; joined once, when
        the packet is complete."""
        self._buffered = 0
        self._need = 0
        self._failed: MQTTProtocolError | None = None

    @property
    def protocol_level(self) -> int | None:
        """The connection's protocol level; None on a server until CONNECT arrives."""
        return self._level

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet make a complete packet."""
        return self._buffered

    def feed(self, data: bytes | bytearray | memoryview) -> list[Packet]:
        """Add received bytes; return the packets they complete (maybe none).

        Raises :class:`MQTTProtocolError` at the first bad packet (see the
        module docs); every later call raises too.
        """
        if self._failed is not None:
            failed = self._failed
            raise MQTTProtocolError(
                f"the decoder failed earlier: {failed.message}",
                failed.reason_code,
                packet_type=failed.packet_type,
                protocol_level=failed.protocol_level,
            )
        chunks = self._chunks
        if chunks:
            if type(data) is not bytes:
                data = bytes(data)  # the caller may reuse its buffer
            chunks.append(data)
            self._buffered += len(data)
            if self._buffered < self._need:
                return []
            buf = b"".join(chunks)
            chunks.clear()
            self._buffered = 0
        else:
            buf = bytes(data)  # the same object when ``data`` is bytes
        packets: list[Packet] = []
        size = len(buf)
        pos = 0
        number = 0
        level = self._level
        table = self._table
        max_size = self.max_packet_size
        new = object.__new__
        short_acks = _SHORT_ACKS
        success = ReasonCode.SUCCESS
        role = self.role
        try:
            while pos < size:
                first = buf[pos]
                number = first >> 4
                problem = table[first]
                if problem is not None:
                    raise MQTTProtocolError(problem[0], problem[1])
                # Remaining Length (§2.1.4): one byte in the common case.
                if pos + 1 >= size:
                    self._need = 2
                    break
                length = buf[pos + 1]
                start = pos + 2
                if length >= 0x80:
                    # two bytes, inline (128 B to 16 KiB: a PUBLISH of a 100-byte payload)
                    if pos + 2 < size and 0 < buf[pos + 2] < 0x80:
                        length = (length & 0x7F) | buf[pos + 2] << 7
                        start = pos + 3
                    else:
                        length, start = _long_remaining_length(buf, pos, size)
                        if length < 0:
                            self._need = start
                            break
                end = start + length
                if end - pos > max_size:
                    raise MQTTProtocolError(
                        f"packet of {end - pos} bytes is larger than the maximum of {max_size}",
                        ReasonCode.PACKET_TOO_LARGE,
                    )
                if end > size:
                    self._need = end - pos
                    break

                if number == 3:  # PUBLISH, inline (§3.3)
                    if start + 2 > end:
                        raise malformed("packet ends inside the topic name length")
                    topic_end = start + 2 + ((buf[start] << 8) | buf[start + 1])
                    if topic_end > end:
                        raise malformed("packet ends inside the topic name")
                    try:
                        topic = buf[start + 2 : topic_end].decode()
                    except UnicodeDecodeError as exc:
                        raise malformed(
                            f"topic name is not well-formed UTF-8: {exc.reason}"
                        ) from None
                    qos = (first >> 1) & 3
                    if qos:
                        if topic_end + 2 > end:
                            raise malformed("packet ends inside the packet identifier")
                        packet_id: int | None = (buf[topic_end] << 8) | buf[topic_end + 1]
                        topic_end += 2
                    else:
                        packet_id = None
                    properties = NO_PROPERTIES
                    if level == 5:
                        if topic_end < end and buf[topic_end] == 0:
                            topic_end += 1
                        else:
                            properties, topic_end = decode_properties(
                                buf, topic_end, end, PacketType.PUBLISH
                            )
                            if properties.subscription_identifiers and role is Role.SERVER:
                                raise protocol_error(
                                    "a client's PUBLISH carries a Subscription Identifier"
                                    " [MQTT-3.3.4-6]"
                                )
                    # Publish.__attrs_post_init__'s checks, inline: QoS and DUP
                    # were checked with the first byte, the packet identifier
                    # fits 16 bits by construction.
                    if qos and not packet_id:
                        raise protocol_error("PUBLISH packet identifier 0 [MQTT-2.2.1-3]")
                    if "+" in topic or "#" in topic or "\x00" in topic or not topic:
                        _check_publish_topic(topic, properties)
                    publish = new(Publish)
                    publish.topic = topic
                    publish.payload = buf[topic_end:end]
                    publish.qos = qos
                    publish.retain = (first & 1) == 1
                    publish.dup = (first & 8) == 8
                    publish.packet_id = packet_id
                    publish.properties = properties
                    packets.append(publish)
                elif length == 2 and first in short_acks:
                    ack = new(short_acks[first])
                    ack.packet_id = (buf[start] << 8) | buf[start + 1]
                    if not ack.packet_id:
                        raise protocol_error("packet identifier 0 [MQTT-2.2.1-3]")
                    ack.reason_code = success
                    ack.properties = NO_PROPERTIES
                    packets.append(ack)
                elif number == 1:
                    connect = _decode_connect(0, first, buf, start, end)
                    packets.append(connect)
                    level = self._level = connect.protocol_level
                    table = self._table = _first_byte_table(level, role)
                else:
                    assert level is not None  # the first-byte table admits only CONNECT before
                    packets.append(_BODY_DECODERS[number](level, first, buf, start, end))
                pos = end
            else:
                self._need = 0
        except MQTTProtocolError as exc:
            if exc.packet_type is None and number:
                exc.packet_type = PacketType(number)
            if exc.protocol_level is None:
                exc.protocol_level = level
            exc.packets = tuple(packets)
            self._failed = exc
            raise
        if pos < size:
            # The incomplete packet's bytes: this read itself, or a view of it when they
            # are at least half of it (no copy, and at most twice their size is kept
            # alive), else a copy (a small tail after many complete packets).
            rest = size - pos
            if not pos:
                chunks.append(buf)
            elif rest * 2 >= size:
                chunks.append(memoryview(buf)[pos:])
            else:
                chunks.append(buf[pos:])
            self._buffered = rest
        return packets
