"""A link's receiving side against a scripted origin on a real socket: the batches a
peer sends are checked and decoded as they arrive, appended once each (an overlap
of a batch sent again is dropped), acknowledged once durable, and a bad batch ends
the link with nothing of it appended and a PROTOCOL_ERROR DISCONNECT saying why. The
receiver runs in-process on a real LMDB log; the origin is a few lines speaking the
``$link/`` protocol over TCP."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

import tidelog
from tidelog.mesh import wire
from tidelog.mesh.config import parse_link
from tidelog.mesh.node import Mesh
from tidelog.mesh.stream import RECEIVE_BYTES, LinkChannel
from tidelog.protocols.mqtt.decoder import Decoder, Role
from tidelog.protocols.mqtt.encoder import encode
from tidelog.protocols.mqtt.packets import Connack, Connect, Disconnect, Puback, Publish
from tidelog.protocols.mqtt.reason_codes import ReasonCode
from tidelog.storage.records import Event, NewEvent, Provenance, encode_record


def _local(offsets: range | list[int]) -> bytes:
    """The origin's own events at ``offsets``, as its source encodes them."""
    events = [Event(o, 1, f"t/{o}", b"p%d" % o, 1) for o in offsets]
    return wire.encode_batch(events, "origin", "inc1")


def _forged() -> bytes:
    """One event whose last hop is not the sender's."""
    came = Provenance(origin_node="origin", origin_offset=99, hop_path=("other/x/99",))
    record = encode_record(NewEvent("t/99", b"p", provenance=came), 5)
    return len(record).to_bytes(4, "big") + record


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (_forged(), "last hop is not origin"),
        # the origin's offsets repeat within one batch (a sender reads its log in order;
        # a batch overlapping the one before is dropped quietly, above)
        (_local([8, 9, 9, 10]), "offsets of origin origin/inc1 repeat or fall in a batch"),
        (_local([8, 10, 9]), "repeat or fall in a batch: 9 after 10"),
    ],
    ids=["forged hop", "offsets repeat", "offsets fall"],
)
def test_batches_are_appended_once_acknowledged_and_a_bad_one_ends_the_link(
    tmp_path: Path, bad: bytes, reason: str
) -> None:
    acked: list[int] = []
    ended: list[Disconnect] = []

    async def origin(stream: trio.SocketStream) -> None:
        channel = LinkChannel(stream, Decoder(role=Role.SERVER), 5)
        assert isinstance(await channel.receive(), Connect)
        await channel.send(Connack())
        await channel.receive_publish(wire.HELLO, 10)
        welcome = {"node": "origin", "incarnation": "inc1", "nodes": ["origin"]}
        await channel.send(wire.control(wire.WELCOME, welcome))
        start = wire.parse_control(await channel.receive_publish(wire.START, 10))
        assert start["pull_from"] is None

        async def acknowledged(count: int) -> None:
            while len(acked) < count:
                packet = await channel.receive()
                if isinstance(packet, Puback):
                    acked.append(packet.packet_id)

        # two batches at once (one group, one commit), then one that repeats 3..4
        await channel.send(
            wire.events_packet(_local(range(0, 3)), 1, 3),
            wire.events_packet(_local(range(3, 5)), 2, 5),
        )
        await acknowledged(2)
        await channel.send(wire.events_packet(_local(range(3, 8)), 3, 8))
        await acknowledged(3)
        await channel.send(wire.events_packet(bad, 4, 100))
        while True:  # the receiver says why it ends the link
            packet = await channel.receive()
            if isinstance(packet, Disconnect):
                ended.append(packet)
                break
            assert not isinstance(packet, Puback), "the bad batch was acknowledged"

    async def main() -> None:
        async with tidelog.open(f"lmdb://{tmp_path / 'data'}") as broker, trio.open_nursery() as n:
            listeners = await n.start(trio.serve_tcp, origin, 0)
            port = listeners[0].socket.getsockname()[1]
            # window 2: each durable batch acknowledged at once (a wider window holds
            # some PUBACKs while the sender has credit to spare; tests/mesh/test_links.py)
            url = f"mqtt://127.0.0.1:{port}"
            table = {"name": "o", "url": url, "pull": ["t/#"], "window": 2}
            mesh = await Mesh.open(broker, "edge", [parse_link(table, "test")])
            n.start_soon(mesh.run)
            with trio.fail_after(20):
                while not ended:
                    await trio.sleep(0.02)
            assert acked == [1, 2, 3]
            assert ended[0].reason_code == ReasonCode.PROTOCOL_ERROR
            assert reason in (ended[0].properties.reason_string or "")
            stored = (await broker.read(0, limit=100)).events
            assert [e.topic for e in stored] == [f"t/{o}" for o in range(8)]
            assert [e.provenance.origin_offset for e in stored if e.provenance] == list(range(8))
            status = mesh.statuses["o"]
            assert (status.events_in, status.batches_in, status.duplicates) == (8, 3, 2)
            assert mesh.positions.origins["origin"] == ("inc1", 8)
            assert mesh.positions.senders["origin"] == ("inc1", 8)
            n.cancel_scope.cancel()

    trio.run(main)


def test_a_batch_larger_than_one_read_arrives_whole_whatever_the_pieces() -> None:
    """A link reads up to ``RECEIVE_BYTES`` at a time: a batch longer than that (or
    cut into small pieces by the network) is put together before it is handed on,
    and the packet behind it in the same bytes follows it."""
    batch = _local(range(0, 5000))
    assert len(batch) > RECEIVE_BYTES
    packet = wire.events_packet(batch, 7, 5000)
    data = encode(packet, 5) + encode(Puback(7), 5)

    async def main() -> None:
        for piece in (len(data), 1400, RECEIVE_BYTES + 1):
            sending, receiving = trio.testing.memory_stream_pair()
            channel = LinkChannel(receiving, Decoder(5, role=Role.CLIENT), 5)
            for start in range(0, len(data), piece):
                await sending.send_all(data[start : start + piece])
            got = await channel.receive()
            assert isinstance(got, Publish)
            assert (got.topic, got.packet_id, got.payload) == (wire.EVENTS, 7, batch)
            assert wire.next_offset_of(got) == 5000
            assert await channel.receive() == Puback(7)

    trio.run(main)
