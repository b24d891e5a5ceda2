"""The shared PUBLISH encodings of outbound.py: the bytes, and what the caches keep alive."""

from __future__ import annotations

import gc
import weakref

from tidelog.protocols.mqtt import Decoder, Role
from tidelog.protocols.mqtt.outbound import (
    _SHARED_CACHE_SIZE,
    shared_head,
    shared_qos0,
)
from tidelog.protocols.mqtt.packets import Publish
from tidelog.protocols.mqtt.wire import U16
from tidelog.storage import Event


def _event(offset: int, size: int) -> Event:
    return Event(offset, 1_700_000_000_000, f"t/{offset % 7}", bytes([offset % 256]) * size)


def test_shared_head_encodes_the_publish_and_is_shared() -> None:
    event = _event(1, 1000)
    head, props, size = shared_head(event, 4, 1, False)
    packet = head + U16.pack(9) + props + event.payload
    assert len(packet) == size
    (decoded,) = Decoder(4, role=Role.CLIENT).feed(packet)
    assert isinstance(decoded, Publish)
    assert (decoded.topic, decoded.payload, decoded.qos, decoded.packet_id) == (
        "t/1",
        event.payload,
        1,
        9,
    )
    again = shared_head(event, 4, 1, False)
    assert again[0] is head  # one encoding for every connection sending it


def test_the_shared_caches_keep_no_payload_alive() -> None:
    """A large-payload stream must not keep delivered events in memory."""
    size = 64 * 1024
    refs = []
    for offset in range(300):
        event = _event(offset, size)
        shared_head(event, 4, 1, False)
        shared_qos0(event, 5, False)
        refs.append(weakref.ref(event))
        del event
    gc.collect()
    assert not any(ref() is not None for ref in refs)


def test_shared_qos0_is_the_packet_of_its_event_and_the_same_after_a_clear() -> None:
    first = _event(5000, 10)
    chunks = shared_qos0(first, 4, False)
    assert chunks[1] is first.payload
    (decoded,) = Decoder(4, role=Role.CLIENT).feed(b"".join(chunks))
    assert isinstance(decoded, Publish)
    assert (decoded.topic, decoded.payload, decoded.qos) == (first.topic, first.payload, 0)
    other = Event(1, 1, first.topic, b"x" * 10)  # same topic and length: the same head
    assert shared_qos0(other, 4, False)[0] is chunks[0]
    for offset in range(_SHARED_CACHE_SIZE + 1):  # forces a clear
        shared_qos0(_event(offset, offset), 4, False)
    assert b"".join(shared_qos0(first, 4, False)) == b"".join(chunks)


def test_the_head_is_shared_by_events_of_a_topic_and_length_and_keeps_none_alive() -> None:
    """A catch-up reads fresh events: the head of the one before serves if it fits."""
    first, second = _event(7, 300), _event(14, 300)  # both on t/0, 300 bytes
    head = shared_head(first, 5, 1, False)
    assert shared_head(second, 5, 1, False) is head
    ref = weakref.ref(first)
    del first
    gc.collect()
    assert ref() is None  # the cache holds bytes, not the event
    for other, level, qos, retain in [
        (_event(21, 301), 5, 1, False),  # another length
        (second, 4, 1, False),
        (second, 5, 2, False),
        (second, 5, 1, True),
    ]:
        got = shared_head(other, level, qos, retain)
        assert got is not head
        packet = got[0] + U16.pack(3) + got[1] + other.payload
        assert len(packet) == got[2]
        (decoded,) = Decoder(level, role=Role.CLIENT).feed(packet)
        assert isinstance(decoded, Publish)
        assert (decoded.topic, decoded.payload, decoded.qos, decoded.retain) == (
            other.topic,
            other.payload,
            qos,
            retain,
        )
