"""Hypothesis strategies for valid MQTT packets at each protocol level.

"Valid" means what a strict peer accepts: a packet drawn here at a level must
encode at that level and decode back equal. v5-only parts are drawn only at
level 5, because encoding at levels 3 and 4 leaves them out.
"""

from __future__ import annotations

from typing import Any

import attrs
from hypothesis import strategies as st

from tidelog.protocols.mqtt import (
    NO_PROPERTIES,
    PROPERTY_SPECS,
    WILL,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    Pingreq,
    Pingresp,
    Properties,
    PropertyId,
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
from tidelog.protocols.mqtt.properties import WireType
from tidelog.protocols.mqtt.reason_codes import REASON_CODES_BY_PACKET, V3_TO_V5_CONNACK

LEVELS = (3, 4, 5)

# Well-formed MQTT text: UTF-8 encodable (no lone surrogates), no U+0000.
_chars = st.characters(codec="utf-8", exclude_characters="\x00")
text = st.text(_chars, max_size=12)
_level_chars = st.characters(codec="utf-8", exclude_characters="\x00+#/")
_level = st.text(_level_chars, max_size=6)

topic_names = st.lists(_level, min_size=1, max_size=4).map("/".join).filter(bool)


def _filter_level() -> st.SearchStrategy[str]:
    return st.one_of(_level, st.just("+"))


_plain_filters = st.builds(
    lambda levels, hash_: "/".join(levels + (["#"] if hash_ else [])),
    st.lists(_filter_level(), min_size=0, max_size=4),
    st.booleans(),
).filter(bool)
_shared_filters = st.builds(
    lambda group, inner: f"$share/{group}/{inner}",
    st.text(_level_chars, min_size=1, max_size=5),
    _plain_filters,
)
topic_filters = st.one_of(_plain_filters, _plain_filters, _shared_filters)

packet_ids = st.integers(1, 65_535)


def _value(ident: PropertyId, wire_type: WireType) -> st.SearchStrategy[Any]:
    spec = PROPERTY_SPECS[ident]
    if wire_type is WireType.BYTE:
        return st.sampled_from([0, 1]) if spec.check is not None else st.integers(0, 255)
    if wire_type is WireType.TWO_BYTE_INTEGER:
        low = 1 if ident is PropertyId.RECEIVE_MAXIMUM else 0
        return st.integers(low, 0xFFFF)
    if wire_type is WireType.FOUR_BYTE_INTEGER:
        low = 1 if ident is PropertyId.MAXIMUM_PACKET_SIZE else 0
        return st.integers(low, 0xFFFF_FFFF)
    if wire_type is WireType.VARIABLE_BYTE_INTEGER:
        return st.integers(1, 268_435_455)
    if wire_type is WireType.UTF8_STRING:
        return topic_names if ident is PropertyId.RESPONSE_TOPIC else text
    if wire_type is WireType.BINARY_DATA:
        return st.binary(max_size=12)
    return st.tuples(text, text)


def properties(context: int) -> st.SearchStrategy[Properties]:
    """Any valid property block for a packet type (or WILL)."""
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for ident, spec in PROPERTY_SPECS.items():
        if context not in spec.contexts:
            continue
        value = _value(ident, spec.wire_type)
        if spec.repeatable:
            max_size = 3 if context in spec.repeatable_in else 1
            fields[spec.name] = st.lists(value, max_size=max_size)
        else:
            fields[spec.name] = st.none() | value

    def build(values: dict[str, Any]) -> Properties:
        if values.get("authentication_data") is not None and not values.get(
            "authentication_method"
        ):
            values["authentication_method"] = "method"
        result = Properties(**values)
        return NO_PROPERTIES if result == NO_PROPERTIES else result

    return st.one_of(st.just(NO_PROPERTIES), st.fixed_dictionaries({}, optional=fields).map(build))


def _props(level: int, context: int) -> st.SearchStrategy[Properties]:
    return properties(context) if level == 5 else st.just(NO_PROPERTIES)


def _codes(packet_type: PacketType) -> st.SearchStrategy[Any]:
    return st.sampled_from(sorted(REASON_CODES_BY_PACKET[packet_type]))


@st.composite
def connects(draw: st.DrawFn, level: int) -> Connect:
    client_id = draw(st.text(_chars, min_size=1, max_size=23) if level == 3 else text)
    clean_start = draw(st.booleans()) or (level == 4 and not client_id)
    username = draw(st.none() | text)
    password = draw(st.none() | st.binary(max_size=12))
    if level < 5 and username is None:
        password = None
    will = draw(
        st.none()
        | st.builds(
            Will,
            topic_names,
            st.binary(max_size=20),
            st.integers(0, 2),
            st.booleans(),
            _props(level, WILL),
        )
    )
    return Connect(
        client_id,
        level,
        clean_start,
        draw(st.integers(0, 65_535)),
        username,
        password,
        will,
        draw(_props(level, PacketType.CONNECT)),
    )


@st.composite
def connacks(draw: st.DrawFn, level: int) -> Connack:
    if level < 5:
        code = draw(st.sampled_from(sorted(V3_TO_V5_CONNACK.values())))
    else:
        code = draw(_codes(PacketType.CONNACK))
    session_present = level != 3 and code < 0x80 and draw(st.booleans())
    return Connack(code, session_present, draw(_props(level, PacketType.CONNACK)))


@st.composite
def publishes(draw: st.DrawFn, level: int) -> Publish:
    qos = draw(st.integers(0, 2))
    props = draw(_props(level, PacketType.PUBLISH))
    topic = draw(topic_names)
    if props.topic_alias is not None and draw(st.booleans()):
        topic = ""
    return Publish(
        topic,
        draw(st.binary(max_size=64)),
        qos,
        draw(st.booleans()),
        qos > 0 and draw(st.booleans()),
        draw(packet_ids) if qos else None,
        props,
    )


def _acks(cls: type[Puback | Pubrec | Pubrel | Pubcomp], level: int) -> st.SearchStrategy[Packet]:
    if level < 5:
        return st.builds(cls, packet_ids)
    return st.builds(cls, packet_ids, _codes(cls.packet_type), properties(cls.packet_type))


@st.composite
def subscriptions(draw: st.DrawFn, level: int) -> Subscription:
    topic_filter = draw(topic_filters)
    qos = draw(st.integers(0, 2))
    if level < 5:
        return Subscription(topic_filter, qos)
    shared = topic_filter.startswith("$share/")
    return Subscription(
        topic_filter,
        qos,
        not shared and draw(st.booleans()),
        draw(st.booleans()),
        draw(st.integers(0, 2)),
    )


def subscribes(level: int) -> st.SearchStrategy[Packet]:
    return st.builds(
        Subscribe,
        packet_ids,
        st.lists(subscriptions(level), min_size=1, max_size=4),
        _props(level, PacketType.SUBSCRIBE),
    )


def subacks(level: int) -> st.SearchStrategy[Packet]:
    codes = st.sampled_from([0, 1, 2, 0x80]) if level < 5 else _codes(PacketType.SUBACK)
    return st.builds(
        Suback,
        packet_ids,
        st.lists(codes, min_size=1, max_size=4),
        _props(level, PacketType.SUBACK),
    )


def unsubscribes(level: int) -> st.SearchStrategy[Packet]:
    return st.builds(
        Unsubscribe,
        packet_ids,
        st.lists(topic_filters, min_size=1, max_size=4),
        _props(level, PacketType.UNSUBSCRIBE),
    )


def unsubacks(level: int) -> st.SearchStrategy[Packet]:
    if level < 5:
        return st.builds(Unsuback, packet_ids)
    return st.builds(
        Unsuback,
        packet_ids,
        st.lists(_codes(PacketType.UNSUBACK), min_size=1, max_size=4),
        properties(PacketType.UNSUBACK),
    )


def disconnects(level: int) -> st.SearchStrategy[Packet]:
    if level < 5:
        return st.just(Disconnect())
    return st.builds(Disconnect, _codes(PacketType.DISCONNECT), properties(PacketType.DISCONNECT))


def auths() -> st.SearchStrategy[Packet]:
    return st.builds(Auth, _codes(PacketType.AUTH), properties(PacketType.AUTH))


def _without_subscription_identifiers(packet: Publish) -> Publish:
    if not packet.properties.subscription_identifiers:
        return packet
    properties = attrs.evolve(packet.properties, subscription_identifiers=())
    if properties == NO_PROPERTIES:
        properties = NO_PROPERTIES
    return attrs.evolve(packet, properties=properties)


def packets_of(
    packet_type: PacketType, level: int, *, from_client: bool = False
) -> st.SearchStrategy[Packet]:
    """Valid packets of one type at one level (as a client sends them, if ``from_client``)."""
    if packet_type is PacketType.PUBLISH and from_client:
        return publishes(level).map(_without_subscription_identifiers)
    p = PacketType
    table: dict[PacketType, Any] = {
        p.CONNECT: lambda: connects(level),
        p.CONNACK: lambda: connacks(level),
        p.PUBLISH: lambda: publishes(level),
        p.PUBACK: lambda: _acks(Puback, level),
        p.PUBREC: lambda: _acks(Pubrec, level),
        p.PUBREL: lambda: _acks(Pubrel, level),
        p.PUBCOMP: lambda: _acks(Pubcomp, level),
        p.SUBSCRIBE: lambda: subscribes(level),
        p.SUBACK: lambda: subacks(level),
        p.UNSUBSCRIBE: lambda: unsubscribes(level),
        p.UNSUBACK: lambda: unsubacks(level),
        p.PINGREQ: lambda: st.just(Pingreq()),
        p.PINGRESP: lambda: st.just(Pingresp()),
        p.DISCONNECT: lambda: disconnects(level),
        p.AUTH: auths,
    }
    strategy: st.SearchStrategy[Packet] = table[packet_type]()
    return strategy
