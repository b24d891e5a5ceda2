"""Faults in a cluster: a node SIGKILLed in the middle of a QoS 1 storm."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.cluster.conftest import start_node
from tests.protocols.mqtt.server_helpers import Client, clients, wait_for
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
    acked: list[bytes] = []
    lock = threading.Lock()
    publisher = paho.Client(CallbackAPIVersion.VERSION2, client_id="stormer")
    publisher.max_inflight_messages_set(100)
    publisher.max_queued_messages_set(0)

    def on_publish(client: object, userdata: object, mid: int, rc: object, props: object) -> None:
        with lock:
            acked.append(sent[mid])

    publisher.on_publish = on_publish
    publisher.connect("127.0.0.1", victim.ports["MQTT"])
    publisher.loop_start()
    try:
        for n in range(STORM):
            with lock:
                info = publisher.publish(f"storm/{n % 7}", b"m%05d" % n, qos=1)
                sent[info.mid] = b"m%05d" % n
            if n == STORM // 3:
                wait_for(lambda: len(acked) > 200, what="some acknowledgements")
                victim.kill()  # SIGKILL while publishes are in flight
                break
            if n % 50 == 0:
                time.sleep(0.001)
    finally:
        publisher.loop_stop()
    with lock:
        acknowledged = list(acked)
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
