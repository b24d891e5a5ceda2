"""decode(encode(p)) == p for every packet type at every protocol level,
also split at random points and coalesced with other packets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.protocols.mqtt.helpers import receiving_decoder
from tests.protocols.mqtt.strategies import LEVELS, connects, packets_of
from tidelog.protocols.mqtt import (
    Decoder,
    Packet,
    PacketType,
    Role,
    encode,
    encode_many,
)
from tidelog.protocols.mqtt.protocol import CLIENT_TO_SERVER, SERVER_TO_CLIENT

CASES = [
    (level, packet_type)
    for level in LEVELS
    for packet_type in PacketType
    if packet_type is not PacketType.AUTH or level == 5
]


@pytest.mark.parametrize(
    ("level", "packet_type"), CASES, ids=[f"v{lv}-{pt.name}" for lv, pt in CASES]
)
@given(data=st.data())
def test_round_trip(level: int, packet_type: PacketType, data: st.DataObject) -> None:
    packet = data.draw(packets_of(packet_type, level))
    wire = encode(packet, level)
    decoder = receiving_decoder(packet_type, level)
    assert decoder.feed(wire) == [packet]
    assert decoder.buffered == 0
    if packet_type is PacketType.CONNECT:
        assert decoder.protocol_level == level


def _stream(level: int, types: frozenset[PacketType]) -> st.SearchStrategy[list[Packet]]:
    kinds = sorted(types - {PacketType.CONNECT, PacketType.CONNACK})
    from_client = types is CLIENT_TO_SERVER[level]
    return st.lists(
        st.sampled_from(kinds).flatmap(
            lambda kind: packets_of(kind, level, from_client=from_client)
        ),
        max_size=10,
    )


def _feed_in_pieces(decoder: Decoder, wire: bytes, cuts: list[int]) -> list[Packet]:
    received: list[Packet] = []
    last = 0
    for cut in [*sorted(cuts), len(wire)]:
        received.extend(decoder.feed(wire[last:cut]))
        last = cut
    assert decoder.buffered == 0
    return received


@pytest.mark.parametrize("level", LEVELS)
@given(data=st.data())
def test_client_to_server_stream_in_random_pieces(level: int, data: st.DataObject) -> None:
    connect = data.draw(connects(level))
    packets = [connect, *data.draw(_stream(level, CLIENT_TO_SERVER[level]))]
    wire = encode_many(packets, level)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=12))
    assert _feed_in_pieces(Decoder(), wire, cuts) == packets


@pytest.mark.parametrize("level", LEVELS)
@given(data=st.data())
def test_server_to_client_stream_in_random_pieces(level: int, data: st.DataObject) -> None:
    packets = [
        *data.draw(packets_of(PacketType.CONNACK, level).map(lambda p: [p])),
        *data.draw(_stream(level, SERVER_TO_CLIENT[level])),
    ]
    wire = encode_many(packets, level)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=12))
    decoder = Decoder(level, role=Role.CLIENT)
    assert _feed_in_pieces(decoder, wire, cuts) == packets


@pytest.mark.parametrize("level", LEVELS)
@given(data=st.data())
def test_one_byte_at_a_time(level: int, data: st.DataObject) -> None:
    packets = data.draw(_stream(level, CLIENT_TO_SERVER[level]))
    wire = encode_many(packets, level)
    decoder = Decoder(level)
    received = [p for i in range(len(wire)) for p in decoder.feed(wire[i : i + 1])]
    assert received == packets


@pytest.mark.parametrize("level", LEVELS)
@given(data=st.data())
def test_encode_many_is_concatenated_encode(level: int, data: st.DataObject) -> None:
    packets = data.draw(_stream(level, SERVER_TO_CLIENT[level]))
    assert encode_many(packets, level) == b"".join(encode(p, level) for p in packets)
