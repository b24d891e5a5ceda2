"""The link protocol on MQTT 5: ``$link/...`` messages, encoded and decoded (no I/O).

A link is an MQTT 5 connection to the remote's normal MQTT listener; the
CONNECT carries the user property ``tidelog-link: 1`` and the listener hands
the connection, once authenticated, to the mesh (the user needs the ACL right
``link``). After CONNACK both sides exchange PUBLISH packets in the reserved
``$link/`` topic space, which never reaches the log:

==================  ====  =====================================================
topic               QoS   payload
==================  ====  =====================================================
``$link/hello``     0     dialer -> remote, JSON: node, incarnation, link name,
                          mode, pull and push filters, hop limit, the nodes
                          reachable behind the dialer (transit)
``$link/welcome``   0     remote -> dialer, JSON: node, incarnation, nodes,
                          ``push_from`` (where the remote has the dialer's
                          events up to), ``interest`` (for the dialer's push,
                          when its hello asked with ``push_interest: true``); a
                          refusal is a DISCONNECT instead
``$link/start``     0     dialer -> remote, JSON: ``pull_from`` (the dialer's
                          position in the remote's log); starts the pull
``$link/events``    1     a batch of records (below); user property ``next``:
                          the sender's log offset after the batch (it resumes
                          there); the PUBACK returns one credit
``$link/head``      0     heartbeat, JSON: the sender's ``head`` (next offset),
                          ``first`` offset, ``sent`` (read up to), ``time``
``$link/gap``       0     JSON: ``from``, ``to``, ``reason`` (``retention`` or
                          ``incarnation``): events the receiver will never get
``$link/nodes``     0     JSON: ``nodes`` now reachable behind the sender
``$link/interest``  0     JSON: ``filters``, live interest, sent when it
                          changes: dialer -> remote, the part of the pull
                          filters subscribers behind the dialer want; remote
                          -> dialer, the part of the dialer's push filters
                          subscribers behind the remote want
==================  ====  =====================================================

A batch is a sequence of ``u32 length, record`` where a record is the log's own
record format (``tidelog.storage.records``, CRC-32C checked) carrying the
event's provenance: origin node, origin offset and the hop path. A hop is
``node/incarnation/offset``: every node that stored and forwarded the event, the
origin first and the sender last, with the event's offset in that node's log.
The receiver recovers its link positions from these hops after a crash.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, NamedTuple

import attrs

from tidelog.protocols.mqtt.packets import Publish
from tidelog.protocols.mqtt.properties import Properties
from tidelog.storage.checksums import raw_crc32c, seal
from tidelog.storage.records import (
    FORMAT_VERSION,
    CorruptRecordError,
    EncodedEvent,
    Event,
    NewEvent,
    Provenance,
    decode_encoded,
    decode_link,
    encode_properties,
    link_batch,
)

LINK_PROPERTY: Final = "tidelog-link"
"""The CONNECT user property that makes an MQTT connection a link."""
PREFIX: Final = "$link/"
HELLO: Final = "$link/hello"
WELCOME: Final = "$link/welcome"
START: Final = "$link/start"
EVENTS: Final = "$link/events"
HEAD: Final = "$link/head"
GAP: Final = "$link/gap"
NODES: Final = "$link/nodes"
INTEREST: Final = "$link/interest"
VERSION: Final = 1
_LENGTH = struct.Struct(">I")
_U16 = struct.Struct(">H")
_U32 = _LENGTH
_U64 = struct.Struct(">Q")
_RECORD_HEADER = struct.Struct(">BBQH")
"""The record format's (``tidelog.storage.records``, version 2) header and provenance
tags, which :func:`encode_batch` writes directly."""
_ORIGIN_NODE, _ORIGIN_OFFSET, _HOP = 0x03, 0x04, 0x05
_OFFSET_FIELD = struct.Struct(">BQ")
_TAG = struct.Struct(">BH")
"""A provenance field's tag and length (the value follows)."""
_LOCAL_TAIL = struct.Struct(">BQBH")
"""A local event's origin offset (tag and value) and its hop's tag and length."""


class LinkProtocolError(ValueError):
    """The peer sent something the link protocol does not allow (closes the link)."""


# -- hops --------------------------------------------------------------------------------


def _is_offset(text: str) -> bool:
    """A hop's offset: ASCII digits only (``"\u00b2".isdigit()`` is true, but ``int``
    refuses it), at most 20 (a 64-bit offset; ``int`` refuses over 4,300)."""
    return len(text) <= 20 and text.isascii() and text.isdigit()


@attrs.frozen
class Hop:
    """One node an event passed through, and its offset in that node's log."""

    node: str
    incarnation: str
    offset: int

    def __str__(self) -> str:
        return f"{self.node}/{self.incarnation}/{self.offset}"

    @classmethod
    def parse(cls, text: str) -> Hop:
        parts = text.split("/")
        if len(parts) != 3 or not _is_offset(parts[2]):
            raise LinkProtocolError(f"a hop is node/incarnation/offset, not {text!r}")
        return cls(parts[0], parts[1], int(parts[2]))


def hops(provenance: Provenance | None) -> list[Hop]:
    """The hops of an event's provenance (none for an event that never crossed a link)."""
    if provenance is None:
        return []
    return [Hop.parse(text) for text in provenance.hop_path]


def forwarded(
    event: Event, node: str, incarnation: str, rename: Callable[[str], str | None] | None = None
) -> NewEvent:
    """``event`` of this node's log as it crosses a link: origin kept (or set to this
    node), this node appended to the hop path; MQTT details of the local publish
    (client id, packet id) stay behind."""
    hop = str(Hop(node, incarnation, event.offset))
    old = event.provenance
    if old is None or old.origin_node is None:
        provenance = Provenance(origin_node=node, origin_offset=event.offset, hop_path=(hop,))
    else:
        provenance = Provenance(
            origin_node=old.origin_node,
            origin_offset=old.origin_offset,
            hop_path=(*old.hop_path, hop),
        )
    topic = event.topic if rename is None else rename(event.topic) or event.topic
    return NewEvent(topic, event.payload, event.qos, event.retain, event.properties, provenance)


# -- batches -----------------------------------------------------------------------------


def encode_batch(
    events: Iterable[Event],
    node: str,
    incarnation: str,
    rename: Callable[[str], str | None] | None = None,
) -> bytes:
    """This node's ``events`` as one ``$link/events`` payload (topics renamed by
    ``rename``, a link's prefixes, when given).

    The link's hot path: each record is built straight from the stored event's
    fields (the bytes :func:`forwarded` plus ``encode_record`` give, which the tests
    check), without the intermediate objects; topics are encoded once per batch,
    and a local event's provenance (origin, origin offset, one hop) is one
    ``struct`` call plus its offset's digits. The checksum is sealed with the
    record in one call (:func:`~tidelog.storage.checksums.seal`). A batch of local
    events without renaming (the usual live link) is built in C when the extension
    is built (``link_batch``: the same bytes, which the tests check), in one pass and
    one allocation."""
    if rename is None and link_batch is not None and isinstance(events, list):
        encoded = link_batch(
            events, _tagged(_ORIGIN_NODE, node.encode()), f"{node}/{incarnation}/".encode()
        )
        if encoded is not None:
            return encoded
    out = bytearray()
    topics: dict[str, bytes] = {}
    node_tag = _tagged(_ORIGIN_NODE, node.encode())
    hop_prefix = f"{node}/{incarnation}/"
    hop_bytes = hop_prefix.encode()
    local_tail = _LOCAL_TAIL.pack
    origins: dict[str, bytes] = {}
    offset_tag = _OFFSET_FIELD.pack
    tag = _TAG.pack
    header = _RECORD_HEADER.pack
    u16 = _U16.pack
    length = _LENGTH.pack
    local_block = len(node_tag) + _LOCAL_TAIL.size + len(hop_bytes)  # + the offset's digits
    for event in events:
        topic = topics.get(event.topic)
        if topic is None:
            name = event.topic if rename is None else rename(event.topic) or event.topic
            topic = topics[event.topic] = name.encode("utf-8")
        offset = event.offset
        digits = b"%d" % offset
        old = event.provenance
        flags = (event.qos & 0x03) | (0x04 if event.retain else 0) | 0x10
        if (old is None or old.origin_node is None) and event.properties is None:
            # the usual event on a live link: the record in one join, provenance inline
            head = b"".join(
                (
                    header(FORMAT_VERSION, flags, event.timestamp, len(topic)),
                    topic,
                    u16(local_block + len(digits)),
                    node_tag,
                    local_tail(_ORIGIN_OFFSET, offset, _HOP, len(hop_bytes) + len(digits)),
                    hop_bytes,
                    digits,
                )
            )
            record = seal(head, raw_crc32c(0, head), event.payload)
            out += length(len(record))
            out += record
            continue
        if old is None or old.origin_node is None:
            block = b"".join(
                (
                    node_tag,
                    local_tail(_ORIGIN_OFFSET, offset, _HOP, len(hop_bytes) + len(digits)),
                    hop_bytes,
                    digits,
                )
            )
        else:
            origin = origins.get(old.origin_node)
            if origin is None:
                origin = origins[old.origin_node] = _tagged(_ORIGIN_NODE, old.origin_node.encode())
            parts = [origin]
            if old.origin_offset is not None:
                parts.append(offset_tag(_ORIGIN_OFFSET, old.origin_offset))
            for hop in old.hop_path:
                raw = hop.encode()
                parts += (tag(_HOP, len(raw)), raw)
            parts += (tag(_HOP, len(hop_bytes) + len(digits)), hop_bytes, digits)
            block = b"".join(parts)
        if event.properties is None:
            head = b"".join(
                (
                    header(FORMAT_VERSION, flags, event.timestamp, len(topic)),
                    topic,
                    u16(len(block)),
                    block,
                )
            )
        else:
            props = encode_properties(event.properties)
            head = b"".join(
                (
                    header(FORMAT_VERSION, flags | 0x08, event.timestamp, len(topic)),
                    topic,
                    u16(len(block)),
                    block,
                    _U32.pack(len(props)),
                    props,
                )
            )
        record = seal(head, raw_crc32c(0, head), event.payload)
        out += length(len(record))
        out += record
    return bytes(out)


def _tagged(tag: int, raw: bytes) -> bytes:
    return bytes((tag,)) + _U16.pack(len(raw)) + raw


class BatchShape(NamedTuple):
    """What every event of a batch shares, when it does: one origin, ``origin``
    (incarnation ``incarnation``), one path (the same nodes and incarnations hop by
    hop: one hop from the origin itself, or the same transit nodes), and origin
    offsets that rise strictly from ``first`` to ``last``. The usual batch, live or
    catching up: its deduplication and the positions it advances are then found per
    batch, not per event (:meth:`~tidelog.mesh.positions.MeshPositions.append_fresh`)."""

    origin: str
    incarnation: str
    first: int
    last: int


def joined_shape(shapes: Sequence[BatchShape | None]) -> BatchShape | None:
    """The shape of consecutive batches taken as one: each shaped, one origin and
    incarnation, the offsets still rising from one batch to the next; else None."""
    if not shapes or shapes[0] is None:
        return None
    whole = shapes[0]
    for shape in shapes[1:]:
        if (
            shape is None
            or shape.origin != whole.origin
            or shape.incarnation != whole.incarnation
            or shape.first <= whole.last
        ):
            return None
        whole = whole._replace(last=shape.last)
    return whole


def decode_batch(payload: bytes, sender: str | None = None) -> list[EncodedEvent]:
    """The events of a ``$link/events`` payload, each with its provenance (checked:
    origin and at least one hop, the first the origin's, the last ``sender``'s when
    given; an origin incarnation's offsets rising) and its record (appended as it
    came, under the receiver's timestamp: :class:`~tidelog.storage.records.EncodedEvent`);
    raises :class:`LinkProtocolError`."""
    return decode_shaped(payload, sender)[0]


def decode_shaped(
    payload: bytes, sender: str | None = None
) -> tuple[list[EncodedEvent], BatchShape | None]:
    """:func:`decode_batch`, and the batch's :class:`BatchShape` (None: its events
    differ in origin or path, or their offsets do not rise), found by the same loop
    that checks the hops (a comparison or two per event).

    The usual batch (every record a usual forwarded one, every hop good) is decoded
    and checked by the compiled ``decode_link`` when the extension is built, in one
    pass; any other batch, or one it refuses, takes the loops below (the same events
    and shape: the tests compare them), which name what is wrong with a bad one."""
    if decode_link is not None and type(payload) is bytes:
        done = decode_link(
            payload, None if sender is None else sender.encode("utf-8", "surrogatepass")
        )
        if done is not None:
            decoded, shape = done
            if shape is None:
                _check_rising(decoded)
                return decoded, None
            return decoded, BatchShape(*shape)
    return decode_shaped_python(payload, sender)


def decode_shaped_python(
    payload: bytes, sender: str | None = None
) -> tuple[list[EncodedEvent], BatchShape | None]:
    """:func:`decode_shaped` in Python (the extension not built, ``TIDELOG_PURE_PYTHON``,
    or a batch that is not the usual one)."""
    records: list[bytes] = []
    pos, size = 0, len(payload)
    unpack = _LENGTH.unpack_from
    while pos < size:
        if pos + 4 > size:
            raise LinkProtocolError("a truncated batch")
        (length,) = unpack(payload, pos)
        pos += 4 + length
        if pos > size:
            raise LinkProtocolError("a truncated record in a batch")
        records.append(payload[pos - length : pos])
    try:
        events = decode_encoded(records)
    except CorruptRecordError as exc:
        raise LinkProtocolError(f"a bad record in a batch: {exc}") from None
    checked: str | None = None  # the "node/incarnation/" of a one-hop path found good before
    path: tuple[str, ...] | None = None  # the same, hop by hop, of a longer path (transit)
    checked_origin: str | None = None  # the origin node of that path (its first hop's)
    shaped = True  # every event so far: the path of the first, same origin, rising offsets
    origin: str | None = None
    first_hop = ""
    last = -1
    for event in events:
        provenance = event.provenance
        if provenance is None or provenance.origin_node is None or not provenance.hop_path:
            raise LinkProtocolError("a forwarded event without origin and hop path")
        hop_path = provenance.hop_path
        if provenance.origin_node == checked_origin and (
            (
                checked is not None
                and len(hop_path) == 1
                and (hop := hop_path[0]).startswith(checked)
                and (offset := hop[len(checked) :]).isascii()  # _is_offset, inline: hot
                and offset.isdigit()
                and len(offset) <= 20
            )
            or (
                path is not None
                and len(hop_path) == len(path)
                and all(map(_follows, hop_path, path))
            )
        ):
            if shaped:
                number = provenance.origin_offset
                if provenance.origin_node == origin and number is not None and number > last:
                    last = number
                else:
                    shaped = False
            continue  # as the one before, other offsets
        prefixes = []
        for hop in hop_path:  # all are read (routing parses each)
            parts = hop.split("/")
            if len(parts) != 3 or not _is_offset(parts[2]):
                raise LinkProtocolError(f"a hop is node/incarnation/offset, not {hop!r}")
            prefixes.append(f"{parts[0]}/{parts[1]}/")
        if sender is not None and parts[0] != sender:
            raise LinkProtocolError(f"an event whose last hop is not {sender}")
        if prefixes[0][: prefixes[0].index("/")] != provenance.origin_node:
            raise LinkProtocolError(
                f"an event of origin {provenance.origin_node!r} whose first hop is not its"
                f" origin's: {hop_path[0]!r}"
            )
        checked, path = (prefixes[0], None) if len(prefixes) == 1 else (None, tuple(prefixes))
        checked_origin = provenance.origin_node
        if origin is None and provenance.origin_offset is not None:
            origin, last = provenance.origin_node, provenance.origin_offset  # the first event
            first_hop = prefixes[0]
        else:
            shaped = False
    if not shaped or origin is None:
        _check_rising(events)
        return events, None
    first = events[0].provenance
    assert first is not None and first.origin_offset is not None
    return events, BatchShape(origin, first_hop.split("/", 2)[1], first.origin_offset, last)


def _check_rising(events: list[EncodedEvent]) -> None:
    """Raise :class:`LinkProtocolError` if the origin offsets of one origin incarnation
    (the first hop's) repeat or fall within the batch ``events`` (their hops checked).

    A sender reads its log in order and its log holds each origin's events once, in
    order, so this is a sender's fault, and the batch is refused whole, loudly. Across
    batches (a batch sent again after a reconnect or a lost acknowledgement) what was
    appended already is dropped quietly (:meth:`~tidelog.mesh.positions.MeshPositions.fresh`).
    An origin's new incarnation starts its offsets again: only the offsets of one
    incarnation are compared. Only a batch without a :class:`BatchShape` (whose offsets
    rise by definition) is looked at, event by event."""
    after: dict[tuple[str, str], int] = {}
    for event in events:
        provenance = event.provenance
        assert provenance is not None and provenance.origin_node is not None  # checked
        offset = provenance.origin_offset
        if offset is None:
            continue
        key = provenance.origin_node, provenance.hop_path[0].split("/", 2)[1]
        before = after.get(key)
        if before is not None and offset <= before:
            raise LinkProtocolError(
                f"offsets of origin {key[0]}/{key[1]} repeat or fall in a batch:"
                f" {offset} after {before}"
            )
        after[key] = offset


def _follows(hop: str, prefix: str) -> bool:
    """``hop`` is ``prefix`` (``node/incarnation/``) and an offset."""
    return hop.startswith(prefix) and _is_offset(hop[len(prefix) :])


# -- control messages --------------------------------------------------------------------


def control(topic: str, body: dict[str, Any]) -> Publish:
    """A QoS 0 control message."""
    return Publish(topic, json.dumps(body, separators=(",", ":")).encode())


def events_packet(payload: bytes, packet_id: int, next_offset: int) -> Publish:
    return Publish(
        EVENTS,
        payload,
        qos=1,
        packet_id=packet_id,
        properties=Properties(user_properties=(("next", str(next_offset)),)),
    )


def next_offset_of(packet: Publish) -> int:
    for key, value in packet.properties.user_properties:
        if key == "next" and _is_offset(value):
            return int(value)
    raise LinkProtocolError("a batch without its 'next' offset")


def parse_control(packet: Publish) -> dict[str, Any]:
    try:
        body = json.loads(packet.payload)
    except ValueError:
        raise LinkProtocolError(f"{packet.topic}: not JSON") from None
    if not isinstance(body, dict):
        raise LinkProtocolError(f"{packet.topic}: expected a JSON object")
    return body


def position(body: dict[str, Any], key: str) -> tuple[str, int] | None:
    """``{"incarnation": ..., "offset": N}`` under ``key``, or None."""
    value = body.get(key)
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("incarnation"), str)
        or not isinstance(value.get("offset"), int)
        or value["offset"] < 0
    ):
        raise LinkProtocolError(f"{key} must be {{incarnation, offset}}")
    return value["incarnation"], value["offset"]


def position_body(value: tuple[str, int] | None) -> dict[str, Any] | None:
    return None if value is None else {"incarnation": value[0], "offset": value[1]}


def string_list(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise LinkProtocolError(f"{key} must be a list of strings")
    return value
