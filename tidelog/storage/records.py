"""Events and their compact, versioned binary record format.

An event is immutable: ``offset`` (dense per log, from 0), ``timestamp`` (ms
since the epoch, assigned on append, never decreasing within a log), ``topic``,
``payload``, ``qos``, ``retain`` and optional MQTT 5 style ``properties``.

Record format, version 1 (the offset is the record's key, not part of it)::

    byte 0      format version (1)
    byte 1      flags: bits 0-1 qos, bit 2 retain, bit 3 properties present
    bytes 2-9   timestamp, unsigned 64-bit big-endian, ms since the epoch
    bytes 10-11 topic length T, unsigned 16-bit big-endian
    T bytes     topic, UTF-8
    if bit 3:   properties length P (unsigned 32-bit big-endian), then P bytes
                of properties: a tag byte (the MQTT 5 property identifier)
                followed by the value: 0x01 payload format (1 byte),
                0x02 message expiry (4 bytes), 0x03 content type,
                0x08 response topic, 0x09 correlation data (each a 16-bit length
                and bytes), 0x26 user property (two such strings)
    rest        payload

A reader that meets an unknown version byte raises :class:`CorruptLogError`;
new versions are added beside version 1, never by changing it.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterable
from typing import Any

import attrs

from tidelog.errors import CorruptLogError

FORMAT_VERSION = 1

_HEADER = struct.Struct(">BBQH")
HEADER_SIZE = _HEADER.size
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")

_QOS_MASK = 0x03
_RETAIN = 0x04
_HAS_PROPERTIES = 0x08

_PAYLOAD_FORMAT = 0x01
_MESSAGE_EXPIRY = 0x02
_CONTENT_TYPE = 0x03
_RESPONSE_TOPIC = 0x08
_CORRELATION_DATA = 0x09
_USER_PROPERTY = 0x26


def _user_properties(value: Iterable[tuple[str, str]] | None) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in value or ())


@attrs.frozen
class Properties:
    """MQTT 5 style message properties carried with an event (all optional)."""

    payload_format: int | None = None
    """0: unspecified bytes, 1: UTF-8 text (MQTT 5 Payload Format Indicator)."""
    message_expiry: int | None = None
    """Seconds after publication at which the message is no longer delivered."""
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    user_properties: tuple[tuple[str, str], ...] = attrs.field(
        default=(), converter=_user_properties
    )

    def to_dict(self) -> dict[str, Any]:
        """The set fields as a JSON-friendly dict (correlation data stays bytes)."""
        out: dict[str, Any] = {}
        for field in attrs.fields(Properties):
            value = getattr(self, field.name)
            if value is not None and value != ():
                out[field.name] = (
                    [list(p) for p in value] if field.name == "user_properties" else value
                )
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Properties:
        """Build from :meth:`to_dict`'s shape; unknown keys raise ``ValueError``."""
        known = {field.name for field in attrs.fields(Properties)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown properties: {', '.join(sorted(unknown))}")
        return cls(**data)


# NewEvent and Event are values: never mutate one after creating it. They are
# not ``frozen`` because a frozen attrs __init__ costs 2.6x a plain one (834 ns
# against 322 ns per event on the 2-core CI machine), and the log creates one
# Event per record it reads.


@attrs.define(slots=True)
class NewEvent:
    """An event to append: the log assigns its offset and timestamp."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties | None = None


@attrs.define(slots=True)
class Event:
    """A stored event."""

    offset: int
    timestamp: int
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties | None = None


def encode_properties(props: Properties) -> bytes:
    """Encode properties as the tagged block described in the module docstring."""
    out = bytearray()
    if props.payload_format is not None:
        out += bytes((_PAYLOAD_FORMAT, props.payload_format))
    if props.message_expiry is not None:
        out.append(_MESSAGE_EXPIRY)
        out += _U32.pack(props.message_expiry)
    for tag, text in (
        (_CONTENT_TYPE, props.content_type),
        (_RESPONSE_TOPIC, props.response_topic),
    ):
        if text is not None:
            raw = text.encode("utf-8")
            out.append(tag)
            out += _U16.pack(len(raw)) + raw
    if props.correlation_data is not None:
        out.append(_CORRELATION_DATA)
        out += _U16.pack(len(props.correlation_data)) + props.correlation_data
    for key, value in props.user_properties:
        k, v = key.encode("utf-8"), value.encode("utf-8")
        out.append(_USER_PROPERTY)
        out += _U16.pack(len(k)) + k + _U16.pack(len(v)) + v
    return bytes(out)


def decode_properties(data: bytes | memoryview) -> Properties:
    """Inverse of :func:`encode_properties`; raises :class:`CorruptLogError`."""
    fields: dict[str, Any] = {}
    users: list[tuple[str, str]] = []
    pos, end = 0, len(data)
    try:
        while pos < end:
            tag = data[pos]
            pos += 1
            if tag == _PAYLOAD_FORMAT:
                fields["payload_format"] = data[pos]
                pos += 1
            elif tag == _MESSAGE_EXPIRY:
                fields["message_expiry"] = _U32.unpack_from(data, pos)[0]
                pos += 4
            elif tag in (_CONTENT_TYPE, _RESPONSE_TOPIC, _CORRELATION_DATA):
                (size,) = _U16.unpack_from(data, pos)
                raw = bytes(data[pos + 2 : pos + 2 + size])
                if len(raw) != size:
                    raise CorruptLogError("truncated property value")
                pos += 2 + size
                if tag == _CORRELATION_DATA:
                    fields["correlation_data"] = raw
                else:
                    name = "content_type" if tag == _CONTENT_TYPE else "response_topic"
                    fields[name] = raw.decode("utf-8")
            elif tag == _USER_PROPERTY:
                pair = []
                for _ in range(2):
                    (size,) = _U16.unpack_from(data, pos)
                    pair.append(bytes(data[pos + 2 : pos + 2 + size]).decode("utf-8"))
                    pos += 2 + size
                users.append((pair[0], pair[1]))
            else:
                raise CorruptLogError(f"unknown property tag 0x{tag:02x}")
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise CorruptLogError(f"malformed properties: {exc}") from exc
    if pos != end:
        raise CorruptLogError("truncated properties")
    return Properties(**fields, user_properties=users)


def encode_record(event: NewEvent, timestamp: int) -> bytes:
    """Encode ``event`` with its assigned ``timestamp`` as a version 1 record."""
    topic = event.topic.encode("utf-8")
    flags = (event.qos & _QOS_MASK) | (_RETAIN if event.retain else 0)
    if event.properties is None:
        return _HEADER.pack(FORMAT_VERSION, flags, timestamp, len(topic)) + topic + event.payload
    props = encode_properties(event.properties)
    return b"".join(
        (
            _HEADER.pack(FORMAT_VERSION, flags | _HAS_PROPERTIES, timestamp, len(topic)),
            topic,
            _U32.pack(len(props)),
            props,
            event.payload,
        )
    )


_topic_bytes_cache: dict[str, bytes] = {}


def encode_records(events: Iterable[NewEvent], timestamp: int) -> list[bytes]:
    """Encode a batch sharing one ``timestamp``; the same bytes as :func:`encode_record`.

    The append hot path: no function call per event for events without
    properties, and each topic is encoded to UTF-8 once (logs repeat a few
    topics). Does not validate topics or QoS; :func:`~tidelog.storage.common.encode_batch`
    does.
    """
    pack = _HEADER.pack
    cache = _topic_bytes_cache
    records: list[bytes] = []
    append = records.append
    for event in events:
        topic = event.topic
        raw = cache.get(topic)
        if raw is None:
            raw = topic.encode("utf-8")
            if len(cache) < 100_000:
                cache[topic] = raw
        if event.properties is None:
            flags = (event.qos & _QOS_MASK) | (_RETAIN if event.retain else 0)
            append(pack(FORMAT_VERSION, flags, timestamp, len(raw)) + raw + event.payload)
        else:
            append(encode_record(event, timestamp))
    return records


_topic_cache: dict[bytes, str] = {}


def _topic_str(raw: bytes) -> str:
    """Decode a topic, interning it: logs repeat a few topics millions of times."""
    topic = _topic_cache.get(raw)
    if topic is None:
        topic = raw.decode("utf-8")
        if len(_topic_cache) < 100_000:
            _topic_cache[raw] = topic
    return topic


def decode_record(offset: int, data: bytes) -> Event:
    """Decode one record stored at ``offset``; raises :class:`CorruptLogError`."""
    try:
        version, flags, timestamp, topic_len = _HEADER.unpack_from(data)
        if version != FORMAT_VERSION:
            raise CorruptLogError(f"record {offset}: unknown format version {version}")
        pos = HEADER_SIZE + topic_len
        topic_raw = data[HEADER_SIZE:pos]
        if len(topic_raw) != topic_len:
            raise CorruptLogError(f"record {offset}: truncated topic")
        topic = _topic_str(topic_raw)
        props = None
        if flags & _HAS_PROPERTIES:
            (size,) = _U32.unpack_from(data, pos)
            pos += 4
            if pos + size > len(data):
                raise CorruptLogError(f"record {offset}: truncated properties")
            props = decode_properties(memoryview(data)[pos : pos + size])
            pos += size
    except (struct.error, UnicodeDecodeError) as exc:
        raise CorruptLogError(f"record {offset}: {exc}") from exc
    return Event(
        offset, timestamp, topic, data[pos:], flags & _QOS_MASK, bool(flags & _RETAIN), props
    )


def decode_run(
    values: Iterable[bytes],
    offset: int,
    count: int,
    out: list[Event],
    max_bytes: int | None,
    total: int,
) -> tuple[int, int, bool]:
    """Decode up to ``count`` records stored at consecutive offsets from ``offset``.

    The replay hot path: appends the events to ``out`` and returns
    ``(next offset, total, full)``, where ``total`` counts the record bytes of
    ``out`` so far (the caller passes the running sum in) and ``full`` says the
    run stopped because one more record would exceed ``max_bytes`` (never before
    ``out`` holds one event). Stops early too if ``values`` runs out.

    It does what :func:`decode_record` does without a function call per record
    (the per-record call, tuple and ``bool()`` cost about a third of the time
    of a replay); records with properties or an unknown version take the slow
    path through :func:`decode_record`. Raises :class:`CorruptLogError`.
    """
    limit = sys.maxsize if max_bytes is None else max_bytes
    unpack = _HEADER.unpack_from
    topics = _topic_cache
    append = out.append
    position = offset - 1
    try:
        # zip() stops at the shorter: ``count`` records, or fewer if ``values`` runs out.
        for position, data in zip(range(offset, offset + count), values, strict=False):
            size = len(data)
            total += size
            if total > limit and out:
                return position, total - size, True
            version, flags, timestamp, topic_len = unpack(data)
            if version != FORMAT_VERSION or flags & _HAS_PROPERTIES:
                append(decode_record(position, data))
                continue
            end = HEADER_SIZE + topic_len
            if size < end:
                raise CorruptLogError(f"record {position}: truncated topic")
            raw = data[HEADER_SIZE:end]
            topic = topics.get(raw)
            if topic is None:
                topic = _topic_str(raw)
            retain = (flags & _RETAIN) != 0
            append(Event(position, timestamp, topic, data[end:], flags & _QOS_MASK, retain))
    except (struct.error, UnicodeDecodeError) as exc:
        raise CorruptLogError(f"record {position}: {exc}") from exc
    return position + 1, total, False


def record_topic(data: bytes) -> bytes:
    """The raw UTF-8 topic of an encoded record, without decoding the rest."""
    (topic_len,) = _U16.unpack_from(data, HEADER_SIZE - 2)
    return data[HEADER_SIZE : HEADER_SIZE + topic_len]


def record_timestamp(data: bytes) -> int:
    """The timestamp of an encoded record."""
    return int(_HEADER.unpack_from(data)[2])
