"""Whatever bytes arrive, the decoder raises nothing but MQTTProtocolError,
and whatever it accepts it can encode again to the same packets."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.protocols.mqtt.strategies import LEVELS, connects, packets_of
from tidelog.protocols.mqtt import (
    Decoder,
    MQTTProtocolError,
    Packet,
    PacketType,
    Role,
    encode_many,
    error_reply,
)
from tidelog.protocols.mqtt.protocol import CLIENT_TO_SERVER, SERVER_TO_CLIENT


def _factory(level: int | None, role: Role) -> Callable[[], Decoder]:
    return lambda: Decoder(level, role=role)


DECODERS: dict[str, Callable[[], Decoder]] = {
    "server-new": _factory(None, Role.SERVER),
    **{f"server-{lv}": _factory(lv, Role.SERVER) for lv in LEVELS},
    **{f"client-{lv}": _factory(lv, Role.CLIENT) for lv in LEVELS},
}

# Random bytes rarely get past the first byte; these prefixes steer them into
# packet bodies: a valid CONNECT header of each level, and the first byte of
# every packet type.
_CONNECT_PREFIXES = [
    b"\x10\xff\x7f\x00\x06MQIsdp\x03",
    b"\x10\xff\x7f\x00\x04MQTT\x04",
    b"\x10\xff\x7f\x00\x04MQTT\x05",
]
_FIRST_BYTES = [bytes((t << 4 | f,)) for t in range(1, 16) for f in (0, 2)] + [b"\x32", b"\x3d"]
fuzz_bytes = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda p, b: p + b, st.sampled_from(_FIRST_BYTES), st.binary(max_size=200)),
    st.builds(lambda p, b: p + b, st.sampled_from(_CONNECT_PREFIXES), st.binary(max_size=200)),
)


def _feed_all(decoder: Decoder, chunks: list[bytes]) -> list[Packet]:
    received: list[Packet] = []
    try:
        for chunk in chunks:
            received.extend(decoder.feed(chunk))
    except MQTTProtocolError as exc:
        received.extend(exc.packets)
        error_reply(exc)  # must not raise either
    return received


def _assert_canonical(packets: list[Packet], decoder: Decoder, role: Role) -> None:
    """Accepted packets encode and decode again to themselves."""
    level = decoder.protocol_level
    if level is None or not packets:
        return
    again = Decoder() if packets[0].packet_type is PacketType.CONNECT else Decoder(level, role=role)
    assert again.feed(encode_many(packets, level)) == packets


@pytest.mark.parametrize("name", sorted(DECODERS))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_bytes_raise_only_protocol_errors(name: str, data: st.DataObject) -> None:
    blob = data.draw(fuzz_bytes)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(blob)), max_size=4)))
    chunks = [blob[a:b] for a, b in zip([0, *cuts], [*cuts, len(blob)], strict=True)]
    decoder = DECODERS[name]()
    packets = _feed_all(decoder, chunks)
    role = Role.CLIENT if name.startswith("client") else Role.SERVER
    _assert_canonical(packets, decoder, role)


@st.composite
def _mutated_stream(draw: st.DrawFn, level: int, role: Role) -> bytes:
    table = CLIENT_TO_SERVER if role is Role.SERVER else SERVER_TO_CLIENT
    kinds = sorted(table[level] - {PacketType.CONNECT})
    packets: list[Packet] = draw(
        st.lists(
            st.sampled_from(kinds).flatmap(
                lambda k: packets_of(k, level, from_client=role is Role.SERVER)
            ),
            max_size=5,
        )
    )
    if role is Role.SERVER:
        packets.insert(0, draw(connects(level)))
    wire = bytearray(encode_many(packets, level))
    for _ in range(draw(st.integers(1, 4))):
        if not wire:
            break
        index = draw(st.integers(0, len(wire) - 1))
        action = draw(st.sampled_from(["flip", "set", "delete", "insert"]))
        if action == "flip":
            wire[index] ^= 1 << draw(st.integers(0, 7))
        elif action == "set":
            wire[index] = draw(st.integers(0, 255))
        elif action == "delete":
            del wire[index]
        else:
            wire.insert(index, draw(st.integers(0, 255)))
    return bytes(wire)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT])
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_valid_streams_raise_only_protocol_errors(
    level: int, role: Role, data: st.DataObject
) -> None:
    wire = data.draw(_mutated_stream(level, role))
    decoder = Decoder() if role is Role.SERVER else Decoder(level, role=role)
    packets = _feed_all(decoder, [wire])
    _assert_canonical(packets, decoder, role)
