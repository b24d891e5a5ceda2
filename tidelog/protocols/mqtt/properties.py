"""MQTT 5 properties (§2.2.2): the table, the :class:`Properties` value, the codec.

One table, :data:`PROPERTY_SPECS`, says for every property identifier its
attribute name on :class:`Properties`, its wire type, the packets allowed to
carry it, where it may repeat, and the value rule the spec states for it.
Decoding and encoding both read it:

* an identifier that is unknown, or not valid for the packet, is a Malformed
  Packet (0x81): "A Control Packet which contains an Identifier which is not
  valid for its packet type, or contains a value not of the specified data type,
  is a Malformed Packet" (§2.2.2.2);
* a property repeated where it may appear once is a Protocol Error (0x82), as
  each property's section says ("It is a Protocol Error to include ... more than
  once"). User Property may repeat everywhere it is allowed; Subscription
  Identifier may repeat in PUBLISH only (§3.3.2.3.8, §3.8.2.1.2);
* a value the spec forbids (Receive Maximum 0, a Byte flag other than 0 or 1,
  Subscription Identifier 0, ...) is a Protocol Error (0x82).

Topic Alias values are decoded as they are: whether an alias is in range or
known is the connection's business (0x94, §3.3.2.3.4).

The Will Properties of CONNECT (§3.1.3.2) are a context of their own,
:data:`WILL`, next to the packet types.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

import attrs

from tidelog.protocols.mqtt.errors import malformed, protocol_error
from tidelog.protocols.mqtt.protocol import (
    MAX_VARIABLE_BYTE_INTEGER,
    PacketType,
)
from tidelog.protocols.mqtt.wire import (
    U16,
    U32,
    Reader,
    encode_binary,
    encode_utf8,
    encode_varint,
    read_varint,
)

#: Property context of the Will Properties in the CONNECT payload (§3.1.3.2).
#: Not a packet type: 0 is the reserved type number, which no packet carries.
WILL: Final = 0


def context_name(context: int) -> str:
    """``"PUBLISH"``, ``"Will Properties"``, ... for error messages."""
    return "Will Properties" if context == WILL else PacketType(context).name


class PropertyId(enum.IntEnum):
    """Property identifiers (§2.2.2.2, Table 2-4)."""

    PAYLOAD_FORMAT_INDICATOR = 0x01
    """Byte, PUBLISH and Will: 0 unspecified bytes, 1 UTF-8 (§3.3.2.3.2, §3.1.3.2.3)."""
    MESSAGE_EXPIRY_INTERVAL = 0x02
    """Four Byte Integer seconds, PUBLISH and Will (§3.3.2.3.3, §3.1.3.2.4)."""
    CONTENT_TYPE = 0x03
    """UTF-8 string, PUBLISH and Will (§3.3.2.3.9, §3.1.3.2.5)."""
    RESPONSE_TOPIC = 0x08
    """UTF-8 string (a topic name), PUBLISH and Will (§3.3.2.3.5, §3.1.3.2.6)."""
    CORRELATION_DATA = 0x09
    """Binary Data, PUBLISH and Will (§3.3.2.3.6, §3.1.3.2.7)."""
    SUBSCRIPTION_IDENTIFIER = 0x0B
    """Variable Byte Integer 1..268,435,455, PUBLISH (repeatable) and SUBSCRIBE
    (§3.3.2.3.8, §3.8.2.1.2)."""
    SESSION_EXPIRY_INTERVAL = 0x11
    """Four Byte Integer seconds, CONNECT, CONNACK, DISCONNECT (§3.1.2.11.2, §3.2.2.3.2,
    §3.14.2.2.2)."""
    ASSIGNED_CLIENT_IDENTIFIER = 0x12
    """UTF-8 string, CONNACK (§3.2.2.3.7)."""
    SERVER_KEEP_ALIVE = 0x13
    """Two Byte Integer seconds, CONNACK (§3.2.2.3.14)."""
    AUTHENTICATION_METHOD = 0x15
    """UTF-8 string, CONNECT, CONNACK, AUTH (§3.1.2.11.9, §3.2.2.3.17, §3.15.2.2.2)."""
    AUTHENTICATION_DATA = 0x16
    """Binary Data, CONNECT, CONNACK, AUTH (§3.1.2.11.10, §3.2.2.3.18, §3.15.2.2.3)."""
    REQUEST_PROBLEM_INFORMATION = 0x17
    """Byte 0 or 1, CONNECT (§3.1.2.11.7)."""
    WILL_DELAY_INTERVAL = 0x18
    """Four Byte Integer seconds, Will (§3.1.3.2.2)."""
    REQUEST_RESPONSE_INFORMATION = 0x19
    """Byte 0 or 1, CONNECT (§3.1.2.11.6)."""
    RESPONSE_INFORMATION = 0x1A
    """UTF-8 string, CONNACK (§3.2.2.3.15)."""
    SERVER_REFERENCE = 0x1C
    """UTF-8 string, CONNACK and DISCONNECT (§3.2.2.3.16, §3.14.2.2.5)."""
    REASON_STRING = 0x1F
    """UTF-8 string, every packet with a reason code (§3.2.2.3.9, §3.4.2.2.2, ...)."""
    RECEIVE_MAXIMUM = 0x21
    """Two Byte Integer 1..65,535, CONNECT and CONNACK (§3.1.2.11.3, §3.2.2.3.3)."""
    TOPIC_ALIAS_MAXIMUM = 0x22
    """Two Byte Integer, CONNECT and CONNACK (§3.1.2.11.5, §3.2.2.3.8)."""
    TOPIC_ALIAS = 0x23
    """Two Byte Integer, PUBLISH (§3.3.2.3.4); validity is the connection's business."""
    MAXIMUM_QOS = 0x24
    """Byte 0 or 1, CONNACK (§3.2.2.3.4)."""
    RETAIN_AVAILABLE = 0x25
    """Byte 0 or 1, CONNACK (§3.2.2.3.5)."""
    USER_PROPERTY = 0x26
    """UTF-8 String Pair, repeatable, every packet but PINGREQ/PINGRESP (§3.1.2.11.8, ...)."""
    MAXIMUM_PACKET_SIZE = 0x27
    """Four Byte Integer, not 0, CONNECT and CONNACK (§3.1.2.11.4, §3.2.2.3.6)."""
    WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
    """Byte 0 or 1, CONNACK (§3.2.2.3.11)."""
    SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
    """Byte 0 or 1, CONNACK (§3.2.2.3.12)."""
    SHARED_SUBSCRIPTION_AVAILABLE = 0x2A
    """Byte 0 or 1, CONNACK (§3.2.2.3.13)."""


class WireType(enum.Enum):
    """Data representations of property values (§1.5)."""

    BYTE = "Byte"
    TWO_BYTE_INTEGER = "Two Byte Integer"
    FOUR_BYTE_INTEGER = "Four Byte Integer"
    VARIABLE_BYTE_INTEGER = "Variable Byte Integer"
    UTF8_STRING = "UTF-8 Encoded String"
    BINARY_DATA = "Binary Data"
    UTF8_STRING_PAIR = "UTF-8 String Pair"


def _zero_or_one(value: Any) -> str | None:
    return None if value in (0, 1) else f"must be 0 or 1, not {value}"


def _not_zero(value: Any) -> str | None:
    return None if value != 0 else "must not be 0"


def _subscription_identifier(value: Any) -> str | None:
    if 1 <= value <= MAX_VARIABLE_BYTE_INTEGER:
        return None
    return f"must be 1..{MAX_VARIABLE_BYTE_INTEGER}, not {value}"


def _topic_name(value: Any) -> str | None:
    if not value:
        return "must not be empty"
    if "+" in value or "#" in value:
        return f"must be a topic name without wildcards, not {value!r}"
    return None


@attrs.frozen
class PropertySpec:
    """One row of the property table."""

    id: PropertyId
    #: attribute name on :class:`Properties`
    name: str
    wire_type: WireType
    #: packet types (and :data:`WILL`) that may carry the property
    contexts: frozenset[int]
    #: contexts in which it may appear more than once
    repeatable_in: frozenset[int] = frozenset()
    #: value rule: returns what is wrong (a Protocol Error), or None
    check: Callable[[Any], str | None] | None = None

    @property
    def repeatable(self) -> bool:
        return bool(self.repeatable_in)


_P = PacketType
_W = WireType
_PUBLISH_WILL = frozenset({_P.PUBLISH, WILL})
_ALL_WITH_REASON_STRING = frozenset(
    {
        _P.CONNACK,
        _P.PUBACK,
        _P.PUBREC,
        _P.PUBREL,
        _P.PUBCOMP,
        _P.SUBACK,
        _P.UNSUBACK,
        _P.DISCONNECT,
        _P.AUTH,
    }
)
_ALL_WITH_USER_PROPERTY = _ALL_WITH_REASON_STRING | {
    _P.CONNECT,
    _P.PUBLISH,
    _P.SUBSCRIBE,
    _P.UNSUBSCRIBE,
    WILL,
}


def _spec(
    ident: PropertyId,
    wire_type: WireType,
    contexts: frozenset[int] | set[int],
    *,
    repeatable_in: frozenset[int] | set[int] = frozenset(),
    check: Callable[[Any], str | None] | None = None,
) -> PropertySpec:
    name = ident.name.lower()
    if ident is PropertyId.USER_PROPERTY:
        name = "user_properties"
    elif ident is PropertyId.SUBSCRIPTION_IDENTIFIER:
        name = "subscription_identifiers"
    return PropertySpec(
        ident, name, wire_type, frozenset(contexts), frozenset(repeatable_in), check
    )


_I = PropertyId
#: property identifier -> its row, in identifier order (Table 2-4).
PROPERTY_SPECS: Final[Mapping[PropertyId, PropertySpec]] = MappingProxyType(
    {
        spec.id: spec
        for spec in (
            _spec(_I.PAYLOAD_FORMAT_INDICATOR, _W.BYTE, _PUBLISH_WILL, check=_zero_or_one),
            _spec(_I.MESSAGE_EXPIRY_INTERVAL, _W.FOUR_BYTE_INTEGER, _PUBLISH_WILL),
            _spec(_I.CONTENT_TYPE, _W.UTF8_STRING, _PUBLISH_WILL),
            _spec(_I.RESPONSE_TOPIC, _W.UTF8_STRING, _PUBLISH_WILL, check=_topic_name),
            _spec(_I.CORRELATION_DATA, _W.BINARY_DATA, _PUBLISH_WILL),
            _spec(
                _I.SUBSCRIPTION_IDENTIFIER,
                _W.VARIABLE_BYTE_INTEGER,
                {_P.PUBLISH, _P.SUBSCRIBE},
                repeatable_in={_P.PUBLISH},
                check=_subscription_identifier,
            ),
            _spec(
                _I.SESSION_EXPIRY_INTERVAL,
                _W.FOUR_BYTE_INTEGER,
                {_P.CONNECT, _P.CONNACK, _P.DISCONNECT},
            ),
            _spec(_I.ASSIGNED_CLIENT_IDENTIFIER, _W.UTF8_STRING, {_P.CONNACK}),
            _spec(_I.SERVER_KEEP_ALIVE, _W.TWO_BYTE_INTEGER, {_P.CONNACK}),
            _spec(_I.AUTHENTICATION_METHOD, _W.UTF8_STRING, {_P.CONNECT, _P.CONNACK, _P.AUTH}),
            _spec(_I.AUTHENTICATION_DATA, _W.BINARY_DATA, {_P.CONNECT, _P.CONNACK, _P.AUTH}),
            _spec(_I.REQUEST_PROBLEM_INFORMATION, _W.BYTE, {_P.CONNECT}, check=_zero_or_one),
            _spec(_I.WILL_DELAY_INTERVAL, _W.FOUR_BYTE_INTEGER, {WILL}),
            _spec(_I.REQUEST_RESPONSE_INFORMATION, _W.BYTE, {_P.CONNECT}, check=_zero_or_one),
            _spec(_I.RESPONSE_INFORMATION, _W.UTF8_STRING, {_P.CONNACK}),
            _spec(_I.SERVER_REFERENCE, _W.UTF8_STRING, {_P.CONNACK, _P.DISCONNECT}),
            _spec(_I.REASON_STRING, _W.UTF8_STRING, _ALL_WITH_REASON_STRING),
            _spec(
                _I.RECEIVE_MAXIMUM,
                _W.TWO_BYTE_INTEGER,
                {_P.CONNECT, _P.CONNACK},
                check=_not_zero,
            ),
            _spec(_I.TOPIC_ALIAS_MAXIMUM, _W.TWO_BYTE_INTEGER, {_P.CONNECT, _P.CONNACK}),
            _spec(_I.TOPIC_ALIAS, _W.TWO_BYTE_INTEGER, {_P.PUBLISH}),
            _spec(_I.MAXIMUM_QOS, _W.BYTE, {_P.CONNACK}, check=_zero_or_one),
            _spec(_I.RETAIN_AVAILABLE, _W.BYTE, {_P.CONNACK}, check=_zero_or_one),
            _spec(
                _I.USER_PROPERTY,
                _W.UTF8_STRING_PAIR,
                _ALL_WITH_USER_PROPERTY,
                repeatable_in=_ALL_WITH_USER_PROPERTY,
            ),
            _spec(
                _I.MAXIMUM_PACKET_SIZE,
                _W.FOUR_BYTE_INTEGER,
                {_P.CONNECT, _P.CONNACK},
                check=_not_zero,
            ),
            _spec(_I.WILDCARD_SUBSCRIPTION_AVAILABLE, _W.BYTE, {_P.CONNACK}, check=_zero_or_one),
            _spec(_I.SUBSCRIPTION_IDENTIFIER_AVAILABLE, _W.BYTE, {_P.CONNACK}, check=_zero_or_one),
            _spec(_I.SHARED_SUBSCRIPTION_AVAILABLE, _W.BYTE, {_P.CONNACK}, check=_zero_or_one),
        )
    }
)

# Indexed by the identifier byte; None for bytes that name no property.
_BY_INT: Final[dict[int, PropertySpec]] = {int(i): spec for i, spec in PROPERTY_SPECS.items()}
_SPECS_BY_BYTE: Final[tuple[PropertySpec | None, ...]] = tuple(_BY_INT.get(i) for i in range(256))


def _tuple_of_ints(value: Any) -> tuple[int, ...]:
    return tuple(value)


def _tuple_of_pairs(value: Any) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in value)


@attrs.frozen(repr=False)
class Properties:
    """The MQTT 5 properties of one packet (or of a Will); None means absent.

    ``subscription_identifiers`` and ``user_properties`` are tuples because they
    may repeat; user properties keep their order and may repeat names
    (§3.1.2.11.8). Which properties a packet may carry is checked when a packet
    is encoded or decoded, not here.
    """

    payload_format_indicator: int | None = None
    message_expiry_interval: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    subscription_identifiers: tuple[int, ...] = attrs.field(default=(), converter=_tuple_of_ints)
    session_expiry_interval: int | None = None
    assigned_client_identifier: str | None = None
    server_keep_alive: int | None = None
    authentication_method: str | None = None
    authentication_data: bytes | None = None
    request_problem_information: int | None = None
    will_delay_interval: int | None = None
    request_response_information: int | None = None
    response_information: str | None = None
    server_reference: str | None = None
    reason_string: str | None = None
    receive_maximum: int | None = None
    topic_alias_maximum: int | None = None
    topic_alias: int | None = None
    maximum_qos: int | None = None
    retain_available: int | None = None
    user_properties: tuple[tuple[str, str], ...] = attrs.field(
        default=(), converter=_tuple_of_pairs
    )
    maximum_packet_size: int | None = None
    wildcard_subscription_available: int | None = None
    subscription_identifier_available: int | None = None
    shared_subscription_available: int | None = None

    def __repr__(self) -> str:
        present = (
            f"{field.name}={getattr(self, field.name)!r}"
            for field in attrs.fields(Properties)
            if getattr(self, field.name) not in (None, ())
        )
        return f"Properties({', '.join(present)})"


#: The empty property block; decoders return this very object for "no properties".
NO_PROPERTIES: Final = Properties()

_MAX_BY_WIRE_TYPE: Final = {
    WireType.BYTE: 0xFF,
    WireType.TWO_BYTE_INTEGER: 0xFFFF,
    WireType.FOUR_BYTE_INTEGER: 0xFFFF_FFFF,
    WireType.VARIABLE_BYTE_INTEGER: MAX_VARIABLE_BYTE_INTEGER,
}


def _read_value(reader: Reader, wire_type: WireType, what: str) -> Any:
    if wire_type is WireType.BYTE:
        return reader.u8(what)
    if wire_type is WireType.TWO_BYTE_INTEGER:
        return reader.u16(what)
    if wire_type is WireType.FOUR_BYTE_INTEGER:
        return reader.u32(what)
    if wire_type is WireType.VARIABLE_BYTE_INTEGER:
        return reader.varint(what)
    if wire_type is WireType.UTF8_STRING:
        return reader.utf8(what)
    if wire_type is WireType.BINARY_DATA:
        return reader.binary(what)
    return (reader.utf8(what), reader.utf8(what))


def decode_properties(buf: bytes, pos: int, end: int, context: int) -> tuple[Properties, int]:
    """Decode the property block at ``buf[pos:end]``; return ``(properties, new_pos)``."""
    length, pos = read_varint(buf, pos, end, "the property length")
    if length == 0:
        return NO_PROPERTIES, pos
    stop = pos + length
    if stop > end:
        raise malformed("the property length runs past the end of the packet")
    reader = Reader(buf, pos, stop)
    values: dict[str, Any] = {}
    while reader.pos < stop:
        ident = buf[reader.pos]
        reader.pos += 1
        spec = _SPECS_BY_BYTE[ident]
        if spec is None:
            raise malformed(f"unknown property identifier 0x{ident:02X}")
        if context not in spec.contexts:
            raise malformed(f"property {spec.id.name} is not valid in {context_name(context)}")
        value = _read_value(reader, spec.wire_type, spec.id.name)
        if spec.check is not None:
            problem = spec.check(value)
            if problem is not None:
                raise protocol_error(f"property {spec.id.name} {problem}")
        if spec.repeatable:
            if spec.name in values:
                if context not in spec.repeatable_in:
                    raise protocol_error(
                        f"property {spec.id.name} appears more than once in {context_name(context)}"
                    )
                values[spec.name].append(value)
            else:
                values[spec.name] = [value]
        elif spec.name in values:
            raise protocol_error(
                f"property {spec.id.name} appears more than once in {context_name(context)}"
            )
        else:
            values[spec.name] = value
    return Properties(**values), stop


_ORDERED_SPECS: Final = tuple(PROPERTY_SPECS.values())
assert {spec.name for spec in _ORDERED_SPECS} == {a.name for a in attrs.fields(Properties)}


def _encode_value(spec: PropertySpec, value: Any) -> bytes:
    wire_type = spec.wire_type
    if wire_type is WireType.UTF8_STRING:
        return encode_utf8(value)
    if wire_type is WireType.BINARY_DATA:
        return encode_binary(value)
    if wire_type is WireType.UTF8_STRING_PAIR:
        key, val = value
        return encode_utf8(key) + encode_utf8(val)
    if not isinstance(value, int) or not 0 <= value <= _MAX_BY_WIRE_TYPE[wire_type]:
        raise malformed(f"property {spec.id.name} value {value!r} is not a {wire_type.value}")
    if wire_type is WireType.BYTE:
        return bytes((value,))
    if wire_type is WireType.TWO_BYTE_INTEGER:
        return U16.pack(value)
    if wire_type is WireType.FOUR_BYTE_INTEGER:
        return U32.pack(value)
    return encode_varint(value)


def encode_properties(properties: Properties, context: int) -> bytes:
    """Encode a property block (length included) for a packet type or :data:`WILL`.

    Raises :class:`MQTTProtocolError` for a property the context may not carry
    (0x81), a repetition it does not allow or a forbidden value (0x82).
    """
    if properties is NO_PROPERTIES:
        return b"\x00"
    parts: list[bytes] = []
    for spec in _ORDERED_SPECS:
        value = getattr(properties, spec.name)
        if value is None or value == ():
            continue
        if context not in spec.contexts:
            raise malformed(f"property {spec.id.name} is not valid in {context_name(context)}")
        values = value if spec.repeatable else (value,)
        if len(values) > 1 and context not in spec.repeatable_in:
            raise protocol_error(
                f"property {spec.id.name} may appear only once in {context_name(context)}"
            )
        ident = bytes((spec.id,))
        for item in values:
            encoded = _encode_value(spec, item)
            if spec.check is not None:
                problem = spec.check(item)
                if problem is not None:
                    raise protocol_error(f"property {spec.id.name} {problem}")
            parts.append(ident)
            parts.append(encoded)
    body = b"".join(parts)
    return encode_varint(len(body)) + body
