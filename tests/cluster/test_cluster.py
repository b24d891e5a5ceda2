"""Three tidelog nodes (processes) over one Kafka log: what a user sees on any node."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties

from tests.cluster.conftest import collect, start_node
from tests.protocols.mqtt.server_helpers import Client, clients, wait_for
from tests.serve_process import env
from tests.test_cross_protocol import ws_receive
from tidelog.testing.server import ServerProcess


def test_a_publish_on_any_node_reaches_subscribers_on_every_node_in_log_order(
    nodes: list[ServerProcess],
) -> None:
    subscribers = [Client(node.ports["MQTT"], version=paho.MQTTv5) for node in nodes]
    publishers = [Client(node.ports["MQTT"]) for node in nodes]
    with clients(*subscribers, *publishers):
        for subscriber in subscribers:
            assert subscriber.subscribe("plant/#", qos=1) == (1,)
        for round_ in range(5):
            for index, publisher in enumerate(publishers):
                publisher.publish(f"plant/{index}", f"{round_}-{index}".encode(), qos=1)
        expected = {f"{r}-{i}".encode() for r in range(5) for i in range(3)}
        orders = []
        for subscriber in subscribers:
            messages = subscriber.receive(15)
            assert {m.payload for m in messages} == expected
            orders.append([m.payload for m in messages])
            subscriber.nothing_more(0.2)
        assert orders[0] == orders[1] == orders[2]  # one log, one order everywhere
        for index in range(3):  # each publisher's own messages in the order it sent them
            assert [p for p in orders[0] if p.endswith(b"-%d" % index)] == [
                f"{r}-{index}".encode() for r in range(5)
            ]


def test_rest_and_websocket_across_nodes(nodes: list[ServerProcess]) -> None:
    subscriber = Client(nodes[2].ports["MQTT"])
    with clients(subscriber):
        subscriber.subscribe("rest/+", qos=1)
        response = httpx.post(
            f"{nodes[0].url}/v1/topics/rest/one",
            content=b"from REST on node 1",
            params={"qos": 1},
            timeout=10,
        )
        assert response.status_code == 201, response.text
        offset = response.json()["offset"]
        (message,) = subscriber.receive(1)
        assert message.payload == b"from REST on node 1"
    events = ws_receive(
        nodes[1].ports["WebSocket"],
        {"filter": "rest/#", "start": f"offset:{offset}", "encoding": "text"},
        1,
    )
    assert events[0]["offset"] == offset and events[0]["payload"] == "from REST on node 1"


def test_retained_messages_are_the_same_on_every_node(nodes: list[ServerProcess]) -> None:
    publisher = Client(nodes[0].ports["MQTT"])
    with clients(publisher):
        publisher.publish("status/pump", b"on", qos=1, retain=True)
        publisher.publish("status/valve", b"open", qos=1, retain=True)
        publisher.publish("status/valve", b"", qos=1, retain=True)  # cleared
    for node in nodes[1:]:
        late = Client(node.ports["MQTT"])
        with clients(late):
            late.subscribe("status/#", qos=1)
            (message,) = late.receive(1)
            assert (message.topic, message.payload, message.retain) == ("status/pump", b"on", 1)
            late.nothing_more(0.3)


def test_a_cursor_made_on_one_node_is_fetched_on_another_and_committed_on_a_third(
    nodes: list[ServerProcess],
) -> None:
    a, b, c = (node.url for node in nodes)
    for n in range(4):
        response = httpx.post(f"{a}/v1/topics/orders/{n}", content=f"order {n}".encode())
        assert response.status_code == 201, response.text
    created = httpx.put(f"{a}/v1/cursors/billing", json={"filter": "orders/#", "start": "earliest"})
    assert created.status_code in (200, 201), created.text
    fetched = httpx.post(f"{b}/v1/cursors/billing/fetch", params={"limit": 10, "encoding": "text"})
    assert fetched.status_code == 200, fetched.text
    body = fetched.json()
    assert [e["payload"] for e in body["events"]] == [f"order {n}" for n in range(4)]
    committed = httpx.post(f"{c}/v1/cursors/billing/commit", json={"offset": body["next_offset"]})
    assert committed.status_code == 200, committed.text
    for url in (a, b, c):
        cursor = httpx.get(f"{url}/v1/cursors/billing").json()
        assert cursor["position"] == body["next_offset"], (url, cursor)


def test_cluster_lists_every_node(nodes: list[ServerProcess]) -> None:
    def listed() -> list[dict[str, object]]:
        return httpx.get(f"{nodes[1].url}/v1/cluster", timeout=10).json()["nodes"]

    wait_for(lambda: len(listed()) == 3, what="three nodes in /v1/cluster")
    answer = httpx.get(f"{nodes[0].url}/v1/cluster", timeout=10).json()
    assert answer["shared"] is True and answer["node"] == "node-1"
    by_id = {node["id"]: node for node in answer["nodes"]}
    assert sorted(by_id) == ["node-1", "node-2", "node-3"]
    for index, node in enumerate(nodes):
        entry = by_id[f"node-{index + 1}"]
        assert entry["alive"] is True
        assert entry["listeners"]["MQTT"] == node.ports["MQTT"]
        # one identity, named once at start: the --node-id (no generated mesh id)
        named = [line for line in node.lines if "node node-" in line]
        assert len(named) == 1 and f"node node-{index + 1} " in named[0], named
        assert not re.search(r"\bnode-[0-9a-f]{8}\b", node.output)
    printed = subprocess.run(
        [sys.executable, "-m", "tidelog", "cluster", "--url", nodes[2].url, "--json"],
        capture_output=True,
        text=True,
        env=env(),
        timeout=60,
    )
    assert printed.returncode == 0, printed.stderr
    assert [n["id"] for n in json.loads(printed.stdout)["nodes"]] == ["node-1", "node-2", "node-3"]
    metrics = httpx.get(f"{nodes[0].url}/metrics", timeout=10).text.splitlines()
    assert "tidelog_cluster_nodes_alive 3.0" in metrics
    for name in ("node-1", "node-2", "node-3"):
        assert f'tidelog_cluster_node_alive{{node="{name}"}} 1.0' in metrics
        assert any(m.startswith(f'tidelog_cluster_node_behind{{node="{name}"}}') for m in metrics)


def test_a_node_joining_later_serves_the_same_log(
    nodes: list[ServerProcess], tmp_path: Path, log_url: str
) -> None:
    publisher = Client(nodes[0].ports["MQTT"])
    with clients(publisher):
        for n in range(10):
            publisher.publish("history/x", b"%d" % n, qos=1)
    late = start_node(tmp_path, log_url, "node-4")
    try:
        response = httpx.get(
            f"{late.url}/v1/events", params={"filter": "history/#", "encoding": "text"}
        )
        assert [e["payload"] for e in response.json()["events"]] == [str(n) for n in range(10)]

        def listed() -> list[str]:
            answer = httpx.get(f"{nodes[0].url}/v1/cluster", timeout=10).json()
            return [node["id"] for node in answer["nodes"]]

        wait_for(lambda: "node-4" in listed(), what="node-4 in /v1/cluster")
        staying = Client(nodes[0].ports["MQTT"], version=paho.MQTTv5)
        going = Client(late.ports["MQTT"], version=paho.MQTTv5)
        with clients(staying, publisher := Client(nodes[1].ports["MQTT"])):
            for member in (staying, going):
                member.subscribe("$share/late/work/#", qos=1)
            assert late.stop() == 0  # a clean stop removes the node's record
            going.paho.loop_stop()
            wait_for(lambda: "node-4" not in listed(), what="node-4 gone from /v1/cluster")
            sent = [b"w%d" % n for n in range(50)]
            for payload in sent:  # node 4 left the group as it stopped: all go to node 1
                publisher.publish("work/x", payload, qos=1)
            (got,) = collect([staying], len(sent))
            assert sorted(got) == sorted(sent)
    finally:
        late.kill()


def test_a_persistent_session_resumes_on_another_node(nodes: list[ServerProcess]) -> None:
    device = Client(nodes[0].ports["MQTT"], "roamer", clean=False)
    device.subscribe("roam/#", qos=1)
    device.disconnect()
    publisher = Client(nodes[1].ports["MQTT"])
    with clients(publisher):
        for n in range(5):
            publisher.publish(f"roam/{n}", b"%d" % n, qos=1)
    back = Client(nodes[2].ports["MQTT"], "roamer", clean=False)
    with clients(back):
        assert back.flags.session_present
        assert [m.payload for m in back.receive(5)] == [b"%d" % n for n in range(5)]
        back.nothing_more(0.3)


def test_the_same_client_id_on_a_second_node_takes_the_session_over(
    nodes: list[ServerProcess],
) -> None:
    first = Client(nodes[0].ports["MQTT"], "twin", version=paho.MQTTv5, session_expiry=300)
    first.subscribe("twin/#", qos=1)
    second = Client(
        nodes[1].ports["MQTT"], "twin", version=paho.MQTTv5, clean=False, session_expiry=300
    )
    with clients(first, second):
        reason = first.disconnects.get(timeout=20)
        assert getattr(reason, "value", reason) == 0x8E  # Session taken over
        assert second.flags.session_present  # the subscription came along
        publisher = Client(nodes[2].ports["MQTT"])
        with clients(publisher):
            publisher.publish("twin/x", b"after takeover", qos=1)
        (message,) = second.receive(1)
        assert message.payload == b"after takeover"


def test_a_client_back_on_another_node_in_time_cancels_its_delayed_will(
    nodes: list[ServerProcess],
) -> None:
    """Two clients with the same will delay drop off node 1; one comes back on node 2
    before the delay. The other's will arrives (on node 3); the returning one's, set
    earlier, never does."""
    watcher = Client(nodes[2].ports["MQTT"])
    with clients(watcher):
        watcher.subscribe("wills/#", qos=1)
        delayed = PahoProperties(PacketTypes.WILLMESSAGE)
        delayed.WillDelayInterval = 3

        def dropper(name: str) -> Client:
            return Client(
                nodes[0].ports["MQTT"],
                name,
                version=paho.MQTTv5,
                session_expiry=60,
                will=(f"wills/{name}", b"gone", 1, False),
                will_properties=delayed,
            )

        returning, control = dropper("returning"), dropper("control")
        returning.drop()
        control.drop()
        back = Client(
            nodes[1].ports["MQTT"], "returning", version=paho.MQTTv5, clean=False, session_expiry=60
        )
        with clients(back):
            (will,) = watcher.receive(1, timeout=30)
            assert will.topic == "wills/control"
            watcher.nothing_more(0.5)


def test_a_shared_group_with_members_on_two_nodes_gets_each_event_once(
    nodes: list[ServerProcess],
) -> None:
    """Members on node 1 and node 2, publisher on node 3: while they are stable each
    event reaches exactly one member; when node 2's only member leaves, node 1 gets
    everything from then on and nothing is lost."""
    first = Client(nodes[0].ports["MQTT"], version=paho.MQTTv5)
    second = Client(nodes[1].ports["MQTT"], version=paho.MQTTv5)
    publisher = Client(nodes[2].ports["MQTT"])
    with clients(first, second, publisher):
        for member in (first, second):
            assert member.subscribe("$share/workers/jobs/#", qos=1) == (1,)
        sent = [b"job %d" % n for n in range(200)]
        for payload in sent:
            publisher.publish("jobs/build", payload, qos=1)
        got = collect([first, second], len(sent))
        assert sorted(got[0] + got[1]) == sorted(sent)  # each once: none lost, none twice
        assert got[0] and got[1]  # both nodes took their share
        first.nothing_more(0.3)
        second.nothing_more(0.1)
        second.disconnect()  # node 2 has no member left: it leaves the group
        later = [b"late %d" % n for n in range(100)]
        for payload in later:
            publisher.publish("jobs/build", payload, qos=1)
        (after,) = collect([first], len(later))
        assert sorted(after) == sorted(later)
        first.nothing_more(0.3)


def test_a_persistent_sessions_shared_group_keeps_events_while_it_is_away(
    nodes: list[ServerProcess],
) -> None:
    """A durable shared group across nodes: its only member (a persistent session) goes
    away from node 1; what is published meanwhile waits and reaches it when it comes
    back on node 2, each event once."""
    member = Client(
        nodes[0].ports["MQTT"], "durable-member", version=paho.MQTTv5, session_expiry=300
    )
    assert member.subscribe("$share/keep/stock/#", qos=1) == (1,)
    member.disconnect()  # the session (and its place in the group) stays
    publisher = Client(nodes[2].ports["MQTT"])
    with clients(publisher):
        sent = [b"s%d" % n for n in range(30)]
        for payload in sent:
            publisher.publish("stock/item", payload, qos=1)
        back = Client(
            nodes[1].ports["MQTT"],
            "durable-member",
            version=paho.MQTTv5,
            clean=False,
            session_expiry=300,
        )
        with clients(back):
            assert back.flags.session_present
            (got,) = collect([back], len(sent))
            assert sorted(got) == sorted(sent)
            back.nothing_more(0.5)
