"""The decoder's incomplete-packet buffer (issue 19: reads kept as chunks, joined once)."""

from __future__ import annotations

import pytest

from tidelog.protocols.mqtt import Decoder, Role, encode
from tidelog.protocols.mqtt.packets import Puback, Publish


def _stream() -> tuple[bytes, list[Publish | Puback]]:
    packets: list[Publish | Puback] = [
        Publish(topic="a/b", payload=b"x" * 70_000, qos=1, packet_id=1),
        Puback(packet_id=7),
        Publish(topic="t", payload=bytes(range(256)) * 3, qos=0),
        Publish(topic="big", payload=b"y" * 200, qos=1, packet_id=2),
    ]
    return b"".join(encode(packet, 4) for packet in packets), packets


def _decoded(pieces: list[bytes | bytearray | memoryview]) -> list[object]:
    decoder = Decoder(4, role=Role.CLIENT)
    out: list[object] = []
    for piece in pieces:
        out += decoder.feed(piece)
        if isinstance(piece, bytearray):
            piece[:] = b"\xff" * len(piece)  # the caller reuses its buffer
    assert decoder.buffered == 0
    return out


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
@pytest.mark.parametrize("size", [1, 2, 3, 1000, 65_536, 70_010])
def test_every_read_size_and_buffer_type_gives_the_same_packets(kind: type, size: int) -> None:
    stream, packets = _stream()
    pieces = [kind(bytearray(stream[i : i + size])) for i in range(0, len(stream), size)]
    assert _decoded(pieces) == packets


def test_a_small_tail_after_many_packets_is_copied_and_completed() -> None:
    stream, packets = _stream()
    small = encode(Publish(topic="s", payload=b"z" * 10, qos=0), 4)
    head = small * 200 + stream[:5]  # the incomplete packet is a small part of the read
    decoder = Decoder(4, role=Role.CLIENT)
    first = decoder.feed(head)
    assert len(first) == 200 and decoder.buffered == 5
    assert decoder.feed(stream[5:]) == packets
    assert decoder.buffered == 0
