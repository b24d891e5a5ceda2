"""Interop with paho-mqtt 3.1.1 and 5.0 over TCP: CONNECT, PUBLISH, SUBSCRIBE, QoS 0/1/2."""

from __future__ import annotations

import paho.mqtt.client as paho
import pytest
import trio

from tests.protocols.mqtt.server_helpers import Client, ServerThread, clients
from tidelog.testing.mqtt_client import ClientConnection, LoadError, Target


@pytest.mark.parametrize("version", [paho.MQTTv311, paho.MQTTv5])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_subscribe_each_qos(server: ServerThread, version: int, qos: int) -> None:
    with clients(Client(server.port, version=version), Client(server.port, version=version)) as (
        sub,
        pub,
    ):
        granted = sub.subscribe("sensors/+/temp", qos)
        assert granted == (qos,)
        for i in range(20):
            pub.publish(f"sensors/{i % 3}/temp", b"%d" % i, qos)
        got = sub.receive(20)
        assert [m.payload for m in got] == [b"%d" % i for i in range(20)]
        assert {m.qos for m in got} == {qos}
        assert sub.nothing_more()


@pytest.mark.parametrize("version", [paho.MQTTv311, paho.MQTTv5])
def test_retained_messages(server: ServerThread, version: int) -> None:
    with clients(Client(server.port, version=version)) as (pub,):
        pub.publish("config/a", b"A", 1, retain=True)
        pub.publish("config/b", b"B", 1, retain=True)
        pub.publish("config/b", b"B2", 1, retain=True)
        pub.publish("config/c", b"C", 1, retain=True)
        pub.publish("config/c", b"", 1, retain=True)  # clears it
        with clients(Client(server.port, version=version)) as (sub,):
            sub.subscribe("config/#", 1)
            got = sub.receive(2)
            assert sorted((m.topic, m.payload, m.retain) for m in got) == [
                ("config/a", b"A", True),
                ("config/b", b"B2", True),
            ]
            pub.publish("config/a", b"A2", 1, retain=True)
            (live,) = sub.receive()
            # a message matching an established subscription is not flagged retained
            assert (live.payload, live.retain) == (b"A2", False)
            assert sub.nothing_more()


def test_wildcards_and_dollar_topics(server: ServerThread) -> None:
    with clients(*(Client(server.port) for _ in range(4))) as (hash_sub, plus_sub, sys_sub, pub):
        hash_sub.subscribe("#")
        plus_sub.subscribe("+/status")
        # $SYS is readable only by SecurityConfig.sys_users (tests/security); the
        # wildcard rule is the same for every $-topic
        sys_sub.subscribe("$internal/#")
        for topic in ["a/status", "$internal/status", "a/b/status", "a"]:
            pub.publish(topic, topic.encode(), 0)
        assert sorted(m.topic for m in hash_sub.receive(3)) == ["a", "a/b/status", "a/status"]
        assert [m.topic for m in plus_sub.receive()] == ["a/status"]
        assert [m.topic for m in sys_sub.receive()] == ["$internal/status"]
        for client in (hash_sub, plus_sub, sys_sub):
            assert client.nothing_more(0.1)


@pytest.mark.parametrize("version", [paho.MQTTv311, paho.MQTTv5])
def test_will_on_abnormal_close_not_after_disconnect(server: ServerThread, version: int) -> None:
    with clients(Client(server.port, version=version)) as (watcher,):
        watcher.subscribe("wills/#", 1)
        crashing = Client(
            server.port, version=version, will=("wills/crash", b"gone", 1, False), keepalive=5
        )
        polite = Client(server.port, version=version, will=("wills/polite", b"gone", 1, False))
        polite.disconnect()
        crashing.drop()
        (will,) = watcher.receive()
        assert (will.topic, will.payload, will.qos) == ("wills/crash", b"gone", 1)
        assert watcher.nothing_more()


def test_mqtt5_assigned_client_identifier(server: ServerThread) -> None:
    with clients(Client(server.port, client_id="", version=paho.MQTTv5)) as (client,):
        assigned = client.connack_properties.AssignedClientIdentifier
        assert assigned.startswith("tidelog-")
        client.subscribe("x", 1)
        client.publish("x", b"1", 1)
        assert client.receive()[0].payload == b"1"


def test_session_takeover_closes_the_older_connection(server: ServerThread) -> None:
    old = Client(server.port, client_id="same", version=paho.MQTTv5)
    new = Client(server.port, client_id="same", version=paho.MQTTv5)
    try:
        reason = old.disconnects.get(timeout=5)
        assert reason.value == 0x8E  # Session taken over
        new.subscribe("t", 1)
        new.publish("t", b"still works", 1)
        assert new.receive()[0].payload == b"still works"
    finally:
        new.disconnect()
        old.paho.loop_stop()


def test_session_takeover_311(server: ServerThread) -> None:
    old = Client(server.port, client_id="same311")
    new = Client(server.port, client_id="same311")
    try:
        old.disconnects.get(timeout=5)
        new.subscribe("t", 1)
        new.publish("t", b"ok", 1)
        assert new.receive()[0].payload == b"ok"
    finally:
        old.paho.loop_stop()
        new.disconnect()


@pytest.mark.parametrize("level", [4, 5])
def test_the_bridge_client_id_prefix_is_refused(server: ServerThread, level: int) -> None:
    """``bridge:`` marks what the mesh's bridges append (not local to a ``local``
    link): a client using it could pass its messages off as a bridge's."""

    async def connect() -> None:
        target = Target("127.0.0.1", server.port)
        with pytest.raises(LoadError, match="Client Identifier not valid"):
            await ClientConnection.open(target, "bridge:mosq", level)
        client = await ClientConnection.open(target, "bridges-are-fine", level)
        await client.close()

    trio.run(connect)
