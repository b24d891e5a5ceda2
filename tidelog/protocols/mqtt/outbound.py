"""Building outgoing PUBLISH bytes cheaply, and the conversions between MQTT 5
properties and the properties stored with an event.

The server sends the same event to many connections. What does not depend on
the connection is computed once and shared: the encoded topic name (a small
cache by topic) and, for deliveries without per-subscriber properties,
everything but the payload at QoS 0 and everything but the packet identifier
and the payload at QoS 1/2 (small caches by topic, payload length, level, QoS
and retain: the head is the same for every event that shares them, so a
fan-out to 100 connections encodes it once, and a catch-up from the log, whose
events are read fresh for one connection, finds the head of the event before
it on the same topic with the same length). A delivery is a few byte chunks that
the connection's writer joins with everything else it sends in one
``send_all``, so the payload is copied once, into the send buffer.
"""

from __future__ import annotations

from typing import Final

from tidelog.protocols.mqtt.properties import NO_PROPERTIES, encode_properties
from tidelog.protocols.mqtt.properties import Properties as MQTTProperties
from tidelog.protocols.mqtt.protocol import PacketType
from tidelog.protocols.mqtt.wire import U16, encode_varint
from tidelog.storage import Event
from tidelog.storage import Properties as EventProperties
from tidelog.storage.base import Clock, wall_clock_ms

_TOPIC_CACHE_SIZE: Final = 16_384
_SHARED_CACHE_SIZE: Final = 4096

_topic_parts: dict[str, bytes] = {}
_shared_qos0: dict[tuple[str, int, int, bool], bytes] = {}
"""(topic, payload length, level, retain) -> the QoS 0 PUBLISH without its payload."""
_shared_heads: dict[tuple[str, int, int, int, bool], tuple[bytes, bytes, int]] = {}
"""(topic, payload length, level, QoS, retain) -> what :func:`shared_head` returns.

Neither cache holds an event, so neither keeps a payload alive (keyed by event,
4096 entries of 64 KiB payloads kept 256 MiB alive after delivery, issue 19);
each is emptied at :data:`_SHARED_CACHE_SIZE` entries."""


def topic_part(topic: str) -> bytes:
    """The topic name as it appears in a PUBLISH: two length bytes, then UTF-8."""
    part = _topic_parts.get(topic)
    if part is None:
        raw = topic.encode()
        part = U16.pack(len(raw)) + raw
        if len(_topic_parts) >= _TOPIC_CACHE_SIZE:
            _topic_parts.clear()
        _topic_parts[topic] = part
    return part


EMPTY_TOPIC: Final = b"\x00\x00"
"""The topic name of a PUBLISH that uses a known topic alias."""
_NO_PROPERTY_BLOCK: Final = b"\x00"


def publish_chunks(
    topic: bytes,
    payload: bytes,
    qos: int,
    retain: bool,
    dup: bool,
    packet_id: int,
    properties: bytes,
) -> list[bytes]:
    """The chunks of one PUBLISH; ``properties`` is b"" before MQTT 5."""
    first = 0x30 | (qos << 1) | (1 if retain else 0) | (8 if dup else 0)
    if qos:
        remaining = len(topic) + 2 + len(properties) + len(payload)
        return [
            bytes((first,)) + encode_varint(remaining) + topic + U16.pack(packet_id) + properties,
            payload,
        ]
    remaining = len(topic) + len(properties) + len(payload)
    return [bytes((first,)) + encode_varint(remaining) + topic + properties, payload]


def shared_qos0(event: Event, level: int, retain: bool) -> list[bytes]:
    """A QoS 0 PUBLISH of ``event`` without per-subscriber properties: its head
    (shared by every event and connection with the same topic, payload length,
    level and retain flag) and its payload."""
    payload = event.payload
    key = (event.topic, len(payload), level, retain)
    head = _shared_qos0.get(key)
    if head is None:
        props = _NO_PROPERTY_BLOCK if level == 5 else b""
        head = publish_chunks(topic_part(event.topic), payload, 0, retain, False, 0, props)[0]
        if len(_shared_qos0) >= _SHARED_CACHE_SIZE:
            _shared_qos0.clear()
        _shared_qos0[key] = head
    return [head, payload]


def shared_head(event: Event, level: int, qos: int, retain: bool) -> tuple[bytes, bytes, int]:
    """A QoS 1/2 PUBLISH of ``event`` without per-subscriber properties, not resent
    (DUP clear), encoded once for every connection that sends it at this level:
    ``(head, properties, size)``. The packet is ``head``, the packet identifier
    (two bytes), ``properties`` (b"" before MQTT 5), then the payload; ``size`` is
    the whole packet's length."""
    name = event.topic
    payload_size = len(event.payload)
    key = (name, payload_size, level, qos, retain)
    entry = _shared_heads.get(key)
    if entry is not None:
        return entry
    props = _NO_PROPERTY_BLOCK if level == 5 else b""
    topic = topic_part(name)
    remaining = len(topic) + 2 + len(props) + payload_size
    head = bytes((0x30 | (qos << 1) | (1 if retain else 0),)) + encode_varint(remaining) + topic
    if len(_shared_heads) >= _SHARED_CACHE_SIZE:
        _shared_heads.clear()
    entry = _shared_heads[key] = (head, props, len(head) + remaining - len(topic))
    return entry


def chunks_size(chunks: list[bytes]) -> int:
    return sum(len(chunk) for chunk in chunks)


def event_properties(properties: MQTTProperties) -> EventProperties | None:
    """The message properties of a received PUBLISH (or Will) as stored with the event."""
    if properties is NO_PROPERTIES:
        return None
    p = properties
    if (
        p.payload_format_indicator is None
        and p.message_expiry_interval is None
        and p.content_type is None
        and p.response_topic is None
        and p.correlation_data is None
        and not p.user_properties
    ):
        return None
    return EventProperties(
        payload_format=p.payload_format_indicator,
        message_expiry=p.message_expiry_interval,
        content_type=p.content_type,
        response_topic=p.response_topic,
        correlation_data=p.correlation_data,
        user_properties=p.user_properties,
    )


def expired(event: Event, clock: Clock = wall_clock_ms) -> bool:
    """Whether the event's Message Expiry Interval has passed on the broker's ``clock``
    (§3.3.2.3.3: a copy not yet sent is then deleted, whichever queue holds it)."""
    props = event.properties
    if props is None or props.message_expiry is None:
        return False
    return event.timestamp + props.message_expiry * 1000 <= clock()


def delivery_properties(
    event: Event,
    subscription_ids: tuple[int, ...],
    topic_alias: int | None,
    clock: Clock = wall_clock_ms,
) -> bytes:
    """The encoded MQTT 5 property block of a delivered PUBLISH.

    The Message Expiry Interval sent is what remains of it (§3.3.2.3.3), on the
    broker's ``clock`` (ms since the epoch, the clock that stamped the event).
    """
    stored = event.properties
    if stored is None:
        if not subscription_ids and topic_alias is None:
            return _NO_PROPERTY_BLOCK
        return encode_properties(
            MQTTProperties(subscription_identifiers=subscription_ids, topic_alias=topic_alias),
            PacketType.PUBLISH,
        )
    expiry = stored.message_expiry
    if expiry is not None:
        waited = (clock() - event.timestamp) // 1000
        expiry = max(0, expiry - max(0, waited))
    return encode_properties(
        MQTTProperties(
            payload_format_indicator=stored.payload_format,
            message_expiry_interval=expiry,
            content_type=stored.content_type,
            response_topic=stored.response_topic,
            correlation_data=stored.correlation_data,
            user_properties=stored.user_properties,
            subscription_identifiers=subscription_ids,
            topic_alias=topic_alias,
        ),
        PacketType.PUBLISH,
    )
