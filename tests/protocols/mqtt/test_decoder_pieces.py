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


@pytest.mark.parametrize("remaining", [127, 128, 129, 16_383, 16_384])
def test_remaining_lengths_at_the_byte_boundaries_decode_whole_and_split(remaining: int) -> None:
    """A Remaining Length of two bytes is decoded inline (the usual PUBLISH of 128 B to
    16 KiB), one of one or three bytes as before: whole, and cut in the length."""
    packet = Publish(topic="t", payload=b"z" * (remaining - 5), qos=1, packet_id=9)
    data = encode(packet, 4)
    assert len(data) == remaining + 1 + (1 if remaining < 128 else 2 if remaining < 16_384 else 3)
    for cut in range(1, 5):
        assert _decoded([data[:cut], data[cut:]]) == [packet]
    assert _decoded([data + data]) == [packet, packet]
