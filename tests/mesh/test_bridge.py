"""Bridges and a real mosquitto: a ``[[link]]`` with ``bridge = "mqtt5"`` or
``"mqtt311"`` pulls from and pushes to a plain MQTT broker, and mosquitto's own
bridge dials tidelog (docs/mesh.md, "Bridges to other brokers")."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.mesh.cluster import FaultProxy, Node, start_all, wait_for, wait_heads
from tidelog.protocols.mqtt import Puback, Publish, encode
from tidelog.protocols.mqtt.properties import NO_PROPERTIES, Properties
from tidelog.testing.mqtt_client import ClientConnection, Target, encoded_ack

pytestmark = pytest.mark.slow
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@contextlib.contextmanager
def running_mosquitto(tmp_path: Path, extra: str = "") -> Iterator[int]:
    """A mosquitto on 127.0.0.1 (anonymous, in memory, ``extra`` configuration);
    yields its port."""
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is not installed (scripts/test.sh installs it)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{extra}"
    )
    process = subprocess.Popen(
        [MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, "no mosquitto"
                time.sleep(0.05)
        yield port
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[int]:
    with running_mosquitto(tmp_path) as port:
        yield port


async def _publish_at(port: int, topics: list[str]) -> None:
    client = await ClientConnection.open(Target("127.0.0.1", port), "pub-at-mosquitto", 5)
    data = b"".join(
        encode(Publish(t, f"m-{i}".encode(), qos=1, packet_id=i + 1), 5)
        for i, t in enumerate(topics)
    )
    await client.send(data)
    acked = 0
    with trio.fail_after(20):
        while acked < len(topics):
            acked += sum(isinstance(p, Puback) for p in await client.receive_packets())
    await client.close()


async def _collect(port: int, topic_filter: str, ready: trio.Event, out: list[str]) -> None:
    """Subscribe at mosquitto and collect topics until cancelled."""
    client = await ClientConnection.open(Target("127.0.0.1", port), "watcher", 5)
    await client.subscribe(topic_filter, 1)
    ready.set()
    try:
        while True:
            acks = b""
            for packet in await client.receive_packets():
                if isinstance(packet, Publish):
                    out.append(packet.topic)
                    if packet.packet_id:
                        acks += encoded_ack(Puback, packet.packet_id, 5)
            if acks:
                await client.send(acks)
    finally:
        with trio.CancelScope(shield=True):
            await client.close()


@pytest.mark.parametrize(
    ("version", "pull", "push"),
    [
        # overlapping filters: No-Local and the bridge's marker stop echoes
        ("mqtt5", ["#"], ["#"]),
        # 3.1.1 (with the bridge bit) needs disjoint filters
        ("mqtt311", ["cmd/#"], ["t/#"]),
    ],
)
def test_a_bridge_to_mosquitto_both_ways_without_echo_and_across_a_cut(
    tmp_path: Path, mosquitto: int, version: str, pull: list[str], push: list[str]
) -> None:
    edge = Node(tmp_path, "edge")
    proxy = FaultProxy()
    proxy.target = mosquitto
    edge.links.append(
        {
            "name": "mosq",
            "url": proxy.url,
            "bridge": version,
            "pull": pull,
            "push": push,
            "remote_prefix": "site1/",
            "heartbeat_seconds": 1.0,
        }
    )
    try:
        start_all([edge])
        wait_for(lambda: edge.links_status()["mosq"]["state"] == "connected", what="bridge up")
        seen: list[str] = []

        async def scenario() -> None:
            async with trio.open_nursery() as nursery:
                ready = trio.Event()
                nursery.start_soon(_collect, mosquitto, "site1/#", ready, seen)
                await ready.wait()
                await trio.to_thread.run_sync(
                    edge.publish, [(f"t/{i % 3}", f"e-{i}".encode()) for i in range(40)]
                )
                await _publish_at(mosquitto, [f"site1/cmd/{i % 2}" for i in range(30)])
                with trio.fail_after(60):
                    while len(seen) < 70 or edge.head() < 70:
                        await trio.sleep(0.1)
                # a cut: what mosquitto holds for the bridge's session arrives later
                proxy.cut()
                await trio.to_thread.run_sync(
                    wait_for,
                    lambda: edge.links_status()["mosq"]["state"] != "connected",
                    30,
                    "the cut noticed",
                )
                await _publish_at(mosquitto, [f"site1/cmd/late/{i}" for i in range(10)])
                proxy.restore()
                with trio.fail_after(60):
                    while edge.head() < 80:
                        await trio.sleep(0.1)
                await trio.sleep(1.5)  # anything echoed would arrive by now
                nursery.cancel_scope.cancel()

        trio.run(scenario)
        assert edge.head() == 80  # 40 own + 30 + 10 pulled: nothing came back twice
        assert sorted(seen) == sorted(
            [f"site1/t/{i % 3}" for i in range(40)]
            + [f"site1/cmd/{i % 2}" for i in range(30)]
            + [f"site1/cmd/late/{i}" for i in range(10)]
        )  # the pulled messages were not pushed back to mosquitto
        edge.stop()
        pulled = [e.topic for e in edge.events() if e.provenance and e.provenance.client_id]
        assert pulled == [f"cmd/{i % 2}" for i in range(30)] + [f"cmd/late/{i}" for i in range(10)]
    finally:
        if edge.serve is not None:
            edge.serve.kill()
        proxy.close()


@pytest.mark.parametrize("version", ["mqtt5", "mqtt311"])
def test_a_new_bridge_does_not_take_over_a_session_left_at_mosquitto(
    tmp_path: Path, mosquitto: int, version: str
) -> None:
    """A persistent session an earlier client of the bridge's id left at mosquitto, with
    a message queued for it, is cleared by the new bridge's first connection: the stale
    message is not appended; what is published once the bridge is up is."""

    async def leave_a_session() -> None:
        level = 5 if version == "mqtt5" else 4
        properties = Properties(session_expiry_interval=3600) if level == 5 else NO_PROPERTIES
        stale = await ClientConnection.open(
            Target("127.0.0.1", mosquitto), "edge-mosq", level,
            clean_start=False, properties=properties,
        )  # fmt: skip
        await stale.subscribe("cmd/#", 1)
        await stale.close()
        await _publish_at(mosquitto, ["cmd/stale"])  # queued for the stale session

    trio.run(leave_a_session)
    edge = Node(tmp_path, "edge")
    edge.links.append({"name": "mosq", "url": f"mqtt://127.0.0.1:{mosquitto}",
                       "bridge": version, "pull": ["cmd/#"]})  # fmt: skip
    try:
        start_all([edge])
        wait_for(lambda: edge.links_status()["mosq"]["state"] == "connected", what="bridge up")
        trio.run(_publish_at, mosquitto, ["cmd/fresh"])
        # a stale message delivered with the session would come before the fresh one
        wait_for(lambda: edge.head() >= 1, what="a message pulled")
        edge.stop()
        assert [e.topic for e in edge.events()] == ["cmd/fresh"]
    finally:
        if edge.serve is not None:
            edge.serve.kill()


def test_a_mosquitto_bridge_into_tidelog_with_the_bridge_bit_carries_both_ways_without_echo(
    tmp_path: Path,
) -> None:
    """mosquitto's own bridge (MQTT 3.1.1, ``try_private`` on by default: the bridge
    bit) dials tidelog with ``topic # both``: tidelog accepts the bit and gives the
    bridge No-Local, so nothing comes back to where it was published."""
    core = Node(tmp_path, "core")
    start_all([core])
    assert core.serve is not None
    bridge = f"connection tl\naddress 127.0.0.1:{core.serve.ports['MQTT']}\ntopic # both 1\n"
    try:
        with running_mosquitto(tmp_path, bridge) as port:
            seen: list[str] = []

            async def scenario() -> None:
                async with trio.open_nursery() as nursery:
                    ready = trio.Event()
                    nursery.start_soon(_collect, port, "#", ready, seen)
                    await ready.wait()
                    with trio.fail_after(30):  # the bridge is up once a message crosses
                        while core.head() == 0:
                            await _publish_at(port, ["probe"])
                            await trio.sleep(0.2)
                    base, probes = core.head(), seen.count("probe")
                    await _publish_at(port, [f"m/{i}" for i in range(20)])
                    await trio.to_thread.run_sync(
                        core.publish, [(f"t/{i}", b"x") for i in range(15)]
                    )
                    with trio.fail_after(30):
                        while core.head() < base + 35 or len(seen) < probes + 35:
                            await trio.sleep(0.1)
                    await trio.sleep(1.5)  # anything echoed would arrive by now
                    assert core.head() == base + 35
                    assert sorted(t for t in seen if t != "probe") == sorted(
                        [f"m/{i}" for i in range(20)] + [f"t/{i}" for i in range(15)]
                    )
                    nursery.cancel_scope.cancel()

            trio.run(scenario)
    finally:
        if core.serve is not None:
            core.serve.kill()


def test_two_tidelogs_through_mosquitto_store_each_event_once_across_cuts(
    tmp_path: Path, mosquitto: int
) -> None:
    """edge pushes over a bridge to mosquitto, core pulls over another; both bridges
    are cut mid-stream (edge resends what mosquitto had but did not acknowledge,
    mosquitto redelivers what core appended but did not acknowledge): core stores
    every event of edge once, in order, by the stamps' origin and offset."""
    edge, core = Node(tmp_path, "edge"), Node(tmp_path, "core")
    push, pull = FaultProxy(), FaultProxy()
    push.target = pull.target = mosquitto
    common = {"bridge": "mqtt5", "heartbeat_seconds": 0.5, "reconnect_seconds": 0.2}
    edge.links.append({"name": "up", "url": push.url, "push": ["t/#"], **common})
    core.links.append({"name": "down", "url": pull.url, "pull": ["t/#"], **common})
    total = 200
    try:
        start_all([edge, core])
        for node, name in ((edge, "up"), (core, "down")):
            wait_for(lambda n=node, k=name: n.links_status()[k]["state"] == "connected")
        pull.delay = 0.02  # core's PUBACKs lag behind what mosquitto sent it
        for batch in range(4):
            start = core.head()
            edge.publish([(f"t/{i % 5}", f"e-{batch}-{i}".encode()) for i in range(total // 4)])
            wait_for(lambda s=start: core.head() > s + 10, what="core receiving")
            for proxy in (pull, push) if batch % 2 else (push, pull):
                proxy.cut()
                proxy.restore()
        wait_heads({core: total})
        time.sleep(1.5)  # any redelivery still on its way arrives by now
        duplicates = core.links_status()["down"]["duplicates"]
        edge.stop()
        core.stop()
        stamps = []
        for event in core.events():
            props = dict(event.properties.user_properties) if event.properties else {}
            stamps.append((props.get("tidelog-origin"), int(props.get("tidelog-offset", -1))))
        assert stamps == [("edge", offset) for offset in range(total)], duplicates
    finally:
        for node in (edge, core):
            if node.serve is not None:
                node.serve.kill()
        push.close()
        pull.close()


def test_transit_bridges_in_a_cycle_of_brokers_deliver_each_event_once(tmp_path: Path) -> None:
    """Two tidelogs, each bridged in transit mode to the same two mosquittos, push and
    pull ``t/#`` both ways: a ring a -> m1 -> b -> m2 -> a. Each node stores the
    other's events once (the second copy, from the other mosquitto, has an origin
    offset stored already), an event that comes back to its origin is dropped there,
    and the link counters stop moving when the traffic stops."""
    (tmp_path / "m1").mkdir()
    (tmp_path / "m2").mkdir()
    a, b = Node(tmp_path, "a"), Node(tmp_path, "b")
    with (
        running_mosquitto(tmp_path / "m1") as m1,
        running_mosquitto(tmp_path / "m2") as m2,
    ):
        for node in (a, b):
            for name, port in (("m1", m1), ("m2", m2)):
                node.links.append(
                    {
                        "name": name,
                        "url": f"mqtt://127.0.0.1:{port}",
                        "bridge": "mqtt5",
                        "mode": "transit",
                        "pull": ["t/#"],
                        "push": ["t/#"],
                        "heartbeat_seconds": 0.5,
                    }
                )
        try:
            start_all([a, b])
            for node in (a, b):
                wait_for(
                    lambda n=node: all(s["state"] == "connected" for s in n.links_status().values())
                )
            a.publish([(f"t/a/{i}", b"x") for i in range(20)])
            b.publish([(f"t/b/{i}", b"x") for i in range(20)])
            wait_heads({a: 40, b: 40})

            def counters() -> list[int]:
                return [
                    s[k]
                    for n in (a, b)
                    for s in n.links_status().values()
                    for k in ("events_in", "events_out", "duplicates")
                ]

            before = counters()
            time.sleep(2)  # a loop would keep the counters moving
            assert counters() == before
            assert (a.head(), b.head()) == (40, 40)
            dropped = sum(s["duplicates"] for n in (a, b) for s in n.links_status().values())
            assert dropped >= 40  # each event came to the other node twice at least
        finally:
            for node in (a, b):
                if node.serve is not None:
                    node.serve.kill()


def test_a_qos_2_push_reaches_mosquitto_once_across_cuts(tmp_path: Path, mosquitto: int) -> None:
    """``push_qos = 2``: the bridge's connection is cut mid-stream, several times; a
    message mosquitto had received is completed (PUBREL) after the reconnect, not
    published again, so a subscriber there gets every event once, in order."""
    edge = Node(tmp_path, "edge")
    proxy = FaultProxy()
    proxy.target = mosquitto
    edge.links.append(
        {
            "name": "up",
            "url": proxy.url,
            "bridge": "mqtt5",
            "push": ["t/#"],
            "push_qos": 2,  # with 1, the subscriber gets dozens of duplicates here
            "heartbeat_seconds": 0.5,
            "reconnect_seconds": 0.2,
        }
    )
    total = 300
    seen: list[str] = []
    try:
        start_all([edge])
        wait_for(lambda: edge.links_status()["up"]["state"] == "connected", what="bridge up")

        async def scenario() -> None:
            async with trio.open_nursery() as nursery:
                ready = trio.Event()
                nursery.start_soon(_collect, mosquitto, "t/#", ready, seen)
                await ready.wait()
                proxy.delay = 0.01  # acknowledgements lag behind what mosquitto has
                for batch in range(3):
                    start = len(seen)
                    events = [(f"t/{batch * 100 + i}", b"x") for i in range(total // 3)]
                    await trio.to_thread.run_sync(edge.publish, events)
                    with trio.fail_after(60):
                        while len(seen) < start + 10:
                            await trio.sleep(0.01)
                    proxy.cut()
                    proxy.restore()
                with trio.fail_after(60):
                    while len(seen) < total:
                        await trio.sleep(0.1)
                await trio.sleep(1.5)  # a duplicate still on its way arrives by now
                nursery.cancel_scope.cancel()

        trio.run(scenario)
        assert seen == [f"t/{i}" for i in range(total)]
    finally:
        if edge.serve is not None:
            edge.serve.kill()
        proxy.close()
