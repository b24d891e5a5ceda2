"""A link's sending side against a scripted receiver on a real socket: the origin runs
in-process on a real LMDB log (its mesh accepting the link the way its MQTT listener
hands it over), the receiver is a few lines speaking the ``$link/`` protocol over TCP.
The test decides what the origin commits, and when, through a commit hook of its own
(the broker's public ``add_commit_hook``), so which commits a batch carries does not
depend on timing."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import trio

import tidelog
from tidelog.engine.broker import Broker
from tidelog.mesh import wire
from tidelog.mesh.node import Mesh
from tidelog.mesh.stream import LinkChannel
from tidelog.protocols.mqtt.decoder import Decoder, Role
from tidelog.protocols.mqtt.packets import Connack, Connect, Publish
from tidelog.protocols.mqtt.properties import Properties
from tidelog.security.acl import ACL, Access, Principal, parse_acl
from tidelog.storage.records import Event, NewEvent


def burst(first: int, count: int) -> list[NewEvent]:
    return [NewEvent(f"t/{o % 5}", b"p%d" % o, 1) for o in range(first, first + count)]


async def serve_links(broker: Broker, nursery: trio.Nursery) -> tuple[Mesh, int]:
    """The broker's mesh, accepting links on a port (returned) from user ``raw``."""
    mesh = await Mesh.open(broker, "origin", [])
    nursery.start_soon(mesh.run)
    access = Access(ACL(parse_acl("user raw\nallow link #\n")), Principal("raw"))

    async def handler(stream: trio.SocketStream) -> None:
        decoder = Decoder(role=Role.SERVER)  # the level comes with the CONNECT
        packets = []
        while not packets:
            packets = decoder.feed(await stream.receive_some(65_536))
        connect = packets.pop(0)
        assert isinstance(connect, Connect)
        await mesh.accept(stream, decoder, connect, access, packets)

    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return mesh, listeners[0].socket.getsockname()[1]


async def pull(port: int, mesh: Mesh) -> LinkChannel:
    """Dial a link pulling ``t/#`` (default ``batch_events``: 1,000) from the head, and
    wait until its source keeps a live tail."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    channel = LinkChannel(stream, Decoder(5, role=Role.CLIENT))
    link = Properties(user_properties=((wire.LINK_PROPERTY, "1"),))
    await channel.send(Connect(client_id="raw", protocol_level=5, properties=link))
    assert isinstance(await channel.receive(), Connack)
    hello = {"v": wire.VERSION, "node": "raw", "incarnation": "i1", "link": "l"}
    await channel.send(wire.control(wire.HELLO, {**hello, "pull": ["t/#"], "heartbeat_ms": 60_000}))
    await channel.receive_publish(wire.WELCOME, 10)
    await channel.send(wire.control(wire.START, {"pull_from": None}))
    while "raw" not in mesh.sessions or mesh.sessions["raw"].status.sends_from != "memory":
        await trio.sleep(0.01)
    return channel


async def batch_ends(channel: LinkChannel, last: int) -> list[int]:
    """The next offset each ``$link/events`` batch names, up to ``last``."""
    ends: list[int] = []
    while not ends or ends[-1] < last:
        packet = await channel.receive()
        if isinstance(packet, Publish) and packet.topic == wire.EVENTS:
            ends.append(wire.next_offset_of(packet))
    return ends


def then_commit(broker: Broker, after: int, events: list[NewEvent]) -> Callable[..., None]:
    """A commit hook submitting ``events`` once the commit starting at ``after`` is in:
    they are on their way (submitted, not committed) when the link's source wakes."""

    def hook(committed: list[Event]) -> None:
        if committed[0].offset == after:
            broker.publish_nowait(events, lambda _result: None)

    broker.add_commit_hook(hook)
    return hook


def test_a_source_under_load_sends_a_commit_with_the_one_on_its_way(tmp_path: Path) -> None:
    """At the head, a source woken by a commit of at least a quarter of a batch while the
    node has another commit on its way waits for that one and sends both in one batch
    (half the batches under load: the link's cost per batch at both ends); a smaller
    commit (a light load) goes at once, another on its way or not."""

    async def main() -> None:
        async with tidelog.open(f"lmdb://{tmp_path / 'data'}") as broker:
            async with trio.open_nursery() as nursery:
                mesh, port = await serve_links(broker, nursery)
                with trio.fail_after(20):
                    channel = await pull(port, mesh)
                    hook = then_commit(broker, 0, burst(300, 300))
                    broker.publish_nowait(burst(0, 300), lambda _result: None)
                    assert await batch_ends(channel, 600) == [600]  # one batch of two commits
                    broker.remove_commit_hook(hook)

                    hook = then_commit(broker, 600, burst(610, 10))
                    broker.publish_nowait(burst(600, 10), lambda _result: None)
                    assert await batch_ends(channel, 620) == [610, 620]  # each at once
                    broker.remove_commit_hook(hook)

                    broker.publish_nowait(burst(620, 300), lambda _result: None)
                    assert await batch_ends(channel, 920) == [920]  # nothing on its way
                    status = mesh.sessions["raw"].status
                    while status.events_out < 920:  # counted once the send has returned
                        await trio.sleep(0.01)
                    assert (status.events_out, status.batches_out) == (920, 4)
                nursery.cancel_scope.cancel()
            stored = (await broker.read(0, limit=1000)).events
            assert [e.payload for e in stored] == [b"p%d" % o for o in range(920)]

    trio.run(main)
