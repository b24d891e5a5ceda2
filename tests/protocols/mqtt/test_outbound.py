"""The shared PUBLISH encodings of outbound.py: the bytes, and what the caches keep alive."""

from __future__ import annotations

import gc
import weakref

from tidelog.protocols.mqtt import Decoder, Role
from tidelog.protocols.mqtt.outbound import (
    _SHARED_CACHE_BYTES,
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


def test_shared_caches_keep_a_bounded_number_of_payload_bytes_alive() -> None:
    """A large-payload stream must not keep thousands of delivered events in memory."""
    size = 64 * 1024
    refs = []
    for offset in range(300):
        event = _event(offset, size)
        shared_head(event, 4, 1, False)
        shared_qos0(event, 5, False)
        refs.append(weakref.ref(event))
        del event
    gc.collect()
    alive = sum(1 for ref in refs if ref() is not None)
    assert 0 < alive <= _SHARED_CACHE_BYTES // size
    assert refs[-1]() is not None  # the latest stays cached


def test_shared_qos0_is_the_same_packet_after_the_cache_was_emptied() -> None:
    first = _event(5000, 10)
    chunks = b"".join(shared_qos0(first, 4, False))
    for offset in range(_SHARED_CACHE_BYTES // (64 * 1024) + 2):  # forces a clear
        shared_qos0(_event(offset, 64 * 1024), 4, False)
    assert b"".join(shared_qos0(first, 4, False)) == chunks
