"""Faults in a cluster: a node SIGKILLed in the middle of a QoS 1 storm."""

from __future__ import annotations

import queue
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import pytest
import trio
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties

from tests.cluster.conftest import collect, start_node
from tests.protocols.mqtt.server_helpers import Client, clients, wait_for
from tidelog.engine.cluster import claim_node
from tidelog.engine.wills import parse_key
from tidelog.storage import open_log
from tidelog.testing.server import ServerProcess

STORM = 3000


@pytest.fixture
def two_nodes(tmp_path: Path, log_url: str) -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    try:
        for index in range(2):
            started.append(start_node(tmp_path, log_url, f"node-{index + 1}"))
        yield started
    finally:
        for node in started:
            node.kill()


def test_sigkill_a_node_during_a_qos1_storm_loses_and_duplicates_nothing_acknowledged(
    two_nodes: list[ServerProcess],
) -> None:
    survivor, victim = two_nodes
    keeper = Client(survivor.ports["MQTT"], "keeper", clean=False)
    keeper.subscribe("storm/#", qos=1)
    sent: dict[int, bytes] = {}
    acked_ids: list[int] = []  # appended by paho's thread; no lock of ours around publish()
    publisher = paho.Client(CallbackAPIVersion.VERSION2, client_id="stormer")
    publisher.max_inflight_messages_set(100)
    publisher.max_queued_messages_set(0)

    def on_publish(client: object, userdata: object, mid: int, rc: object, props: object) -> None:
        # paho calls this holding its own lock, which publish() takes too: taking a lock of
        # ours here and around publish() deadlocked the two threads now and then
        acked_ids.append(mid)

    publisher.on_publish = on_publish
    publisher.connect("127.0.0.1", victim.ports["MQTT"])
    publisher.loop_start()
    try:
        for n in range(STORM):
            info = publisher.publish(f"storm/{n % 7}", b"m%05d" % n, qos=1)
            sent[info.mid] = b"m%05d" % n  # identifiers are not reused within 3,000
            if n == STORM // 3:
                wait_for(lambda: len(acked_ids) > 200, what="some acknowledgements")
                victim.kill()  # SIGKILL while publishes are in flight
                break
            if n % 50 == 0:
                time.sleep(0.001)
    finally:
        publisher.loop_stop()
    acknowledged = [sent[mid] for mid in list(acked_ids)]
    assert len(acknowledged) > 200
    stored: Counter[bytes] = Counter()
    position = 0
    while True:
        page = httpx.get(
            f"{survivor.url}/v1/events",
            params={
                "filter": "storm/#",
                "from_offset": position,
                "limit": 1000,
                "encoding": "text",
            },
            timeout=30,
        ).json()
        if not page["events"]:
            break
        stored.update(e["payload"].encode() for e in page["events"])
        position = page["next_offset"]
    for payload in acknowledged:
        assert stored[payload] == 1, payload  # present, exactly once
    assert max(stored.values()) == 1  # nothing stored twice, acknowledged or not
    received: set[bytes] = set()
    with clients(keeper):
        deadline = time.monotonic() + 60
        while not set(acknowledged) <= received and time.monotonic() < deadline:
            for message in keeper.receive(1, timeout=30):
                received.add(message.payload)
    assert set(acknowledged) <= received


def test_a_dead_nodes_share_of_a_group_and_its_pending_wills_are_taken_over(
    two_nodes: list[ServerProcess], log_url: str
) -> None:
    """Node 2 is SIGKILLed while it has a shared-group member (holding QoS 1 deliveries
    it never acknowledged), a pending will and a connected client with a will (which
    took its session over from node 1, whose disarm must not remove node 2's armed
    will): node 1 (alive, lowest id) leaves the
    group for it, so its member gets the unacknowledged events and every later one,
    and publishes both wills once each when due."""
    survivor, victim = two_nodes
    delayed = PahoProperties(PacketTypes.WILLMESSAGE)
    delayed.WillDelayInterval = 10
    watcher = Client(survivor.ports["MQTT"])
    kept = Client(survivor.ports["MQTT"], version=paho.MQTTv5)
    lost = Client(victim.ports["MQTT"], version=paho.MQTTv5)
    publisher = Client(survivor.ports["MQTT"])
    lost.paho.manual_ack_set(True)  # it never acknowledges: its share stays in flight
    with clients(watcher, kept, lost, publisher):
        watcher.subscribe("gone/#", qos=1)
        for member in (kept, lost):
            assert member.subscribe("$share/g/tasks/#", qos=1) == (1,)
        before = [b"a%d" % n for n in range(50)]
        for payload in before:
            publisher.publish("tasks/t", payload, qos=1)
        got = collect([kept, lost], len(before))
        assert sorted(got[0] + got[1]) == sorted(before) and got[1]  # node 2 had its share
        device = Client(
            victim.ports["MQTT"],
            "device",
            version=paho.MQTTv5,
            session_expiry=60,
            will=("gone/device", b"offline", 1, False),
            will_properties=delayed,
        )
        device.drop()
        dropped = time.monotonic()
        delayed.WillDelayInterval = 2  # (device's will keeps the 10 s it connected with)

        def sensor_on(node: ServerProcess) -> Client:
            return Client(
                node.ports["MQTT"],
                "sensor",
                version=paho.MQTTv5,
                session_expiry=60,
                will=("gone/sensor", b"lost", 1, False),
                will_properties=delayed,
            )

        early = sensor_on(survivor)  # armed on node 1, then taken over by node 2
        trio.run(stored_will, log_url, "wills.armed", "sensor", "node-1")
        sensor = sensor_on(victim)
        reason = early.disconnects.get(timeout=20)
        early.paho.loop_stop()  # no reconnecting
        assert getattr(reason, "value", reason) == 0x8E  # Session taken over
        trio.run(stored_will, log_url, "wills", "device", "node-2")  # pending (dropped off)
        # connected to node 2: armed there only (node 1's disarm removed only its own)
        trio.run(stored_will, log_url, "wills.armed", "sensor", "node-2", "node-1")
        victim.kill()
        assert time.monotonic() - dropped < 10  # the will was still pending on node 2
        after = [b"b%d" % n for n in range(100)]
        for payload in after:
            publisher.publish("tasks/t", payload, qos=1)
        unacked = got[1]  # sent by node 2 to its member, never acknowledged
        (taken,) = collect([kept], len(after) + len(unacked), timeout=40)
        assert set(taken) == set(after) | set(unacked)  # node 2's share handed over
        assert len(taken) == len(set(taken))  # and each event once
        try:
            wills = watcher.receive(2, timeout=30)
        except queue.Empty:
            raise AssertionError(f"wills missing; node 1:\n{survivor.tail(80)}") from None
        assert sorted((w.topic, w.payload) for w in wills) == [
            ("gone/device", b"offline"),
            ("gone/sensor", b"lost"),  # connected to node 2 when it died
        ]
        watcher.nothing_more(0.5)
        sensor.paho.loop_stop()


async def stored_will(
    url: str, namespace: str, client_id: str, owner: str, gone: str | None = None
) -> None:
    """Wait until a will of ``client_id`` on node ``owner`` is stored in the log's state
    (and none on node ``gone``)."""
    async with open_log(url) as log:
        with trio.fail_after(20):
            while True:
                owners = {
                    claim_node(parse_key(key)[1] or "")  # owner: the connection's claim
                    for key in await log.list_state(namespace)
                    if parse_key(key)[0] == client_id
                }
                if owner in owners and gone not in owners:
                    return
                await trio.sleep(0.05)
