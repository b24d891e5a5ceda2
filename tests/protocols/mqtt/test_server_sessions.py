"""Persistent sessions are cursors on the log: offline messages, redelivery, QoS 2 state,
restarts."""

from __future__ import annotations

from pathlib import Path

import paho.mqtt.client as paho
import pytest

from tests.protocols.mqtt.conftest import server_config
from tests.protocols.mqtt.server_helpers import Client, RawClient, ServerThread, clients
from tidelog.protocols.mqtt import (
    Disconnect,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
)


def persistent(port: int, client_id: str, version: int, **kwargs: object) -> Client:
    if version == paho.MQTTv5:
        return Client(port, client_id, version=version, clean=False, session_expiry=3600, **kwargs)  # type: ignore[arg-type]
    return Client(port, client_id, version=version, clean=False, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("version", [paho.MQTTv311, paho.MQTTv5])
def test_offline_messages_are_delivered_on_reconnect(server: ServerThread, version: int) -> None:
    sub = persistent(server.port, "offline-1", version)
    assert not sub.flags.session_present
    sub.subscribe("news/#", 1)
    sub.disconnect()
    with clients(Client(server.port)) as (pub,):
        for i in range(50):
            pub.publish("news/x", b"%d" % i, 1)
        pub.publish("other", b"no", 1)
    sub = persistent(server.port, "offline-1", version)
    try:
        assert sub.flags.session_present
        got = sub.receive(50)
        assert [m.payload for m in got] == [b"%d" % i for i in range(50)]
        assert sub.nothing_more()
    finally:
        sub.disconnect()
    sub = persistent(server.port, "offline-1", version)  # nothing is delivered twice
    try:
        assert sub.nothing_more(0.5)
    finally:
        sub.disconnect()


def test_clean_session_discards_the_session(server: ServerThread) -> None:
    sub = persistent(server.port, "cleaned", paho.MQTTv311)
    sub.subscribe("news/#", 1)
    sub.disconnect()
    clean = Client(server.port, "cleaned", clean=True)
    assert not clean.flags.session_present
    clean.disconnect()
    with clients(Client(server.port)) as (pub,):
        pub.publish("news/x", b"lost", 1)
    sub = persistent(server.port, "cleaned", paho.MQTTv311)
    try:
        assert not sub.flags.session_present
        assert sub.nothing_more()
    finally:
        sub.disconnect()


def test_mqtt5_session_expiry_zero_ends_with_the_connection(server: ServerThread) -> None:
    sub = Client(server.port, "short", version=paho.MQTTv5, clean=False, session_expiry=0)
    sub.subscribe("a", 1)
    sub.disconnect()
    again = Client(server.port, "short", version=paho.MQTTv5, clean=False, session_expiry=0)
    try:
        assert not again.flags.session_present
    finally:
        again.disconnect()


@pytest.mark.parametrize("version", [paho.MQTTv311, paho.MQTTv5])
def test_persistent_session_survives_a_broker_restart(tmp_path: Path, version: int) -> None:
    server = ServerThread(server_config(tmp_path)).start()
    try:
        sub = persistent(server.port, "restart-1", version)
        sub.subscribe("plant/#", 2)
        with clients(Client(server.port)) as (pub,):
            pub.publish("plant/a", b"before", 1)
            assert sub.receive()[0].payload == b"before"
        sub.disconnect()
        with clients(Client(server.port)) as (pub,):
            for i in range(10):
                pub.publish("plant/a", b"away %d" % i, i % 3)
    finally:
        server.stop()
    server = ServerThread(server_config(tmp_path)).start()
    try:
        sub = persistent(server.port, "restart-1", version)
        assert sub.flags.session_present
        got = sub.receive(10)  # paho hands QoS 2 messages over at PUBREL: sort
        assert sorted((m.payload, m.qos) for m in got) == [
            (b"away %d" % i, i % 3) for i in range(10)
        ]
        assert sub.nothing_more()
        sub.disconnect()
    finally:
        server.stop()


def subscribe_raw(client: RawClient, topic: str, qos: int) -> None:
    client.send(Subscribe(1, [Subscription(topic, qos)]))
    assert client.expect(Suback).reason_codes[0] == qos


def test_unacknowledged_qos1_is_redelivered_with_dup(server: ServerThread) -> None:
    sub = RawClient(server.port)
    sub.connect("dup-1", clean=False)
    subscribe_raw(sub, "q/#", 1)
    with clients(Client(server.port)) as (pub,):
        for i in range(3):
            pub.publish("q/1", b"%d" % i, 1)
    first = [sub.expect(Publish) for _ in range(3)]
    assert not any(p.dup for p in first)
    sub.send(Puback(first[0].packet_id))  # only the first is acknowledged
    sub.send(Disconnect())
    sub.close()
    again = RawClient(server.port)
    assert again.connect("dup-1", clean=False).session_present
    resent = [again.expect(Publish) for _ in range(2)]
    assert [(p.payload, p.dup, p.packet_id) for p in resent] == [
        (b"1", True, first[1].packet_id),
        (b"2", True, first[2].packet_id),
    ]
    for p in resent:
        again.send(Puback(p.packet_id))
    again.send(Disconnect())
    again.close()
    third = RawClient(server.port)
    third.connect("dup-1", clean=False)
    with pytest.raises(TimeoutError):
        third.receive(timeout=0.5)
    third.close()


def test_outbound_qos2_pubrel_state_survives_reconnect(server: ServerThread) -> None:
    sub = RawClient(server.port)
    sub.connect("rel-1", clean=False)
    subscribe_raw(sub, "q2", 2)
    with clients(Client(server.port)) as (pub,):
        pub.publish("q2", b"once", 2)
    message = sub.expect(Publish)
    assert message.qos == 2
    sub.send(Pubrec(message.packet_id))
    assert sub.expect(Pubrel).packet_id == message.packet_id
    sub.close()  # no PUBCOMP
    again = RawClient(server.port)
    assert again.connect("rel-1", clean=False).session_present
    assert again.expect(Pubrel).packet_id == message.packet_id  # not the PUBLISH again
    again.send(Pubcomp(message.packet_id))
    with pytest.raises(TimeoutError):
        again.receive(timeout=0.5)
    again.close()


@pytest.mark.parametrize("clean", [True, False])
def test_inbound_qos2_is_stored_exactly_once(server: ServerThread, clean: bool) -> None:
    with clients(Client(server.port)) as (sub,):
        sub.subscribe("once", 0)
        pub = RawClient(server.port)
        pub.connect("q2-pub", clean=clean)
        pub.send(Publish("once", b"x", qos=2, packet_id=7))
        assert pub.expect(Pubrec).packet_id == 7
        pub.send(Publish("once", b"x", qos=2, packet_id=7, dup=True))  # a resend
        assert pub.expect(Pubrec).packet_id == 7
        if not clean:  # the PUBREC got lost: reconnect and resend
            pub.close()
            pub = RawClient(server.port)
            pub.connect("q2-pub", clean=False)
            pub.send(Publish("once", b"x", qos=2, packet_id=7, dup=True))
            assert pub.expect(Pubrec).packet_id == 7
        pub.send(Pubrel(7))
        assert pub.expect(Pubcomp).packet_id == 7
        pub.send(Publish("once", b"y", qos=2, packet_id=7))  # the id is free again
        assert pub.expect(Pubrec).packet_id == 7
        pub.send(Pubrel(7))
        assert pub.expect(Pubcomp).packet_id == 7
        assert [m.payload for m in sub.receive(2)] == [b"x", b"y"]
        assert sub.nothing_more()
        pub.close()


def test_inbound_qos2_state_survives_a_restart(tmp_path: Path) -> None:
    server = ServerThread(server_config(tmp_path)).start()
    try:
        pub = RawClient(server.port)
        pub.connect("q2-restart", clean=False)
        pub.send(Publish("once", b"x", qos=2, packet_id=9))
        assert pub.expect(Pubrec).packet_id == 9
        pub.close()
    finally:
        server.stop()
    server = ServerThread(server_config(tmp_path)).start()
    try:
        sub = Client(server.port)
        sub.subscribe("once", 0)
        pub = RawClient(server.port)
        pub.connect("q2-restart", clean=False)
        pub.send(Publish("once", b"x", qos=2, packet_id=9, dup=True))
        assert pub.expect(Pubrec).packet_id == 9
        pub.send(Pubrel(9))
        assert pub.expect(Pubcomp).packet_id == 9
        assert sub.nothing_more()  # it was stored before the restart, not again
        end = server.call_sync(lambda: server.running.broker.end_offset)  # type: ignore[union-attr]
        assert end == 1
        pub.close()
        sub.disconnect()
    finally:
        server.stop()


def test_slow_subscriber_catches_up_from_the_log(tmp_path: Path) -> None:
    config = server_config(tmp_path, pending_deliveries=20)
    config.broker_options = {"feed_max_events": 50}
    server = ServerThread(config).start()
    try:
        from tidelog.protocols.mqtt import Connack, Connect
        from tidelog.protocols.mqtt import Properties as Props

        slow = RawClient(server.port, 5)
        slow.send(Connect("slow", 5, properties=Props(receive_maximum=5)))
        slow.expect(Connack)
        subscribe_raw(slow, "load/#", 1)
        total = 2000
        with clients(Client(server.port, max_inflight=1000)) as (pub,):
            for i in range(total):
                pub.paho.publish("load/x", b"%d" % i, 1)
            pub.publish("load/x", b"end", 1)
        got = []
        while len(got) <= total:
            message = slow.expect(Publish)
            got.append(message.payload)
            slow.send(Puback(message.packet_id))
        assert got == [b"%d" % i for i in range(total)] + [b"end"]
        assert server.running is not None
        feeds = [f for f in server.running.broker.fanout.feeds if f.name == "mqtt:slow"]
        assert feeds[0].catch_ups > 0  # it fell behind and read from the log
        slow.close()
    finally:
        server.stop()
