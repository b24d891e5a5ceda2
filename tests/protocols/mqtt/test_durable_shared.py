"""Durable MQTT shared subscriptions (issue 14): a ``$share/<group>/<filter>`` of
persistent sessions is a consumer group on the cursor ``share:<group>:<filter>``.
Real paho clients against a real server on LMDB, restarted in between."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.properties import Properties as PahoProperties

from tests.protocols.mqtt.server_helpers import Client, ServerThread, clients, wait_for
from tests.serve_process import start_server
from tidelog.engine.consumers import DEFAULT_MAX_LEASED, SHARE_MEMBER_SHARE
from tidelog.server import ServerConfig

SHARE = "$share/workers/jobs/#"
CURSOR = "share:workers:jobs~#"


def config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(
        storage=f"lmdb://{tmp_path}/data",
        mqtt_port=0,
        ws_port=0,
        http_port=0,
        mqtt_options={"session_save_interval": 0.05},
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    running = ServerThread(config(tmp_path)).start()
    try:
        yield running
    finally:
        running.stop()


def member(
    port: int,
    client_id: str,
    *,
    receive_maximum: int | None = None,
    manual_ack: bool = False,
    maximum_packet_size: int | None = None,
) -> Client:
    """A persistent MQTT 5 session (its shared subscriptions are durable)."""
    props = PahoProperties(paho.PacketTypes.CONNECT)
    if receive_maximum is not None:
        props.ReceiveMaximum = receive_maximum
    if maximum_packet_size is not None:
        props.MaximumPacketSize = maximum_packet_size
    client = Client(
        port,
        client_id,
        version=paho.MQTTv5,
        clean=False,
        session_expiry=3600,
        connect_properties=props,
        connect=False,
    )
    client.paho.manual_ack_set(manual_ack)
    client.connect()
    return client


def publish(port: int, payloads: range) -> None:
    with clients(Client(port)) as (pub,):
        for n in payloads:
            pub.publish(f"jobs/{n % 3}", b"%d" % n, 1)


def cursor(server: ServerThread) -> dict[str, object]:
    url = f"http://127.0.0.1:{server.ports('HTTP')}/v1/cursors/"
    response = httpx.get(url + urllib.parse.quote(CURSOR, safe=""))
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_offline_group_keeps_its_place_across_a_restart(tmp_path: Path) -> None:
    server = ServerThread(config(tmp_path)).start()
    try:
        for client_id in ("w1", "w2"):
            worker = member(server.port, client_id)
            assert worker.subscribe(SHARE, 1) == (1,)
            worker.disconnect()
        publish(server.port, range(30))  # every member is offline
        shown = cursor(server)
        assert shown["ack_policy"] == "explicit" and shown["pending"] == 30
    finally:
        server.stop()
    server = ServerThread(config(tmp_path)).start()  # the broker restarts meanwhile
    try:
        worker = member(server.port, "w1")
        assert worker.flags.session_present
        got = [m.payload for m in worker.receive(30)]
        assert sorted(got) == sorted(b"%d" % n for n in range(30))  # each exactly once
        assert worker.nothing_more()
        wait_for(lambda: cursor(server)["pending"] == 0, what="the PUBACKs acknowledged")
        worker.disconnect()
        other = member(server.port, "w2")  # the other member gets none of them again
        try:
            assert other.nothing_more(0.5)
        finally:
            other.disconnect()
    finally:
        server.stop()


def test_members_split_the_events_and_a_lost_members_leases_go_to_another(
    server: ServerThread,
) -> None:
    # slow never acknowledges and takes at most 2 at once (its Receive Maximum)
    slow = member(server.port, "slow", receive_maximum=2, manual_ack=True)
    slow.subscribe(SHARE, 1)
    publish(server.port, range(2))
    held = [m.payload for m in slow.receive(2)]
    fast = Client(server.port, "fast", version=paho.MQTTv5)  # a clean session joins too
    try:
        fast.subscribe(SHARE, 1)
        publish(server.port, range(2, 12))
        got = [m.payload for m in fast.receive(10)]
        assert sorted(got) == sorted(b"%d" % n for n in range(2, 12))  # slow is full
        assert slow.nothing_more(0.2)
        slow.drop()  # the connection breaks with 2 unacknowledged QoS 1 deliveries
        again = [m.payload for m in fast.receive(2)]
        assert sorted(again) == sorted(held)  # redelivered to the other member
        assert fast.nothing_more()
        wait_for(lambda: cursor(server)["pending"] == 0, what="every event acknowledged")
    finally:
        fast.disconnect()


def test_leases_held_at_a_kill_9_go_to_the_member_that_returns(tmp_path: Path) -> None:
    args = ("--storage", f"lmdb://{tmp_path}/data", "--mqtt-port", "0")
    quiet = ("--ws-port", "off", "--http-port", "off")
    server = start_server(tmp_path, *args, *quiet, expect=("MQTT",))
    try:
        port = server.ports["MQTT"]
        later = member(port, "later")
        later.subscribe(SHARE, 1)
        later.disconnect()
        holder = member(port, "holder", receive_maximum=5, manual_ack=True)
        holder.subscribe(SHARE, 1)
        publish(port, range(20))  # acknowledged by the broker: durable
        assert len(holder.receive(5)) == 5  # leased to holder, never acknowledged
        server.kill()  # kill -9 while holder holds its leases
        server.wait_exit()
        holder.drop()
    finally:
        if server.running:
            server.kill()
    server = start_server(tmp_path, *args, *quiet, expect=("MQTT",))
    try:
        returned = member(server.ports["MQTT"], "later")
        try:
            got = sorted(m.payload for m in returned.receive(20))
            assert got == sorted(b"%d" % n for n in range(20))  # nothing lost, none twice
            assert returned.nothing_more()
        finally:
            returned.disconnect()
    finally:
        assert server.stop() == 0


def test_qos0_members_and_live_groups_of_clean_sessions(server: ServerThread) -> None:
    worker = member(server.port, "q0")
    assert worker.subscribe("$share/zero/jobs/#", 0) == (0,)
    worker.disconnect()
    with clients(Client(server.port, version=paho.MQTTv5)) as (clean,):
        clean.subscribe("$share/live/jobs/#", 1)  # clean sessions only: a live group
        publish(server.port, range(3))
        assert sorted(m.payload for m in clean.receive(3)) == [b"0", b"1", b"2"]
    worker = member(server.port, "q0")
    try:
        got = worker.receive(3)
        assert sorted(m.payload for m in got) == [b"0", b"1", b"2"]
        assert {m.qos for m in got} == {0}  # sent at the granted QoS, acknowledged once sent
        url = f"http://127.0.0.1:{server.ports('HTTP')}/v1/cursors"
        names = [c["name"] for c in httpx.get(url).json()["cursors"]]
        assert names == ["share:zero:jobs~#"]  # no cursor for the live group
        wait_for(
            lambda: httpx.get(url + "/share:zero:jobs~%23").json()["pending"] == 0,
            what="the QoS 0 deliveries acknowledged",
        )
    finally:
        worker.disconnect()


def test_a_member_that_never_acknowledges_holds_only_its_part_of_the_group(
    server: ServerThread,
) -> None:
    # stuck takes what it is sent and never acknowledges (its leases last an hour)
    stuck = member(server.port, "stuck", manual_ack=True)
    stuck.subscribe(SHARE, 1)
    part = max(1, DEFAULT_MAX_LEASED // SHARE_MEMBER_SHARE)
    assert cursor(server)["max_leased_per_member"] == part
    publish(server.port, range(part + 10))
    stuck.receive(part)
    other = member(server.port, "other")
    try:
        other.subscribe(SHARE, 1)
        got = [m.payload for m in other.receive(10)]  # the rest goes to the other member
        assert sorted(got) == sorted(b"%d" % n for n in range(part, part + 10))
        assert stuck.nothing_more(0.2)
    finally:
        other.disconnect()
        stuck.disconnect()


def test_the_first_mqtt_use_after_a_restart_ends_only_mqtt_members_leases(
    tmp_path: Path,
) -> None:
    server = ServerThread(config(tmp_path)).start()
    try:
        worker = member(server.port, "w1")
        worker.subscribe(SHARE, 1)
        worker.disconnect()
        publish(server.port, range(5))
        url = f"http://127.0.0.1:{server.ports('HTTP')}/v1/cursors/"
        quoted = urllib.parse.quote(CURSOR, safe="")
        response = httpx.post(url + quoted + "/fetch?limit=2&member=rest-a")
        assert response.status_code == 200, response.text
        held = {event["payload"] for event in response.json()["events"]}
        assert len(held) == 2
    finally:
        server.stop()
    server = ServerThread(config(tmp_path)).start()
    try:
        worker = member(server.port, "w1")
        try:
            got = [m.payload for m in worker.receive(3)]  # not the REST member's two
            assert worker.nothing_more(0.3)
            assert len(set(got)) == 3
        finally:
            worker.disconnect()
    finally:
        server.stop()


def test_a_message_too_large_for_one_member_goes_to_another(server: ServerThread) -> None:
    small = member(server.port, "small", maximum_packet_size=200)
    small.subscribe(SHARE, 1)
    with clients(Client(server.port)) as (pub,):
        pub.publish("jobs/big", b"x" * 1000, 1)
    # small leased it, could not take it, gave it back to the group
    wait_for(
        lambda: (shown := cursor(server))["pending"] == 1 and shown["leased"] == 0,
        what="the too large message given back",
    )
    big = member(server.port, "big")
    try:
        big.subscribe(SHARE, 1)
        assert [m.payload for m in big.receive(1)] == [b"x" * 1000]
        wait_for(lambda: cursor(server)["pending"] == 0, what="its PUBACK acknowledged")
        assert small.nothing_more(0.2)
    finally:
        big.disconnect()
        small.disconnect()
