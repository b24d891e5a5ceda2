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

import bisect
import struct
from collections.abc import Callable, Iterable, Sequence
from itertools import accumulate
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


def encode_records(
    events: Iterable[NewEvent],
    timestamp: int,
    check: Callable[[int, NewEvent], object],
    checked_topics: dict[str, bytes],
) -> list[bytes]:
    """Encode a batch sharing one ``timestamp``; the same bytes as :func:`encode_record`.

    The append hot path. A *plain* event (a :class:`NewEvent` without
    properties) is its record prefix (header and topic, the same for every
    plain event of the topic with the same QoS and retain flag in this batch,
    built once) plus its payload. ``check(index, event)`` validates an event
    before it is encoded (raising stops the batch): it is called for every
    event that is not plain or has an unusual QoS or retain value, and for a
    plain event whose topic is not in ``checked_topics`` (topics ``check``
    accepted before, with their UTF-8 bytes; a plain event has nothing else to
    check). Accepted topics are added to it, up to 100,000.
    """
    pack = _HEADER.pack
    plain: dict[tuple[str, int], bytes] = {}
    records: list[bytes] = []
    append = records.append
    for index, event in enumerate(events):
        if (
            type(event) is NewEvent
            and event.properties is None
            and type(qos := event.qos) is int
            and 0 <= qos <= 2
            and ((retain := event.retain) is False or retain is True)
        ):
            flags = qos | _RETAIN if retain else qos
            topic = event.topic
            prefix = plain.get((topic, flags))
            if prefix is None:
                raw = checked_topics.get(topic)
                if raw is None:
                    check(index, event)
                    raw = topic.encode("utf-8")
                    if len(checked_topics) < 100_000:
                        checked_topics[topic] = raw
                prefix = pack(FORMAT_VERSION, flags, timestamp, len(raw)) + raw
                plain[topic, flags] = prefix
            append(prefix + event.payload)
        else:
            check(index, event)
            append(encode_record(event, timestamp))
    return records


_TOPIC_CACHE_SIZE = 100_000
_topic_cache: dict[bytes, str] = {}
"""Raw topic -> decoded topic, shared by every log of the process, up to 100,000 topics.

Logs repeat a few topics millions of times: decode each once, and share the
``str`` between events. A plain ``dict`` (not a subclass with ``__missing__``):
indexing a ``dict`` subclass goes through a slot wrapper, three times the
instructions of an exact ``dict`` (measured with callgrind)."""


def _learn_topic(raw: bytes) -> str:
    """Decode a topic not in the cache, and remember it while the cache has room."""
    topic = raw.decode("utf-8")
    if len(_topic_cache) < _TOPIC_CACHE_SIZE:
        _topic_cache[raw] = topic
    return topic


def _topic_str(raw: bytes) -> str:
    """Decode a topic through the shared cache."""
    topic = _topic_cache.get(raw)
    return _learn_topic(raw) if topic is None else topic


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
    records: list[bytes],
    offsets: Sequence[int],
    out: list[Event],
    max_bytes: int | None,
    total: int,
) -> tuple[int, int, bool]:
    """Decode ``records`` (stored at ``offsets``, in order) into ``out``, up to ``max_bytes``.

    The replay hot path. Returns ``(records decoded, total, full)``: ``total``
    counts the record bytes of ``out`` (the caller passes the running sum in),
    and ``full`` says decoding stopped because one more record would exceed
    ``max_bytes`` (never before ``out`` holds one event). ``records`` is cut to
    the records decoded.

    Same result as :func:`decode_record` per record. When every record of the
    run is a plain version 1 record (no properties), :func:`_decode_plain`
    decodes them in one loop, the header checks done by C-level passes over the
    run; otherwise, or if a record is cut short, the run is decoded record by
    record by :func:`decode_record`, which handles properties and names a bad
    record in its :class:`CorruptLogError`.
    """
    if not records:
        return 0, total, False
    full = False
    grand = total + sum(map(len, records))
    if max_bytes is None or grand <= max_bytes:
        total = grand
    else:
        sums = list(accumulate(map(len, records), initial=total))  # sums[k]: after k records
        keep = bisect.bisect_right(sums, max_bytes) - 1
        if keep < 1 and not out:
            keep = 1  # always at least one event
        if keep < len(records):
            del records[keep:]
            full = True
        total = sums[len(records)]
        if not records:
            return 0, total, full
    try:
        events = _decode_plain(records, offsets)
        if events is not None:
            out += events
            return len(records), total, full
    except (struct.error, UnicodeDecodeError):
        pass
    out += [decode_record(position, data) for position, data in zip(offsets, records, strict=False)]
    return len(records), total, full


def _decode_plain(records: list[bytes], offsets: Sequence[int]) -> list[Event] | None:
    """Events of version 1 records without properties; None if a record is not one,
    or is cut short (raises ``struct.error`` if shorter than a header).

    The replay hot path, so written for CPython's sake: one loop in one frame,
    each :class:`Event` made by ``object.__new__`` and its seven slots stored
    directly (the same object its ``__init__`` makes, which only stores them;
    going through ``__init__`` costs a type call and a frame per event, about a
    sixth of the decode in instructions), and the topic cache indexed as an
    exact ``dict`` (a miss is an exception, free in CPython 3.11 until raised).
    """
    topics = _topic_cache
    new = object.__new__
    events: list[Event] = []
    append = events.append
    unpack = _FAST_HEADER.unpack_from
    for position, data in zip(offsets, records, strict=False):
        kind, timestamp, size = unpack(data)  # kind: version << 8 | flags
        end = HEADER_SIZE + size
        if kind >> 3 != _PLAIN_V1_KINDS or len(data) < end:
            return None  # properties, another version, or cut short: see decode_run
        event = new(Event)
        event.offset = position
        event.timestamp = timestamp
        try:
            event.topic = topics[data[HEADER_SIZE:end]]
        except KeyError:
            event.topic = _learn_topic(data[HEADER_SIZE:end])
        event.payload = data[end:]
        event.qos = kind & _QOS_MASK
        event.retain = kind & _RETAIN != 0
        event.properties = None
        append(event)
    return events


_FAST_HEADER = struct.Struct(">HQH")
_PLAIN_V1_KINDS = FORMAT_VERSION << 5
"""``(version << 8 | flags) >> 3`` of a version 1 record without properties (flag
bits 0-2 are QoS and retain, bit 3 says properties follow)."""


def record_topic(data: bytes) -> bytes:
    """The raw UTF-8 topic of an encoded record, without decoding the rest."""
    (topic_len,) = _U16.unpack_from(data, HEADER_SIZE - 2)
    return data[HEADER_SIZE : HEADER_SIZE + topic_len]


def record_timestamp(data: bytes) -> int:
    """The timestamp of an encoded record."""
    return int(_HEADER.unpack_from(data)[2])
