"""Events and their compact, versioned binary record format.

An event is immutable: ``offset`` (dense per log, from 0), ``timestamp`` (ms
since the epoch, assigned on append, never decreasing within a log), ``topic``,
``payload``, ``qos``, ``retain`` and optional MQTT 5 style ``properties``.

Record format, version 2 (written since issue 17; the offset is the record's
key, not part of it)::

    byte 0      format version (2)
    byte 1      flags: bits 0-1 qos, bit 2 retain, bit 3 properties present,
                bit 4 provenance present
    bytes 2-9   timestamp, unsigned 64-bit big-endian, ms since the epoch
    bytes 10-11 topic length T, unsigned 16-bit big-endian
    T bytes     topic, UTF-8
    if bit 4:   provenance length V (unsigned 16-bit big-endian), then V bytes of
                tagged fields: 0x01 publisher client id, 0x03 origin node and
                0x05 hop (each a 16-bit length and UTF-8; hops repeat, in path
                order), 0x02 packet id (2 bytes), 0x04 origin offset (8 bytes)
    if bit 3:   properties length P (unsigned 32-bit big-endian), then P bytes
                of properties: a tag byte (the MQTT 5 property identifier)
                followed by the value: 0x01 payload format (1 byte),
                0x02 message expiry (4 bytes), 0x03 content type,
                0x08 response topic, 0x09 correlation data (each a 16-bit length
                and bytes), 0x26 user property (two such strings)
    payload     up to the last 4 bytes
    last 4      checksum: CRC-32C (Castagnoli) of every byte before it, with
                initial value 0 and no final XOR, stored little-endian; so the
                same CRC over the whole record is 0, and over any concatenation
                of whole records too (:func:`decode_run` checks a run of
                records with one CRC pass, and only looks for the bad record
                when that fails)

Version 1 (written before issue 17, still read) is the same without bit 4,
without the checksum: the payload runs to the end of the record.

The header (bytes 0-11) and the topic sit where they sat in version 1, so the
segment scans that look only at the topic or the timestamp read both versions.
A reader that meets an unknown version byte raises :class:`CorruptLogError`;
new versions are added beside the old ones, never by changing them.

A damaged record raises :class:`CorruptRecordError` (a :class:`CorruptLogError`)
naming its offset; the backend adds where it is stored and what to do
(:data:`DAMAGED_ADVICE`).
"""

from __future__ import annotations

import bisect
import logging
import struct
from collections.abc import Callable, Iterable, Sequence
from itertools import accumulate
from typing import Any

import attrs
import google_crc32c

from tidelog.errors import CorruptLogError
from tidelog.storage import checksums
from tidelog.storage.checksums import raw_crc32c, seal

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
"""The version new records are written in."""
READABLE_VERSIONS = (1, 2)

_HEADER = struct.Struct(">BBQH")
HEADER_SIZE = _HEADER.size
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")

_CHECKSUM = struct.Struct("<I")
_U64 = struct.Struct(">Q")

_QOS_MASK = 0x03
_RETAIN = 0x04
_HAS_PROPERTIES = 0x08
_HAS_PROVENANCE = 0x10

CHECKSUM_SIZE = 4
_CRC_SEED = 0xFFFF_FFFF
"""``google_crc32c.extend(_CRC_SEED, data)`` is the CRC-32C of ``data`` with initial
value 0, XORed with ``0xFFFFFFFF`` (the library's convention applies the usual
inversion at both ends); so it returns ``_CRC_SEED`` exactly when that CRC is 0."""
_crc = google_crc32c.extend

_CLIENT_ID = 0x01
_PACKET_ID = 0x02
_ORIGIN_NODE = 0x03
_ORIGIN_OFFSET = 0x04
_HOP = 0x05

DAMAGED_ADVICE = (
    "the stored bytes changed after they were written (a disk or memory fault, or an "
    "edit outside tidelog): stop the broker, run `tidelog verify --storage <url>` to list "
    "every damaged record, and restore the data from a backup (docs/storage.md, "
    "'Damaged records')"
)
"""What an operator should do about a :class:`CorruptRecordError` (backends append it)."""


class CorruptRecordError(CorruptLogError):
    """One stored record fails its checksum or does not parse.

    ``offset`` is the record's offset and ``problem`` what is wrong with it;
    ``where`` (set by the backend through :meth:`located`) names the segment
    or file holding it, and then the message ends with :data:`DAMAGED_ADVICE`.
    """

    def __init__(self, offset: int, problem: str, where: str | None = None) -> None:
        message = f"record {offset}: {problem}"
        if where is not None:
            message = f"{where}, {message}: {DAMAGED_ADVICE}"
        super().__init__(message)
        self.offset = offset
        self.problem = problem
        self.where = where

    def located(self, where: str) -> CorruptRecordError:
        """The same error, naming where the record is stored and what to do."""
        return CorruptRecordError(self.offset, self.problem, where)


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
        out = _set_fields(self)
        if "user_properties" in out:
            out["user_properties"] = [list(pair) for pair in out["user_properties"]]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Properties:
        """Build from :meth:`to_dict`'s shape; unknown keys raise ``ValueError``."""
        _check_known(cls, data, "properties")
        return cls(**data)


def _set_fields(value: Any) -> dict[str, Any]:
    """The fields of an attrs value that are not None or empty, by name."""
    out: dict[str, Any] = {}
    for field in attrs.fields(type(value)):
        item = getattr(value, field.name)
        if item is not None and item != ():
            out[field.name] = item
    return out


def _check_known(cls: type, data: dict[str, Any], what: str) -> None:
    unknown = set(data) - {field.name for field in attrs.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what}: {', '.join(sorted(unknown))}")


def _hops(value: Iterable[str] | None) -> tuple[str, ...]:
    return tuple(str(hop) for hop in value or ())


BRIDGE_CLIENT_PREFIX = "bridge:"
"""The client id prefix of messages a bridge appended (reserved: MQTT clients are
refused it, so such an event never passes for one published on this node)."""


@attrs.frozen
class Provenance:
    """Where an event came from (all optional; stored only in version 2 records).

    ``client_id`` and ``packet_id`` name the MQTT publish that carried the event
    (so QoS 2 inbound state can be rebuilt from the log after a crash);
    ``origin_node``, ``origin_offset`` and ``hop_path`` name the node and offset
    an event forwarded over the mesh was first appended at, and the nodes it
    passed through on the way.
    """

    client_id: str | None = None
    """The publishing MQTT client; ``bridge:<link>`` (:data:`BRIDGE_CLIENT_PREFIX`, which
    MQTT clients may not use) for a message a bridge pulled from a plain MQTT broker."""
    packet_id: int | None = None
    """MQTT packet identifier, 1-65535."""
    origin_node: str | None = None
    origin_offset: int | None = None
    hop_path: tuple[str, ...] = attrs.field(default=(), converter=_hops)

    @property
    def local(self) -> bool:
        """True if the event was published on this node: it came over no link and no
        bridge (what a link in ``local`` mode forwards)."""
        if self.origin_node is not None:
            return False
        return self.client_id is None or not self.client_id.startswith(BRIDGE_CLIENT_PREFIX)

    def to_dict(self) -> dict[str, Any]:
        """The set fields as a JSON-friendly dict."""
        out = _set_fields(self)
        if "hop_path" in out:
            out["hop_path"] = list(out["hop_path"])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Provenance:
        """Build from :meth:`to_dict`'s shape; unknown keys or bad values raise ``ValueError``."""
        _check_known(cls, data, "provenance fields")
        provenance = cls(**data)
        check_provenance(provenance)
        return provenance


def check_provenance(provenance: Provenance) -> None:
    """Raise ``ValueError`` if ``provenance`` cannot be stored."""
    if provenance.packet_id is not None and not 0 < provenance.packet_id <= 0xFFFF:
        raise ValueError(f"packet_id must be 1-65535, not {provenance.packet_id!r}")
    if provenance.origin_offset is not None and not 0 <= provenance.origin_offset < 2**64:
        raise ValueError(f"origin_offset must be 0 to 2**64-1, not {provenance.origin_offset!r}")
    for text in (provenance.client_id, provenance.origin_node, *provenance.hop_path):
        if text is not None and len(text.encode("utf-8")) > 0xFFFF:
            raise ValueError("a provenance string is longer than 65535 bytes")


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
    provenance: Provenance | None = None


@attrs.define(slots=True)
class EncodedEvent(NewEvent):
    """A :class:`NewEvent` with its version 2 ``record`` already encoded, under another
    log's timestamp: what a mesh link receives (``tidelog.mesh.wire``). Appending it
    stores those bytes with this log's own timestamp written into the header and the
    checksum sealed again (:func:`encode_records`), instead of encoding every field
    anew. Made by :func:`decode_encoded`, which keeps the fields and the bytes in step;
    change a field and the event must become a plain :class:`NewEvent`."""

    record: bytes = b""


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
    provenance: Provenance | None = None


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
            _put(out, tag, text.encode("utf-8"))
    if props.correlation_data is not None:
        _put(out, _CORRELATION_DATA, props.correlation_data)
    for key, value in props.user_properties:
        raw = value.encode("utf-8")
        _put(out, _USER_PROPERTY, key.encode("utf-8"))
        out += _U16.pack(len(raw)) + raw
    return bytes(out)


def _put(out: bytearray, tag: int, raw: bytes) -> None:
    """Append a tagged value: the tag, a 16-bit length, the bytes."""
    out.append(tag)
    out += _U16.pack(len(raw)) + raw


def _take(data: bytes | memoryview, pos: int, what: str) -> tuple[bytes, int]:
    """The 16-bit-length-prefixed bytes at ``pos``, and the position after them."""
    (size,) = _U16.unpack_from(data, pos)
    raw = bytes(data[pos + 2 : pos + 2 + size])
    if len(raw) != size:
        raise CorruptLogError(f"truncated {what}")
    return raw, pos + 2 + size


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
                raw, pos = _take(data, pos, "property value")
                if tag == _CORRELATION_DATA:
                    fields["correlation_data"] = raw
                else:
                    name = "content_type" if tag == _CONTENT_TYPE else "response_topic"
                    fields[name] = raw.decode("utf-8")
            elif tag == _USER_PROPERTY:
                key, pos = _take(data, pos, "user property")
                value, pos = _take(data, pos, "user property")
                users.append((key.decode("utf-8"), value.decode("utf-8")))
            else:
                raise CorruptLogError(f"unknown property tag 0x{tag:02x}")
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise CorruptLogError(f"malformed properties: {exc}") from exc
    if pos != end:
        raise CorruptLogError("truncated properties")
    return Properties(**fields, user_properties=users)


def stored_events(events: Sequence[NewEvent], first: int, timestamp: int) -> list[Event]:
    """The :class:`Event` objects an append of ``events`` at offset ``first`` returns.

    Every append's hot path: each made as :func:`_decode_plain` makes them
    (``object.__new__``, the slots stored directly), two thirds of the cost of
    its ``__init__``); the compiled ``stored_events`` (``_crc32c.c``) when the
    extension is built and ``events`` is a list of them."""
    if _stored_events is not None and type(events) is list:
        made = _stored_events(events, first, timestamp)
        if made is not None:
            return made
    new = object.__new__
    out: list[Event] = []
    append = out.append
    offset = first
    for e in events:
        event = new(Event)
        event.offset = offset
        event.timestamp = timestamp
        event.topic = e.topic
        event.payload = e.payload
        event.qos = e.qos
        event.retain = e.retain
        event.properties = e.properties
        event.provenance = e.provenance
        append(event)
        offset += 1
    return out


def encode_provenance(provenance: Provenance) -> bytes:
    """Encode provenance as the tagged block described in the module docstring."""
    out = bytearray()
    for tag, text in ((_CLIENT_ID, provenance.client_id), (_ORIGIN_NODE, provenance.origin_node)):
        if text is not None:
            _put(out, tag, text.encode("utf-8"))
    if provenance.packet_id is not None:
        out.append(_PACKET_ID)
        out += _U16.pack(provenance.packet_id)
    if provenance.origin_offset is not None:
        out.append(_ORIGIN_OFFSET)
        out += _U64.pack(provenance.origin_offset)
    for hop in provenance.hop_path:
        _put(out, _HOP, hop.encode("utf-8"))
    return bytes(out)


def decode_provenance(data: bytes | memoryview) -> Provenance:
    """Inverse of :func:`encode_provenance`; raises :class:`CorruptLogError`."""
    fields: dict[str, Any] = {}
    hops: list[str] = []
    pos, end = 0, len(data)
    try:
        while pos < end:
            tag = data[pos]
            pos += 1
            if tag == _PACKET_ID:
                fields["packet_id"] = _U16.unpack_from(data, pos)[0]
                pos += 2
            elif tag == _ORIGIN_OFFSET:
                fields["origin_offset"] = _U64.unpack_from(data, pos)[0]
                pos += 8
            elif tag in (_CLIENT_ID, _ORIGIN_NODE, _HOP):
                raw, pos = _take(data, pos, "provenance value")
                text = raw.decode("utf-8")
                if tag == _HOP:
                    hops.append(text)
                else:
                    fields["client_id" if tag == _CLIENT_ID else "origin_node"] = text
            else:
                raise CorruptLogError(f"unknown provenance tag 0x{tag:02x}")
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise CorruptLogError(f"malformed provenance: {exc}") from exc
    if pos != end:
        raise CorruptLogError("truncated provenance")
    return Provenance(**fields, hop_path=hops)


def checksum(body: bytes) -> bytes:
    """The 4-byte trailer of a version 2 record whose other bytes are ``body``."""
    return _CHECKSUM.pack(raw_crc32c(0, body))


def encode_record(event: NewEvent, timestamp: int, version: int = FORMAT_VERSION) -> bytes:
    """Encode ``event`` with its assigned ``timestamp`` as a record.

    ``version`` 1 writes the old format (no provenance, no checksum) for tests
    and benchmarks that compare the two; it refuses an event with provenance.
    """
    topic = event.topic.encode("utf-8")
    flags = (event.qos & _QOS_MASK) | (_RETAIN if event.retain else 0)
    parts = [b"", topic]
    provenance = event.provenance
    if provenance is not None:
        if version == 1:
            raise ValueError("version 1 records cannot carry provenance")
        block = encode_provenance(provenance)
        if len(block) > 0xFFFF:
            raise ValueError("the provenance of an event encodes to more than 65535 bytes")
        flags |= _HAS_PROVENANCE
        parts += (_U16.pack(len(block)), block)
    if event.properties is not None:
        props = encode_properties(event.properties)
        flags |= _HAS_PROPERTIES
        parts += (_U32.pack(len(props)), props)
    parts[0] = _HEADER.pack(version, flags, timestamp, len(topic))
    parts.append(event.payload)
    body = b"".join(parts)
    return body + checksum(body) if version != 1 else body


def restamp_python(record: bytes, timestamp: int) -> bytes:
    """A version 2 ``record`` with ``timestamp`` written into its header and its checksum
    sealed again (the compiled ``restamp`` does the same in one allocation)."""
    if len(record) < HEADER_SIZE + CHECKSUM_SIZE:
        raise ValueError("restamp() needs a version 2 record (16 bytes or more)")
    head = record[:2] + _U64.pack(timestamp) + record[10:HEADER_SIZE]
    return seal(head, raw_crc32c(0, head), record[HEADER_SIZE:-CHECKSUM_SIZE])


RECORDS_API = 3
"""The version of the compiled record functions this module calls (``RECORDS_API`` in
``_crc32c.c``: their signatures and the types and fields they read and make)."""
_compiled = (
    checksums.compiled if getattr(checksums.compiled, "RECORDS_API", None) == RECORDS_API else None
)
"""The compiled module when its record functions are the ones this module calls (an
extension built from other sources has none, or others: rebuild it, ``pip install -e .``
or ``python setup.py build_ext --inplace``; until then these run in Python)."""
if checksums.compiled is not None and _compiled is None:
    logger.warning(
        "tidelog.storage._crc32c was built from other sources (record functions version %r,"
        " not %d): records are made in Python until it is rebuilt",
        getattr(checksums.compiled, "RECORDS_API", None),
        RECORDS_API,
    )
restamp: Callable[[bytes, int], bytes] = restamp_python if _compiled is None else _compiled.restamp
"""Compiled when the extension is built (:mod:`tidelog.storage.checksums`)."""


def encode_records(
    events: Iterable[NewEvent],
    timestamp: int,
    check: Callable[[int, NewEvent], object],
    checked_topics: dict[str, bytes],
    version: int = FORMAT_VERSION,
) -> list[bytes]:
    """Encode a batch sharing one ``timestamp``; the same bytes as :func:`encode_record`.

    The append hot path. A *plain* event (a :class:`NewEvent` without
    properties or provenance) is its record prefix (header and topic, the same
    for every plain event of the topic with the same QoS and retain flag in
    this batch, built once) plus its payload, plus (version 2) the checksum,
    computed from the prefix's CRC state (also kept once per prefix) over the
    payload alone, in one call (:func:`~tidelog.storage.checksums.seal`, compiled
    when built: docs/storage.md, "Cost"). ``check(index, event)`` validates an event
    before it is encoded (raising stops the batch): it is called for every
    event that is not plain or has an unusual QoS or retain value, and for a
    plain event whose topic is not in ``checked_topics`` (topics ``check``
    accepted before, with their UTF-8 bytes; a plain event has nothing else to
    check). Accepted topics are added to it, up to 100,000.

    An :class:`EncodedEvent` (checked the same way as a plain event: ``check`` is
    called when its topic is not in ``checked_topics`` or its QoS is unusual) is its
    own record with ``timestamp`` written into the header and the checksum sealed
    again (:func:`restamp`); in version 1 it is encoded from its fields like any
    other event. A list of them all (a link's batch), every topic in
    ``checked_topics`` and every QoS 0-2, is restamped in one call by the compiled
    ``restamp_all`` when the extension is built (the same bytes; the tests compare).
    """
    if (
        _restamp_all is not None
        and type(events) is list
        and events
        and type(events[0]) is EncodedEvent
        and version != 1
    ):
        # a link's batch: the records as they came, this log's timestamp (the same
        # bytes as the loop below, in C; None when an event needs the loop's checks)
        done = _restamp_all(events, timestamp, checked_topics)
        if done is not None:
            return done
    pack = _HEADER.pack
    sealed = seal
    restamped = restamp
    checksummed = version != 1
    plain: dict[tuple[str, int], tuple[bytes, int]] = {}
    records: list[bytes] = []
    append = records.append
    for index, event in enumerate(events):
        if (
            type(event) is NewEvent
            and event.properties is None
            and event.provenance is None
            and type(qos := event.qos) is int
            and 0 <= qos <= 2
            and ((retain := event.retain) is False or retain is True)
        ):
            flags = qos | _RETAIN if retain else qos
            topic = event.topic
            known = plain.get((topic, flags))
            if known is None:
                raw = checked_topics.get(topic)
                if raw is None:
                    check(index, event)
                    raw = topic.encode("utf-8")
                    if len(checked_topics) < 100_000:
                        checked_topics[topic] = raw
                prefix = pack(version, flags, timestamp, len(raw)) + raw
                known = plain[topic, flags] = (prefix, raw_crc32c(0, prefix))
            if checksummed:
                append(sealed(known[0], known[1], event.payload))
            else:
                append(known[0] + event.payload)
        elif type(event) is EncodedEvent and checksummed:
            topic = event.topic
            qos = event.qos
            if topic not in checked_topics or type(qos) is not int or not 0 <= qos <= 2:
                check(index, event)
                if len(checked_topics) < 100_000:
                    checked_topics[topic] = topic.encode("utf-8")
            append(restamped(event.record, timestamp))  # the same record, this log's timestamp
        else:
            check(index, event)
            if event.provenance is not None:
                check_provenance(event.provenance)
            append(encode_record(event, timestamp, version))
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


def decode_record(offset: int, data: bytes, *, verified: bool = False) -> Event:
    """Decode one record stored at ``offset``; raises :class:`CorruptRecordError`.

    A version 2 record's checksum is checked unless ``verified`` says the
    caller already checked it.
    """
    try:
        version, flags, timestamp, topic_len = _HEADER.unpack_from(data)
        if version == 2:
            if not verified and _crc(_CRC_SEED, data) != _CRC_SEED:
                raise CorruptRecordError(offset, "checksum mismatch")
            stop = len(data) - CHECKSUM_SIZE
        elif version == 1:
            stop = len(data)
            if flags & _HAS_PROVENANCE:
                raise CorruptRecordError(offset, "a version 1 record with provenance")
        else:
            raise CorruptRecordError(offset, f"unknown format version {version}")
        pos = HEADER_SIZE + topic_len
        if pos > stop:
            raise CorruptRecordError(offset, "truncated topic")
        topic = _topic_str(data[HEADER_SIZE:pos])
        provenance = props = None
        if flags & _HAS_PROVENANCE:
            (size,) = _U16.unpack_from(data, pos)
            pos += 2
            if pos + size > stop:
                raise CorruptRecordError(offset, "truncated provenance")
            provenance = decode_provenance(memoryview(data)[pos : pos + size])
            pos += size
        if flags & _HAS_PROPERTIES:
            (size,) = _U32.unpack_from(data, pos)
            pos += 4
            if pos + size > stop:
                raise CorruptRecordError(offset, "truncated properties")
            props = decode_properties(memoryview(data)[pos : pos + size])
            pos += size
        if pos > stop:
            raise CorruptRecordError(offset, "truncated record")
    except CorruptRecordError:
        raise
    except CorruptLogError as exc:
        raise CorruptRecordError(offset, str(exc)) from exc
    except (struct.error, UnicodeDecodeError) as exc:
        raise CorruptRecordError(offset, str(exc)) from exc
    return Event(
        offset,
        timestamp,
        topic,
        data[pos:stop],
        flags & _QOS_MASK,
        bool(flags & _RETAIN),
        props,
        provenance,
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

    Same result as :func:`decode_record` per record, checksums included. A run
    that starts with a version 2 record is checked with one CRC pass over the
    whole run (see the module docstring); when that passes and every record is
    plain (no properties or provenance), :func:`_decode_plain` decodes them in
    one loop. A run of version 1 records takes the same loop without a
    checksum. Otherwise (properties, mixed versions, a failed checksum, a
    record cut short), the run is decoded record by record by
    :func:`decode_record`, which checks each record's own checksum and names a
    bad record in its :class:`CorruptRecordError`.
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
    verified = False
    try:
        if records[0][0] == 2:
            verified = _crc(_CRC_SEED, b"".join(records)) == _CRC_SEED
            events = (
                _decode_plain(records, offsets, _PLAIN_V2_KINDS, CHECKSUM_SIZE)
                if verified
                else None
            )
        else:
            events = _decode_plain(records, offsets, _PLAIN_V1_KINDS, 0)
        if events is not None:
            out += events
            return len(records), total, full
    except (struct.error, UnicodeDecodeError, IndexError):
        pass
    out += [
        decode_record(position, data, verified=verified)
        for position, data in zip(offsets, records, strict=False)
    ]
    return len(records), total, full


def _decode_plain_python(
    records: list[bytes], offsets: Sequence[int], kinds: int, tail: int
) -> list[Event] | None:
    """Events of plain records of one version (``kinds``: see :data:`_PLAIN_V1_KINDS`),
    whose payload ends ``tail`` bytes before the record's end (0 for version 1, the
    checksum for version 2); None if a record is not one, or is cut short (raises
    ``struct.error`` if shorter than a header). Version 2 records must have been
    checked already. :data:`_decode_plain` is this, or the compiled ``decode_plain``
    (``_crc32c.c``: the same Events, tested against each other) when it is built.

    The replay hot path, so written for CPython's sake: one loop in one frame,
    each :class:`Event` made by ``object.__new__`` and its eight slots stored
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
    cut = -tail if tail else None
    for position, data in zip(offsets, records, strict=False):
        kind, timestamp, size = unpack(data)  # kind: version << 8 | flags
        end = HEADER_SIZE + size
        if kind >> 3 != kinds or len(data) < end + tail:
            return None  # properties, another version, or cut short: see decode_run
        event = new(Event)
        event.offset = position
        event.timestamp = timestamp
        try:
            event.topic = topics[data[HEADER_SIZE:end]]
        except KeyError:
            event.topic = _learn_topic(data[HEADER_SIZE:end])
        event.payload = data[end:cut]
        event.qos = kind & _QOS_MASK
        event.retain = kind & _RETAIN != 0
        event.properties = None
        event.provenance = None
        append(event)
    return events


def decode_encoded(records: Iterable[bytes]) -> list[EncodedEvent]:
    """Each of ``records`` (version 2, another log's: a link's batch) as an
    :class:`EncodedEvent` that keeps its bytes; raises :class:`CorruptRecordError`,
    whose offset is the record's place in ``records``, for a record that fails its
    checksum, does not parse or is not version 2.

    A link receiver's hot path. A forwarded event's usual record (provenance of
    origin node, origin offset and hops, no properties) is decoded by the compiled
    ``decode_forwarded`` (``_crc32c.c``) when the extension is built, else by
    :func:`decode_encoded_python`: the same objects either way (tests check one
    against the other). Any other record goes through :func:`decode_record`,
    which names what is wrong with a bad one.
    """
    if _decode_forwarded is None:
        return decode_encoded_python(records)
    batch = records if isinstance(records, list) else list(records)
    events, others = _decode_forwarded(batch)
    for index in others:
        events[index] = _decode_other(index, batch[index])
    return events


def decode_encoded_python(records: Iterable[bytes]) -> list[EncodedEvent]:
    """:func:`decode_encoded` in Python (the extension not built, or
    ``TIDELOG_PURE_PYTHON``), written as :func:`_decode_plain` is: the checksum
    in one call, and a forwarded event's usual provenance (origin node, origin
    offset, hops: the layout :func:`encode_provenance` writes) read in the loop,
    each object made by ``object.__new__`` with its slots stored directly (the
    objects their ``__init__`` makes; a frozen :class:`Provenance` through its slot
    descriptors, a third of what ``object.__setattr__`` by name costs). Any other
    record (properties, a publisher id, ...) goes through :func:`decode_record`;
    so does a bad one, which names what is wrong with it.
    """
    new = object.__new__
    crc = raw_crc32c
    unpack = _HEADER.unpack_from
    u16 = _U16.unpack_from
    u64 = _U64.unpack_from
    topics = _topic_cache
    origins: dict[bytes, str] = {}
    out: list[EncodedEvent] = []
    for index, data in enumerate(records):
        event = new(EncodedEvent)
        try:
            version, flags, _, size = unpack(data)
            pos = HEADER_SIZE + size
            stop = len(data) - CHECKSUM_SIZE
            if crc(0, data) or version != 2 or flags & 0x18 != _HAS_PROVENANCE or pos > stop:
                raise ValueError  # not the usual forwarded record: decode_record below
            raw = data[HEADER_SIZE:pos]
            topic = topics.get(raw)
            (block,) = u16(data, pos)
            pos += 2
            end = pos + block
            if data[pos] != _ORIGIN_NODE or end > stop:
                raise ValueError
            (size,) = u16(data, pos + 1)
            pos += 3 + size
            raw_origin = data[pos - size : pos]
            origin = origins.get(raw_origin)
            if origin is None:
                origin = origins[raw_origin] = raw_origin.decode()
            if data[pos] != _ORIGIN_OFFSET:
                raise ValueError
            (origin_offset,) = u64(data, pos + 1)
            (size,) = u16(data, pos + 10)
            pos += 12 + size
            if data[pos - size - 3] != _HOP or pos > end:
                raise ValueError
            hop = data[pos - size : pos].decode()
            if pos == end:  # one hop: the sender is the origin
                hop_path: tuple[str, ...] = (hop,)
            else:
                hops = [hop]
                while pos < end:
                    (size,) = u16(data, pos + 1)
                    if data[pos] != _HOP or pos + 3 + size > end:
                        raise ValueError
                    pos += 3 + size
                    hops.append(data[pos - size : pos].decode())
                hop_path = tuple(hops)
            provenance = new(Provenance)
            _set_client_id(provenance, None)
            _set_packet_id(provenance, None)
            _set_origin_node(provenance, origin)
            _set_origin_offset(provenance, origin_offset)
            _set_hop_path(provenance, hop_path)
            event.topic = _learn_topic(raw) if topic is None else topic
            event.payload = data[end:stop]
            event.qos = flags & _QOS_MASK
            event.retain = flags & _RETAIN != 0
            event.properties = None
            event.provenance = provenance
        except (ValueError, struct.error, IndexError):  # UnicodeDecodeError is a ValueError
            out.append(_decode_other(index, data))
            continue
        event.record = data
        out.append(event)
    return out


def _decode_other(index: int, data: bytes) -> EncodedEvent:
    """A record that is not a usual forwarded one as an :class:`EncodedEvent`, through
    :func:`decode_record`; raises :class:`CorruptRecordError` for a bad one."""
    if data[:1] != b"\x02":
        raise CorruptRecordError(index, "not a version 2 record")
    decoded = decode_record(index, data)
    event = object.__new__(EncodedEvent)
    event.topic = decoded.topic
    event.payload = decoded.payload
    event.qos = decoded.qos
    event.retain = decoded.retain
    event.properties = decoded.properties
    event.provenance = decoded.provenance
    event.record = data
    return event


def _slot_setter(name: str) -> Callable[[Provenance, Any], None]:
    """The setter of a :class:`Provenance` slot: its member descriptor's ``__set__``,
    which stores past the frozen ``__setattr__`` as attrs' own ``__init__`` does (through
    ``object.__setattr__``, which first looks the name up: three times the cost)."""
    setter: Callable[[Provenance, Any], None] = getattr(Provenance, name).__set__
    return setter


_set_client_id, _set_packet_id = _slot_setter("client_id"), _slot_setter("packet_id")
_set_origin_node, _set_origin_offset = _slot_setter("origin_node"), _slot_setter("origin_offset")
_set_hop_path = _slot_setter("hop_path")

_FAST_HEADER = struct.Struct(">HQH")
_PLAIN_V1_KINDS = 1 << 5
"""``(version << 8 | flags) >> 3`` of a version 1 record without properties (flag
bits 0-2 are QoS and retain, bit 3 says properties follow)."""
_PLAIN_V2_KINDS = 2 << 5
"""The same for a version 2 record without properties or provenance (bit 4)."""


def record_topic(data: bytes) -> bytes:
    """The raw UTF-8 topic of an encoded record (either version), without decoding the rest."""
    (topic_len,) = _U16.unpack_from(data, HEADER_SIZE - 2)
    return data[HEADER_SIZE : HEADER_SIZE + topic_len]


def record_timestamp(data: bytes) -> int:
    """The timestamp of an encoded record (either version)."""
    return int(_HEADER.unpack_from(data)[2])


def _slot_names(cls: type) -> tuple[str, ...]:
    """The fields of ``cls`` in order, the slot names the compiled functions are given
    (a field added to a record class changes what they must read and make: the
    ``_crc32c.c`` counts and ``RECORDS_API`` with it)."""
    return tuple(field.name for field in attrs.fields(cls))


_ENCODED_SLOTS = ("topic", "payload", "qos", "retain", "properties", "provenance", "record")
_EVENT_SLOTS = ("offset", "timestamp", *_ENCODED_SLOTS[:6])
_PROVENANCE_SLOTS = ("client_id", "packet_id", "origin_node", "origin_offset", "hop_path")
assert _slot_names(EncodedEvent) == _ENCODED_SLOTS
assert _slot_names(Event) == _EVENT_SLOTS
assert _slot_names(Provenance) == _PROVENANCE_SLOTS

_decode_forwarded: Callable[[list[bytes]], tuple[list[Any], list[int]]] | None = None
_stored_events: Callable[[list[NewEvent], int, int], list[Event] | None] | None = None
_decode_plain: Callable[[list[bytes], Sequence[int], int, int], list[Event] | None] = (
    _decode_plain_python
)
"""The replay's loop over a run of plain records (:func:`_decode_plain_python`)."""
link_batch: Callable[[list[Event], bytes, bytes], bytes | None] | None = None
"""The compiled twin of ``tidelog.mesh.wire.encode_batch`` for a batch of local events
(``link_batch(events, node_tag, hop_prefix)``, None for a batch of other events); None
when the extension is not built, or built before it had one."""
held_bytes: Callable[[list[Event], int], int | None] | None = None
"""The compiled twin of ``tidelog.mesh.tail._held_total``
(``held_bytes(events, per_event)``: payload bytes and topic lengths plus ``per_event``
each, None for a list of other objects); None when the extension is not built, or
built before it had one."""
decode_link: Callable[[bytes, bytes | None], tuple[list[Any], Any] | None] | None = None
"""The compiled twin of ``tidelog.mesh.wire.decode_shaped`` for the usual batch
(``decode_link(payload, sender)``: its events and its shape as a tuple, or None when
the batch is another: wire.py decodes it, and names what is wrong); None when the
extension is not built."""
_restamp_all: Callable[[list[NewEvent], int, dict[str, bytes]], list[bytes] | None] | None = None
"""The compiled :func:`encode_records` of a batch of :class:`EncodedEvent` whose topics
were checked before (None for any other batch; None when the extension is not built)."""
if _compiled is not None:
    try:
        _compiled.configure_records(
            NewEvent,
            EncodedEvent,
            _ENCODED_SLOTS,
            Event,
            _EVENT_SLOTS,
            Provenance,
            _PROVENANCE_SLOTS,
            _topic_cache,
            _TOPIC_CACHE_SIZE,
        )
        _decode_forwarded = _compiled.decode_forwarded
        _stored_events = _compiled.stored_events
        _decode_plain = _compiled.decode_plain
        link_batch = _compiled.link_batch
        held_bytes = getattr(_compiled, "held_bytes", None)  # not in a build before it
        decode_link = _compiled.decode_link
        _restamp_all = _compiled.restamp_all
    except (TypeError, AttributeError) as exc:  # a build that does not fit after all
        logger.warning("compiled record functions not used (records made in Python): %s", exc)
        _compiled = None
        _decode_forwarded = _stored_events = None
        _decode_plain = _decode_plain_python
        link_batch = held_bytes = decode_link = _restamp_all = None
        restamp = restamp_python
