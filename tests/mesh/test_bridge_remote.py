"""A bridge against a scripted remote broker on a real socket: what a remote may
write into the log, what a refused PUBACK does to the push position, where the push
starts (docs/mesh.md, "Bridges to other brokers"). The bridge runs in-process on a
real LMDB log; the remote is a few lines of MQTT 5 server speaking over TCP."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import pytest
import trio

import tidelog
from tidelog.engine import Broker
from tidelog.mesh.bridge import STATE_NAMESPACE, position_key, releasing_key, session_key
from tidelog.mesh.config import LinkConfig, parse_link
from tidelog.mesh.node import Mesh
from tidelog.mesh.positions import CHECKPOINT_KEY, NAMESPACE, MeshPositions
from tidelog.mesh.stamps import digest, stamped_origin
from tidelog.mesh.stream import LinkChannel, LinkClosed
from tidelog.protocols.mqtt.decoder import Decoder, Role
from tidelog.protocols.mqtt.packets import (
    Connack,
    Connect,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
)
from tidelog.protocols.mqtt.properties import Properties
from tidelog.protocols.mqtt.reason_codes import ReasonCode
from tidelog.storage.records import NewEvent, Provenance
from tidelog.storage.records import Properties as StoredProperties

Script = Callable[[LinkChannel, int], Awaitable[None]]


async def _remote(
    script: Script,
    port: int = 0,
    connects: list[Connect] | None = None,
    *,
    resumes: bool = False,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A remote broker on 127.0.0.1: accepts the CONNECT (kept in ``connects``), then
    runs ``script`` with the connection's number (0, 1, ...). ``resumes``: connections
    after the first find their session (CONNACK session present)."""
    connections = 0

    async def serve(stream: trio.SocketStream) -> None:
        nonlocal connections
        number, connections = connections, connections + 1
        channel = LinkChannel(stream, Decoder(role=Role.SERVER), 5)
        connect = await channel.receive()
        assert isinstance(connect, Connect)
        channel.level = connect.protocol_level  # answer a 3.1.1 bridge in 3.1.1
        if connects is not None:
            connects.append(connect)
        await channel.send(Connack(session_present=resumes and number > 0))
        with contextlib.suppress(LinkClosed):  # the bridge hung up
            await script(channel, number)

    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(serve, listeners)


async def _running(mesh: Mesh) -> None:
    """Wait until ``mesh.run`` has started (links can be put)."""
    with trio.fail_after(10):
        while mesh._nursery is None:
            await trio.sleep(0.01)


async def _events(broker: Broker) -> list[str]:
    result = await broker.read(0, limit=1000)
    return [event.topic for event in result.events]


def test_a_remote_cannot_write_outside_the_pull_filters(tmp_path: Path) -> None:
    """Messages outside ``pull`` (or ``$`` topics) are acknowledged, counted and dropped."""
    acked: list[int] = []

    async def script(channel: LinkChannel, _number: int) -> None:
        subscribe = await channel.receive()
        assert isinstance(subscribe, Subscribe)
        await channel.send(Suback(subscribe.packet_id, (1,)))
        topics = ["cmd/ok", "evil/x", "$SYS/x", "cmd/a/b"]
        await channel.send(
            *(Publish(t, b"x", qos=1, packet_id=i + 1) for i, t in enumerate(topics))
        )
        while len(acked) < 4:
            packet = await channel.receive()
            if isinstance(packet, Puback):
                acked.append(packet.packet_id)
            elif isinstance(packet, Pingreq):
                await channel.send(Pingresp())
        await trio.sleep_forever()

    async def main() -> None:
        async with tidelog.open(f"lmdb://{tmp_path / 'data'}") as broker, trio.open_nursery() as n:
            port = await n.start(_remote, script)
            link = parse_link(
                {
                    "name": "m",
                    "url": f"mqtt://127.0.0.1:{port}",
                    "bridge": "mqtt5",
                    "pull": ["cmd/#"],
                },
                "test",
            )
            mesh = await Mesh.open(broker, "edge", [link])
            n.start_soon(mesh.run)
            with trio.fail_after(15):
                while len(acked) < 4:
                    await trio.sleep(0.02)
            assert sorted(acked) == [1, 2, 3, 4]  # all acknowledged: no resend forever
            assert await _events(broker) == ["cmd/ok", "cmd/a/b"]
            assert mesh.statuses["m"].refused == 2
            assert mesh.statuses["m"].shown()["refused"] == 2
            n.cancel_scope.cancel()

    trio.run(main)


def test_a_refused_puback_keeps_the_position_and_the_message_is_sent_again(
    tmp_path: Path,
) -> None:
    """The remote refuses the second message (0x87) on the first connection: the bridge
    reconnects and sends it (and what follows) again; events published before the link
    first connected (the remote was not yet there) are pushed too."""
    received: list[list[str]] = [[], []]

    async def script(channel: LinkChannel, number: int) -> None:
        while True:
            packet = await channel.receive()
            if isinstance(packet, Pingreq):
                await channel.send(Pingresp())
                continue
            assert isinstance(packet, Publish) and packet.packet_id is not None
            if number < len(received):
                received[number].append(packet.topic)
            code = ReasonCode.SUCCESS
            if number == 0 and packet.topic == "t/1":
                code = ReasonCode.NOT_AUTHORIZED
            await channel.send(Puback(packet.packet_id, code))

    async def main() -> None:
        async with tidelog.open(f"lmdb://{tmp_path / 'data'}") as broker, trio.open_nursery() as n:
            await broker.publish_many([NewEvent("before/link", b"x", 1)])
            with trio.socket.socket() as probe:  # the remote's port, not listening yet
                await probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            table = {
                "name": "m",
                "url": f"mqtt://127.0.0.1:{port}",
                "bridge": "mqtt5",
                "push": ["t/#"],
                "reconnect_seconds": 0.2,
            }
            mesh = await Mesh.open(broker, "edge", [parse_link(table, "test")])
            start = (await broker.load_state(STATE_NAMESPACE))[position_key("m")]
            assert int(start) == 1  # stored when the link was configured, not at a connect
            n.start_soon(mesh.run)
            await broker.publish_many([NewEvent(f"t/{i}", b"x", 1) for i in range(3)])
            await trio.sleep(0.3)  # the link tries to connect, while the remote is away
            remote_port = await n.start(_remote, script, port)
            assert remote_port == port
            with trio.fail_after(15):
                while len(received[1]) < 2:
                    await trio.sleep(0.02)
            assert received[0] == ["t/0", "t/1", "t/2"]
            assert received[1] == ["t/1", "t/2"]  # resumed at the refused message
            with trio.fail_after(5):
                while mesh.statuses["m"].position != 4:
                    await trio.sleep(0.02)
            n.cancel_scope.cancel()

    trio.run(main)


def test_a_deleted_bridge_forgets_its_position(tmp_path: Path) -> None:
    async def main() -> None:
        async with tidelog.open(f"lmdb://{tmp_path / 'data'}") as broker, trio.open_nursery() as n:
            mesh = await Mesh.open(broker, "edge", [])
            n.start_soon(mesh.run)
            await _running(mesh)
            await broker.publish_many([NewEvent(f"t/{i}", b"x", 1) for i in range(2)])
            table = {"name": "m", "url": "mqtt://127.0.0.1:1", "bridge": "mqtt5", "push": ["#"]}
            await mesh.put_link(parse_link(table, "test"), "admin")
            key = position_key("m")
            assert (await broker.load_state(STATE_NAMESPACE)).get(key) == b"2"
            await mesh.delete_link("m")
            assert key not in await broker.load_state(STATE_NAMESPACE)
            n.cancel_scope.cancel()

    trio.run(main)


def _stamped(offset: int, origin: str = "core", packet_id: int | None = None) -> Publish:
    stamps = (
        ("tidelog-origin", origin),
        ("tidelog-incarnation", "inc1"),
        ("tidelog-offset", str(offset)),
        ("tidelog-hops", "1"),
        ("tidelog-digest", digest(f"cmd/{origin}/{offset}", b"x")),
    )
    return Publish(
        f"cmd/{origin}/{offset}",
        b"x",
        qos=1,
        packet_id=packet_id or offset + 1,
        properties=Properties(user_properties=stamps),
    )


def test_redelivered_stamped_messages_are_stored_once_across_reconnects_and_restarts(
    tmp_path: Path,
) -> None:
    """The remote redelivers what the bridge appended (its PUBACKs lost, or the pushing
    tidelog sent it twice): a message whose origin offset is in the log already is
    acknowledged and dropped, after a reconnect and after the mesh restarts (positions
    recovered from the log); one whose origin is this node came back and is dropped;
    an unstamped one (what a 3.1.1 remote delivers) is always stored."""
    acked: list[int] = []
    offsets = [range(0, 5), range(0, 7), range(3, 9)]
    restarted = trio.Event()

    async def script(channel: LinkChannel, number: int) -> None:
        if number >= 2:
            await restarted.wait()  # for the mesh after the restart only
        subscribe = await channel.receive()
        assert isinstance(subscribe, Subscribe)
        await channel.send(Suback(subscribe.packet_id, (1,)))
        sent = [_stamped(o) for o in offsets[min(number, 2)]]
        if number == 0:
            sent += [_stamped(40, origin="edge"), Publish("cmd/plain", b"x", 1, packet_id=99)]
        await channel.send(*sent)
        waiting = {p.packet_id for p in sent}
        while waiting:
            packet = await channel.receive()
            if isinstance(packet, Puback):
                waiting.discard(packet.packet_id)
            elif isinstance(packet, Pingreq):
                await channel.send(Pingresp())
        acked.append(number)
        await channel.stream.aclose()  # a cut: the next connection redelivers

    async def main() -> None:
        async with tidelog.open(f"lmdb://{tmp_path / 'data'}") as broker, trio.open_nursery() as n:
            port = await n.start(_remote, script)
            table = {
                "name": "m",
                "url": f"mqtt://127.0.0.1:{port}",
                "bridge": "mqtt5",
                "pull": ["cmd/#"],
                "reconnect_seconds": 0.2,
            }
            link = parse_link(table, "test")
            mesh = await Mesh.open(broker, "edge", [link])
            async with trio.open_nursery() as first:
                first.start_soon(mesh.run)
                with trio.fail_after(15):
                    while len(acked) < 2:
                        await trio.sleep(0.02)
                first.cancel_scope.cancel()
            assert mesh.statuses["m"].duplicates == 5 + 1  # 0..4 again, the one of edge
            # a restart after a crash before any checkpoint had the positions: they
            # come back from the log
            await broker.save_state(NAMESPACE, {CHECKPOINT_KEY: MeshPositions().checkpoint(0)})
            mesh = await Mesh.open(broker, "edge", [link])
            n.start_soon(mesh.run)
            restarted.set()
            with trio.fail_after(15):
                while len(acked) < 3:
                    await trio.sleep(0.02)
            assert mesh.statuses["m"].duplicates == 4  # 3..6
            topics = await _events(broker)
            assert topics == ["cmd/core/0", "cmd/core/1", "cmd/core/2", "cmd/core/3",
                              "cmd/core/4", "cmd/plain", "cmd/core/5", "cmd/core/6",
                              "cmd/core/7", "cmd/core/8"]  # fmt: skip
            n.cancel_scope.cancel()

    trio.run(main)


def test_a_bridge_removed_from_the_configuration_or_replaced_loses_its_position(
    tmp_path: Path,
) -> None:
    """A bridge's push position goes with the bridge: removed from the configuration
    file while the node was down (at the next start), or replaced at run time by a
    link that is no bridge; the positions of the bridges still there stay. QoS 2
    messages being released go with it too, and when it is replaced by a bridge to
    another remote (not by one to the same remote: it may have delivered them)."""

    def bridge(name: str, port: int = 1, push: str = "#") -> LinkConfig:
        table = {"name": name, "url": f"mqtt://127.0.0.1:{port}", "bridge": "mqtt5",
                 "push": [push]}  # fmt: skip
        return parse_link(table, "test")

    async def releasing(broker: Broker, *names: str) -> None:
        stored = b'{"url": "mqtt://127.0.0.1:1", "offsets": [0]}'
        await broker.save_state(STATE_NAMESPACE, {releasing_key(n): stored for n in names})

    async def main() -> None:
        async with tidelog.open(f"lmdb://{tmp_path / 'data'}") as broker:
            await Mesh.open(broker, "edge", [bridge("gone"), bridge("kept")])
            await releasing(broker, "gone", "kept")
            keys = set(await broker.load_state(STATE_NAMESPACE))
            assert {position_key("gone"), position_key("kept")} <= keys
            await Mesh.open(broker, "edge", [bridge("kept")])  # a restart without "gone"
            keys = set(await broker.load_state(STATE_NAMESPACE))
            assert position_key("kept") in keys and position_key("gone") not in keys
            assert releasing_key("kept") in keys and releasing_key("gone") not in keys
            async with trio.open_nursery() as n:
                mesh = await Mesh.open(broker, "edge", [])
                n.start_soon(mesh.run)
                await _running(mesh)
                await mesh.put_link(bridge("m"), "admin")
                assert position_key("m") in await broker.load_state(STATE_NAMESPACE)
                await releasing(broker, "m")
                await mesh.put_link(bridge("m", push="t/#"), "admin")  # the same remote
                assert releasing_key("m") in await broker.load_state(STATE_NAMESPACE)
                await mesh.put_link(bridge("m", 2), "admin")  # another remote
                assert releasing_key("m") not in await broker.load_state(STATE_NAMESPACE)
                table = {"name": "m", "url": "mqtt://127.0.0.1:1", "push": ["#"]}
                await mesh.put_link(parse_link(table, "test"), "admin")  # a tidelog link now
                assert position_key("m") not in await broker.load_state(STATE_NAMESPACE)
                n.cancel_scope.cancel()

    trio.run(main)


def test_mqtt311_bridges_that_connected_before_the_upgrade_keep_their_session(
    tmp_path: Path,
) -> None:
    """Before new bridges cleared a remote session, an ``mqtt311`` bridge stored no
    session mark. On the first start after the upgrade, one with a push position (it
    existed before) is marked as connected, so it resumes its remote session; a new
    one is not, and later starts do not mark anything again."""

    def bridge(name: str) -> LinkConfig:
        table = {"name": name, "url": "mqtt://127.0.0.1:1", "bridge": "mqtt311",
                 "push": ["#"]}  # fmt: skip
        return parse_link(table, "test")

    async def main() -> None:
        async with tidelog.open(f"lmdb://{tmp_path / 'data'}") as broker:
            await broker.save_state(STATE_NAMESPACE, {position_key("old"): b"0"})  # before
            await Mesh.open(broker, "edge", [bridge("old"), bridge("new")])
            state = await broker.load_state(STATE_NAMESPACE)
            assert session_key("old") in state and session_key("new") not in state
            assert position_key("new") in state
            await Mesh.open(broker, "edge", [bridge("old"), bridge("new")])  # a restart
            assert session_key("new") not in await broker.load_state(STATE_NAMESPACE)

    trio.run(main)


def _with_stamps(topic: str, packet_id: int, **stamps: str) -> Publish:
    users = tuple((f"tidelog-{k}", v) for k, v in stamps.items())
    users += (("tidelog-digest", digest(topic, b"x")),)
    return Publish(topic, b"x", qos=1, packet_id=packet_id,
                   properties=Properties(user_properties=users))  # fmt: skip


def test_malformed_stamps_count_as_unstamped_and_never_wedge_a_bridge(tmp_path: Path) -> None:
    """Stamps any MQTT client can write: a superscript digit (``str.isdigit`` but not
    ``int``), 5,000 digits, a huge hop count. Pulled over one bridge they are stored as
    unstamped messages (acknowledged, not retried forever); a transit bridge pushes them
    on; a local publish carrying a bad ``tidelog-hops`` is pushed by a local bridge."""
    acked: list[int] = []
    pushed: list[str] = []
    bad = [
        _with_stamps("cmd/1", 1, origin="core", incarnation="i", offset="\u00b2", hops="1"),
        _with_stamps("cmd/2", 2, origin="core", incarnation="i", offset="9" * 5000),
        _with_stamps("cmd/3", 3, origin="core", incarnation="i", offset="3", hops="\u00b2"),
        _with_stamps("cmd/4", 4, origin="core", incarnation="i", offset="4", hops="9" * 5000),
    ]

    async def source(channel: LinkChannel, _number: int) -> None:
        subscribe = await channel.receive()
        assert isinstance(subscribe, Subscribe)
        await channel.send(Suback(subscribe.packet_id, (1,)))
        await channel.send(*bad)
        while True:
            packet = await channel.receive()
            if isinstance(packet, Puback):
                acked.append(packet.packet_id)
            elif isinstance(packet, Pingreq):
                await channel.send(Pingresp())

    async def sink(channel: LinkChannel, _number: int) -> None:
        while True:
            packet = await channel.receive()
            if isinstance(packet, Pingreq):
                await channel.send(Pingresp())
            elif isinstance(packet, Publish):
                assert packet.packet_id is not None
                pushed.append(packet.topic)
                await channel.send(Puback(packet.packet_id, ReasonCode.SUCCESS))

    async def main() -> None:
        async with tidelog.open(f"lmdb://{tmp_path / 'data'}") as broker, trio.open_nursery() as n:
            source_port = await n.start(_remote, source)
            sink_port = await n.start(_remote, sink)
            links = [
                {"name": "in", "url": f"mqtt://127.0.0.1:{source_port}", "bridge": "mqtt5",
                 "pull": ["cmd/#"], "reconnect_seconds": 0.2},
                {"name": "out", "url": f"mqtt://127.0.0.1:{sink_port}", "bridge": "mqtt5",
                 "push": ["cmd/#"], "mode": "transit", "reconnect_seconds": 0.2},
            ]  # fmt: skip
            mesh = await Mesh.open(broker, "edge", [parse_link(t, "test") for t in links])
            n.start_soon(mesh.run)
            users = (("tidelog-hops", "\u00b2"), ("tidelog-origin", "core"))
            await broker.publish_many(
                [NewEvent("cmd/local", b"x", 1, properties=StoredProperties(user_properties=users))]
            )
            with trio.fail_after(15):
                while len(pushed) < 5 or len(acked) < 4:
                    await trio.sleep(0.02)
            assert sorted(acked) == [1, 2, 3, 4]
            everything = ["cmd/1", "cmd/2", "cmd/3", "cmd/4", "cmd/local"]
            assert sorted(await _events(broker)) == everything
            assert sorted(pushed) == everything
            n.cancel_scope.cancel()

    trio.run(main)


def test_a_stamped_message_delivered_after_a_later_one_is_stored(tmp_path: Path) -> None:
    """The pushing tidelog's offset 1 was refused by the remote once and sent again
    after 2 was accepted: the remote delivers 0, 2, 1, then 2 again. 1 is stored (it
    was never appended here), the second 2 is a duplicate."""
    acked: list[int] = []

    async def script(channel: LinkChannel, _number: int) -> None:
        subscribe = await channel.receive()
        assert isinstance(subscribe, Subscribe)
        await channel.send(Suback(subscribe.packet_id, (1,)))
        for offset, packet_id in ((0, 1), (2, 2), (1, 3), (2, 4)):
            await channel.send(_stamped(offset, packet_id=packet_id))
        while True:
            packet = await channel.receive()
            if isinstance(packet, Puback):
                acked.append(packet.packet_id)
            elif isinstance(packet, Pingreq):
                await channel.send(Pingresp())

    async def main() -> None:
        async with tidelog.open(f"lmdb://{tmp_path / 'data'}") as broker, trio.open_nursery() as n:
            port = await n.start(_remote, script)
            table = {"name": "m", "url": f"mqtt://127.0.0.1:{port}", "bridge": "mqtt5",
                     "pull": ["cmd/#"]}  # fmt: skip
            mesh = await Mesh.open(broker, "edge", [parse_link(table, "test")])
            n.start_soon(mesh.run)
            with trio.fail_after(15):
                while len(acked) < 4:
                    await trio.sleep(0.02)
            assert await _events(broker) == ["cmd/core/0", "cmd/core/2", "cmd/core/1"]
            assert mesh.statuses["m"].duplicates == 1
            n.cancel_scope.cancel()

    trio.run(main)


def test_two_senders_appending_the_same_event_at_once_store_it_once(tmp_path: Path) -> None:
    """A bridge and a link sink (each under its own peer lock) hand the same stamped
    message to :meth:`MeshPositions.append_fresh` at the same time: one stores it."""
    bridged = Provenance(client_id="bridge:m")
    users = (("tidelog-origin", "core"), ("tidelog-incarnation", "i"), ("tidelog-offset", "5"))
    copy = NewEvent("cmd/x", b"x", 1, properties=StoredProperties(user_properties=users),
                    provenance=bridged)  # fmt: skip

    async def main() -> None:
        async with tidelog.open(f"lmdb://{tmp_path / 'data'}") as broker:
            positions = MeshPositions()
            stored: list[int] = []

            async def append() -> None:
                stored.append(len(await positions.append_fresh(broker, [copy])))

            async with trio.open_nursery() as n:
                n.start_soon(append)
                n.start_soon(append)
            assert sorted(stored) == [0, 1]
            assert await _events(broker) == ["cmd/x"]

    trio.run(main)


def test_qos2_messages_being_released_are_published_again_when_the_remote_lost_its_session(
    tmp_path: Path,
) -> None:
    """The remote received (PUBREC) but the connection was cut before PUBCOMP, and it
    restarted without its session (CONNACK session present = 0): the bridge publishes
    the message again instead of releasing an id the remote no longer knows."""
    seen: list[list[str]] = [[], []]

    async def script(channel: LinkChannel, number: int) -> None:
        while True:
            packet = await channel.receive()
            if isinstance(packet, Pingreq):
                await channel.send(Pingresp())
            elif number == 0 and isinstance(packet, Publish):
                assert packet.packet_id is not None
                seen[0].append(packet.topic)
                await channel.send(Pubrec(packet.packet_id))
            elif number == 0 and isinstance(packet, Pubrel):
                await channel.stream.aclose()  # cut before PUBCOMP
                return
            elif isinstance(packet, Publish | Pubrel):
                assert packet.packet_id is not None
                seen[1].append(packet.topic if isinstance(packet, Publish) else "PUBREL")
                if isinstance(packet, Publish):
                    await channel.send(Pubrec(packet.packet_id))
                else:
                    await channel.send(Pubcomp(packet.packet_id))

    async def main() -> None:
        async with tidelog.open(f"lmdb://{tmp_path / 'data'}") as broker, trio.open_nursery() as n:
            port = await n.start(_remote, script)
            table = {"name": "m", "url": f"mqtt://127.0.0.1:{port}", "bridge": "mqtt5",
                     "push": ["t/#"], "push_qos": 2, "reconnect_seconds": 0.2}  # fmt: skip
            mesh = await Mesh.open(broker, "edge", [parse_link(table, "test")])
            n.start_soon(mesh.run)
            await _running(mesh)
            await broker.publish_many([NewEvent("t/1", b"x", 1)])
            with trio.fail_after(15):
                while "PUBREL" not in seen[1]:
                    await trio.sleep(0.02)
            assert seen == [["t/1"], ["t/1", "PUBREL"]]
            n.cancel_scope.cancel()

    trio.run(main)


def test_qos2_messages_being_released_are_released_again_after_a_crash(tmp_path: Path) -> None:
    """The node sent PUBREL and stopped before the PUBCOMP came (a crash: its memory
    is gone). The remote had completed the message (delivered, packet id forgotten).
    Restarted, the node releases it again (stored before the PUBREL left) instead of
    publishing it again, which the remote would deliver twice; the PUBCOMP's "no such
    packet id" counts as complete, and the next message goes on normally."""
    delivered: list[str] = []
    received: list[list[str]] = [[], []]
    released = trio.Event()

    async def script(channel: LinkChannel, number: int) -> None:
        awaiting: set[int] = set()  # QoS 2, delivered on PUBLISH, forgotten on PUBREL
        while True:
            packet = await channel.receive()
            if isinstance(packet, Pingreq):
                await channel.send(Pingresp())
            elif isinstance(packet, Publish):
                assert packet.packet_id is not None
                received[number].append(packet.topic)
                if packet.packet_id not in awaiting:
                    awaiting.add(packet.packet_id)
                    delivered.append(packet.topic)
                await channel.send(Pubrec(packet.packet_id))
            elif isinstance(packet, Pubrel):
                received[number].append("PUBREL")
                known = packet.packet_id in awaiting
                awaiting.discard(packet.packet_id)
                if number == 0:
                    released.set()  # and no PUBCOMP: the node "crashes" now
                    await trio.sleep_forever()
                code = ReasonCode.SUCCESS if known else ReasonCode.PACKET_IDENTIFIER_NOT_FOUND
                await channel.send(Pubcomp(packet.packet_id, code))

    table = {"name": "m", "url": "", "bridge": "mqtt5", "push": ["t/#"], "push_qos": 2,
             "reconnect_seconds": 0.05}  # fmt: skip

    async def main() -> None:
        async with trio.open_nursery() as outer:
            port = await outer.start(partial(_remote, script, resumes=True))
            table["url"] = f"mqtt://127.0.0.1:{port}"
            url = f"lmdb://{tmp_path / 'data'}"
            async with tidelog.open(url) as broker, trio.open_nursery() as n:
                mesh = await Mesh.open(broker, "edge", [parse_link(table, "test")])
                n.start_soon(mesh.run)
                await _running(mesh)
                await broker.publish_many([NewEvent("t/1", b"x", 1)])
                with trio.fail_after(15):
                    await released.wait()
                n.cancel_scope.cancel()
            async with tidelog.open(url) as broker, trio.open_nursery() as n:
                mesh = await Mesh.open(broker, "edge", [parse_link(table, "test")])
                n.start_soon(mesh.run)
                await _running(mesh)
                await broker.publish_many([NewEvent("t/2", b"x", 1)])
                with trio.fail_after(15):
                    while "t/2" not in delivered or received[1][-1] != "PUBREL":
                        await trio.sleep(0.02)
                n.cancel_scope.cancel()
            outer.cancel_scope.cancel()

    trio.run(main)
    assert received == [["t/1", "PUBREL"], ["PUBREL", "t/2", "PUBREL"]]
    assert delivered == ["t/1", "t/2"]


def test_stamps_copied_onto_a_republished_message_do_not_make_it_a_duplicate(
    tmp_path: Path,
) -> None:
    """A processor at the remote republishes each ``raw/x`` this node pushed as
    ``processed/x``, user properties copied (what Node-RED does): the results are new
    messages (the stamps' digest does not match them), not this node's events come
    back nor duplicates; they are stored without the copied stamps."""
    acked: list[int] = []

    async def script(channel: LinkChannel, _number: int) -> None:
        republished = 100
        while True:
            packet = await channel.receive()
            if isinstance(packet, Pingreq):
                await channel.send(Pingresp())
            elif isinstance(packet, Subscribe):
                await channel.send(Suback(packet.packet_id, (1,)))
            elif isinstance(packet, Puback):
                acked.append(packet.packet_id)
            elif isinstance(packet, Publish):
                assert packet.packet_id is not None
                await channel.send(Puback(packet.packet_id))
                republished += 1
                topic = packet.topic.replace("raw/", "processed/")
                await channel.send(
                    Publish(
                        topic, b"result", qos=1, packet_id=republished, properties=packet.properties
                    )
                )

    async def main() -> None:
        async with tidelog.open(f"lmdb://{tmp_path / 'data'}") as broker, trio.open_nursery() as n:
            port = await n.start(_remote, script)
            table = {"name": "m", "url": f"mqtt://127.0.0.1:{port}", "bridge": "mqtt5",
                     "push": ["raw/#"], "pull": ["processed/#"]}  # fmt: skip
            mesh = await Mesh.open(broker, "edge", [parse_link(table, "test")])
            n.start_soon(mesh.run)
            await _running(mesh)
            await broker.publish_many([NewEvent(f"raw/{i}", b"x", 1) for i in range(3)])
            with trio.fail_after(15):
                while len(acked) < 3:
                    await trio.sleep(0.02)
            result = await broker.read(0, limit=1000)
            processed = [e for e in result.events if e.topic.startswith("processed/")]
            assert [e.topic for e in processed] == ["processed/0", "processed/1", "processed/2"]
            assert all(stamped_origin(e) is None for e in processed)
            assert mesh.statuses["m"].duplicates == 0
            n.cancel_scope.cancel()

    trio.run(main)


@pytest.mark.parametrize(
    ("version", "first"),
    [
        ("mqtt5", [True, False]),
        # a 3.1.1 clean session ends at the disconnect: clear it, then connect persistent
        ("mqtt311", [True, False, False]),
    ],
)
def test_a_new_bridge_starts_a_clean_session_once_then_resumes_it(
    tmp_path: Path, version: str, first: list[bool]
) -> None:
    """The first CONNECT of a bridge starts clean (a session an earlier bridge of the
    same name left at the remote, with its QoS 2 packet ids, is not taken over); after
    a cut it resumes the session; deleted and created again, it starts clean again."""
    connects: list[Connect] = []
    count = len(first)

    async def script(channel: LinkChannel, _number: int) -> None:
        await channel.stream.aclose()  # a cut right after the CONNACK

    async def main() -> None:
        async with tidelog.open(f"lmdb://{tmp_path / 'data'}") as broker, trio.open_nursery() as n:
            port = await n.start(_remote, script, 0, connects)
            table = {"name": "m", "url": f"mqtt://127.0.0.1:{port}", "bridge": version,
                     "push": ["t/#"], "reconnect_seconds": 0.05}  # fmt: skip
            mesh = await Mesh.open(broker, "edge", [])
            n.start_soon(mesh.run)
            await _running(mesh)
            await mesh.put_link(parse_link(table, "test"), "admin")
            with trio.fail_after(15):
                while len(connects) < count:
                    await trio.sleep(0.01)
            await mesh.delete_link("m")
            assert [c.clean_start for c in connects[:count]] == first
            start = len(connects)
            await mesh.put_link(parse_link(table, "test"), "admin")
            with trio.fail_after(15):
                while len(connects) < start + count:
                    await trio.sleep(0.01)
            assert [c.clean_start for c in connects[start : start + count]] == first
            n.cancel_scope.cancel()

    trio.run(main)
