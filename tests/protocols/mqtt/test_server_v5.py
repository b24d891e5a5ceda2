"""MQTT 5 features: aliases, identifiers, no local, properties, expiry, limits, shared
subscriptions, retain options, replay."""

from __future__ import annotations

import time
from collections.abc import Callable

import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from paho.mqtt.subscribeoptions import SubscribeOptions

from tests.protocols.mqtt.server_helpers import (
    Client,
    RawClient,
    ServerThread,
    clients,
    now_ms,
    wait_clock_past,
    wait_for,
)
from tests.storage.backends import ManualClock
from tidelog.protocols.mqtt import (
    Connack,
    Disconnect,
    Puback,
    Publish,
    ReasonCode,
    Suback,
    Subscribe,
    Subscription,
)
from tidelog.protocols.mqtt import Properties as Props

V5 = paho.MQTTv5


def raw5(server: ServerThread, client_id: str = "", **props: object) -> RawClient:
    client = RawClient(server.port, 5)
    connack = client.connect(client_id, properties=Props(**props))  # type: ignore[arg-type]
    assert connack.reason_code == 0
    client.connack = connack  # type: ignore[attr-defined]
    return client


def sub5(client: RawClient, *subs: Subscription, packet_id: int = 1, **props: object) -> Suback:
    client.send(Subscribe(packet_id, subs, Props(**props)))  # type: ignore[arg-type]
    return client.expect(Suback)


def test_connack_announces_limits(server: ServerThread) -> None:
    client = raw5(server, "limits")
    props = client.connack.properties  # type: ignore[attr-defined]
    assert props.receive_maximum == 1024
    assert props.topic_alias_maximum == 64
    assert props.maximum_packet_size == 16 * 1024 * 1024
    client.close()


def test_topic_aliases_inbound(server: ServerThread) -> None:
    with clients(Client(server.port)) as (sub,):
        sub.subscribe("long/topic/name", 1)
        pub = raw5(server)
        pub.send(Publish("long/topic/name", b"1", 1, packet_id=1, properties=Props(topic_alias=3)))
        pub.send(Publish("", b"2", 1, packet_id=2, properties=Props(topic_alias=3)))
        assert [pub.expect(Puback).packet_id for _ in range(2)] == [1, 2]
        assert [(m.topic, m.payload) for m in sub.receive(2)] == [
            ("long/topic/name", b"1"),
            ("long/topic/name", b"2"),
        ]
        pub.send(Publish("x", b"3", 0, properties=Props(topic_alias=65)))  # over the maximum
        assert pub.expect(Disconnect).reason_code == ReasonCode.TOPIC_ALIAS_INVALID
        assert pub.closed()
        unknown = raw5(server)
        unknown.send(Publish("", b"4", 0, properties=Props(topic_alias=9)))
        assert unknown.expect(Disconnect).reason_code == ReasonCode.PROTOCOL_ERROR


def test_topic_aliases_outbound(server: ServerThread) -> None:
    sub = raw5(server, topic_alias_maximum=1)
    sub5(sub, Subscription("a/#"))
    with clients(Client(server.port)) as (pub,):
        for topic in ["a/one", "a/one", "a/two", "a/one"]:
            pub.publish(topic, topic.encode(), 0)
    got = [sub.expect(Publish) for _ in range(4)]
    assert [(p.topic, p.properties.topic_alias, p.payload) for p in got] == [
        ("a/one", 1, b"a/one"),
        ("", 1, b"a/one"),
        ("a/two", None, b"a/two"),  # the only alias is taken
        ("", 1, b"a/one"),
    ]


def test_overlapping_subscriptions_one_message_all_identifiers(server: ServerThread) -> None:
    sub = raw5(server)
    sub5(sub, Subscription("a/#", 1), packet_id=1, subscription_identifiers=(7,))
    sub5(sub, Subscription("a/+", 2), packet_id=2, subscription_identifiers=(9,))
    sub5(sub, Subscription("+/b", 0), packet_id=3)
    with clients(Client(server.port)) as (pub,):
        pub.publish("a/b", b"x", 2)
        pub.publish("a/c", b"y", 1)
    first = sub.expect(Publish)
    assert (first.payload, first.qos) == (b"x", 2)  # the highest granted QoS
    assert first.properties.subscription_identifiers == (7, 9)
    second = sub.expect(Publish)
    assert (second.payload, second.qos, second.properties.subscription_identifiers) == (
        b"y",
        1,
        (7, 9),
    )


def test_qos_is_downgraded_to_the_subscription(server: ServerThread) -> None:
    with clients(Client(server.port, version=V5), Client(server.port, version=V5)) as (sub, pub):
        sub.subscribe("down", 0)
        pub.publish("down", b"x", 2)
        assert sub.receive()[0].qos == 0


def test_no_local(server: ServerThread) -> None:
    with clients(Client(server.port, version=V5), Client(server.port, version=V5)) as (me, other):
        me.subscribe("chat", options=SubscribeOptions(qos=1, noLocal=True))
        me.publish("chat", b"mine", 1)
        other.publish("chat", b"theirs", 1)
        assert [m.payload for m in me.receive()] == [b"theirs"]
        assert me.nothing_more()


def test_message_properties_are_forwarded(server: ServerThread) -> None:
    with clients(Client(server.port, version=V5), Client(server.port, version=V5)) as (sub, pub):
        sub.subscribe("req", 1)
        props = PahoProperties(PacketTypes.PUBLISH)
        props.UserProperty = [("k", "v"), ("k", "w")]
        props.ContentType = "application/json"
        props.PayloadFormatIndicator = 1
        props.ResponseTopic = "reply/here"
        props.CorrelationData = b"\x01\x02"
        pub.publish("req", b"{}", 1, properties=props)
        (got,) = sub.receive()
        p = got.properties
        assert p.UserProperty == [("k", "v"), ("k", "w")]
        assert p.ContentType == "application/json"
        assert p.PayloadFormatIndicator == 1
        assert p.ResponseTopic == "reply/here"
        assert p.CorrelationData == b"\x01\x02"


def test_message_expiry(clocked_server: ServerThread, clock: ManualClock) -> None:
    """Expiry runs on the broker's clock: the test moves it 2.1 s on (no sleeping)."""
    server = clocked_server
    sub = Client(server.port, "expiry", version=V5, clean=False, session_expiry=600)
    sub.subscribe("exp", 1)
    sub.disconnect()
    with clients(Client(server.port, version=V5)) as (pub,):
        short = PahoProperties(PacketTypes.PUBLISH)
        short.MessageExpiryInterval = 1
        pub.publish("exp", b"short", 1, properties=short)
        long = PahoProperties(PacketTypes.PUBLISH)
        long.MessageExpiryInterval = 100
        pub.publish("exp", b"long", 1, properties=long)
    clock.advance(2100)
    sub = Client(server.port, "expiry", version=V5, clean=False, session_expiry=600)
    try:
        (got,) = sub.receive()
        assert got.payload == b"long"
        assert got.properties.MessageExpiryInterval == 98  # what remains of it
        assert sub.nothing_more()
    finally:
        sub.disconnect()


def test_maximum_packet_size_both_ways(make_server: Callable[..., ServerThread]) -> None:
    server = make_server(max_packet_size=1000)
    small = raw5(server, maximum_packet_size=200)
    sub5(small, Subscription("size/#", 1))
    with clients(Client(server.port, version=V5)) as (pub,):
        pub.publish("size/big", b"x" * 300, 1)  # too large for the subscriber: skipped
        pub.publish("size/small", b"y" * 10, 1)
    got = small.expect(Publish)
    assert got.payload == b"y" * 10
    small.send(Puback(got.packet_id))
    big = raw5(server)
    big.send(Publish("size/x", b"z" * 2000, 0))
    assert big.expect(Disconnect).reason_code == ReasonCode.PACKET_TOO_LARGE
    assert big.closed()
    with clients(Client(server.port, version=V5)) as (fresh,):  # others are not affected
        fresh.subscribe("ok", 1)
        fresh.publish("ok", b"fine", 1)
        assert fresh.receive()[0].payload == b"fine"


def test_receive_maximum_enforced_inbound(make_server: Callable[..., ServerThread]) -> None:
    server = make_server(receive_maximum=2)
    client = raw5(server)
    client.send(*(Publish("rm", b"%d" % i, 1, packet_id=i + 1) for i in range(3)))
    packets = []
    while True:
        packet = client.receive()
        packets.append(packet)
        if isinstance(packet, Disconnect):
            break
    assert packets[-1].reason_code == ReasonCode.RECEIVE_MAXIMUM_EXCEEDED


def test_outbound_flow_control_respects_client_receive_maximum(server: ServerThread) -> None:
    sub = raw5(server, receive_maximum=2)
    sub5(sub, Subscription("flow", 1))
    with clients(Client(server.port, version=V5)) as (pub,):
        for i in range(5):
            pub.publish("flow", b"%d" % i, 1)
    first = [sub.expect(Publish) for _ in range(2)]
    with pytest.raises(TimeoutError):
        sub.receive(timeout=0.3)  # the window is full
    sub.send(Puback(first[0].packet_id))
    third = sub.expect(Publish)
    assert third.payload == b"2"
    for p in [first[1], third]:
        sub.send(Puback(p.packet_id))
    rest = [sub.expect(Publish) for _ in range(2)]
    assert [p.payload for p in rest] == [b"3", b"4"]


def test_paho_flow_control_with_small_receive_maximum(server: ServerThread) -> None:
    props = PahoProperties(PacketTypes.CONNECT)
    props.ReceiveMaximum = 3
    with clients(
        Client(server.port, version=V5, connect_properties=props), Client(server.port, version=V5)
    ) as (sub, pub):
        sub.subscribe("many", 1)
        for i in range(200):
            pub.paho.publish("many", b"%d" % i, 1)
        got = sub.receive(200)
        assert [m.payload for m in got] == [b"%d" % i for i in range(200)]


def test_server_keep_alive(make_server: Callable[..., ServerThread]) -> None:
    server = make_server(server_keep_alive=1)
    client = raw5(server)
    assert client.connack.properties.server_keep_alive == 1  # type: ignore[attr-defined]
    started = time.monotonic()
    assert client.expect(Disconnect, timeout=5).reason_code == ReasonCode.KEEP_ALIVE_TIMEOUT
    assert 1.2 < time.monotonic() - started < 4


def test_keep_alive_311_closes_a_silent_client(server: ServerThread) -> None:
    client = RawClient(server.port)
    client.connect("silent", keep_alive=1)
    started = time.monotonic()
    assert client.closed(timeout=5)
    assert 1.2 < time.monotonic() - started < 4


@pytest.mark.parametrize("version", [paho.MQTTv311, V5])
def test_shared_subscriptions(server: ServerThread, version: int) -> None:
    members = [Client(server.port, version=version) for _ in range(3)]
    with clients(*members, Client(server.port)) as (*group, pub):
        for member in group:
            member.subscribe("$share/workers/jobs/#", 1)
        for i in range(60):
            pub.publish(f"jobs/{i % 4}", b"%d" % i, 1)

        def count() -> int:
            return sum(member.messages.qsize() for member in group)

        wait_for(lambda: count() >= 60, what="60 deliveries to the group")
        received = [m for member in group for m in member.receive(member.messages.qsize())]
        assert sorted(int(m.payload) for m in received) == list(range(60))  # exactly once
        assert all(member.nothing_more() for member in group)


def test_retain_handling_and_retain_as_published(server: ServerThread) -> None:
    with clients(Client(server.port, version=V5)) as (pub,):
        pub.publish("r/a", b"kept", 1, retain=True)
        with clients(Client(server.port, version=V5)) as (sub,):
            sub.subscribe("r/#", options=SubscribeOptions(qos=1, retainHandling=2))
            assert sub.nothing_more()
            sub.subscribe("r/#", options=SubscribeOptions(qos=1, retainHandling=1))
            assert sub.nothing_more()  # the subscription existed already
            sub.subscribe("r/+", options=SubscribeOptions(qos=1, retainHandling=1))
            (first,) = sub.receive()
            assert (first.payload, first.retain) == (b"kept", True)
            sub.subscribe("r/a", options=SubscribeOptions(qos=1, retainAsPublished=True))
            sub.receive()  # the retained message for the new subscription
            pub.publish("r/a", b"new", 1, retain=True)
            # r/#, r/+ and r/a all match: one message, retain as published by r/a
            (live,) = sub.receive()
            assert (live.payload, live.retain) == (b"new", True)
            assert sub.nothing_more()


def test_replay_from_user_property(server: ServerThread) -> None:
    with clients(Client(server.port, version=V5)) as (pub,):
        for i in range(5):
            pub.publish(f"hist/{i}", b"%d" % i, 1)
        props = PahoProperties(PacketTypes.SUBSCRIBE)
        props.UserProperty = ("replay-from", "offset:2")
        with clients(Client(server.port, version=V5)) as (sub,):
            sub.subscribe("hist/#", 1, properties=props)
            pub.publish("hist/live", b"live", 1)
            got = sub.receive(4)
            assert [m.payload for m in got] == [b"2", b"3", b"4", b"live"]
            assert sub.nothing_more()
        props.UserProperty = ("replay-from", "earliest")
        with clients(Client(server.port, version=V5)) as (sub,):
            sub.subscribe("hist/#", 1, properties=props)
            assert len(sub.receive(6)) == 6
        moment = now_ms() + 1  # after every acknowledged (stamped) publish
        wait_clock_past(moment)
        pub.publish("hist/after", b"after", 1)
        props.UserProperty = ("replay-from", f"time:{moment}")
        with clients(Client(server.port, version=V5)) as (sub,):
            sub.subscribe("hist/#", 1, properties=props)
            assert [m.payload for m in sub.receive()] == [b"after"]
            assert sub.nothing_more()


def test_replay_filter_form_for_311(server: ServerThread) -> None:
    with clients(Client(server.port)) as (pub,):
        for i in range(4):
            pub.publish("sensors/t", b"%d" % i, 1)
        with clients(Client(server.port)) as (sub,):
            sub.subscribe("$replay/offset:1/sensors/#", 1)
            pub.publish("sensors/t", b"live", 1)
            got = sub.receive(4)
            assert [(m.topic, m.payload) for m in got] == [
                ("sensors/t", b"1"),
                ("sensors/t", b"2"),
                ("sensors/t", b"3"),
                ("sensors/t", b"live"),
            ]
            assert sub.nothing_more()
            granted = sub.subscribe("$replay/nonsense/sensors/#", 1)
            assert granted == (128,)  # refused: 0x80
            granted = sub.subscribe("$replay/time:1970-01-01T00:00:00Z/sensors/#", 0)
            assert granted == (0,)
            assert len(sub.receive(5)) == 5


def test_replay_with_a_bad_position_is_refused_with_a_reason(server: ServerThread) -> None:
    client = raw5(server)
    suback = sub5(client, Subscription("a/#"), user_properties=(("replay-from", "yesterday"),))
    assert suback.reason_codes == (ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR,)
    assert "yesterday" in (suback.properties.reason_string or "")


def test_will_delay_and_disconnect_with_will(
    clocked_server: ServerThread, clock: ManualClock
) -> None:
    """The will delay runs on the broker's clock: the test moves it 30 s on."""
    server = clocked_server
    assert server.running is not None
    wills = server.running.broker.wills
    with clients(Client(server.port, version=V5)) as (watcher,):
        watcher.subscribe("wills/#", 1)
        delay = PahoProperties(PacketTypes.WILLMESSAGE)
        delay.WillDelayInterval = 30
        args = {"version": V5, "clean": False, "session_expiry": 60, "will_properties": delay}
        back_in_time = Client(server.port, "wd-1", will=("wills/a", b"a", 1, False), **args)  # type: ignore[arg-type]
        back_in_time.drop()
        back_again = Client(server.port, "wd-1", **args)  # type: ignore[arg-type]
        late = Client(server.port, "wd-2", will=("wills/b", b"b", 1, False), **args)  # type: ignore[arg-type]
        late.drop()
        wait_for(lambda: len(wills) == 1, what="the will of wd-2 waiting")  # wd-1's: cancelled
        clock.advance(29_999)
        assert watcher.nothing_more(0.2)  # not due yet
        clock.advance(1)
        (will,) = watcher.receive()
        assert will.topic == "wills/b"
        with_will = Client(server.port, version=V5, will=("wills/c", b"c", 1, False))
        with_will.paho.disconnect(reasoncode=paho.ReasonCode(PacketTypes.DISCONNECT, identifier=4))
        assert watcher.receive()[0].topic == "wills/c"
        assert watcher.nothing_more(1.0)
        back_again.disconnect()
        with_will.paho.loop_stop()


def test_authentication_hook(server: ServerThread) -> None:
    from tidelog.protocols.mqtt.settings import ConnectInfo

    async def only_alice(info: ConnectInfo) -> ReasonCode:
        if info.connect.username == "alice":
            return ReasonCode.SUCCESS
        return ReasonCode.BAD_USER_NAME_OR_PASSWORD

    assert server.running is not None
    server.running.context.mqtt.authenticate = only_alice
    refused = RawClient(server.port, 5)
    refused.send_raw(b"")
    connack = refused.connect("eve", username="eve", password=b"x")
    assert connack.reason_code == ReasonCode.BAD_USER_NAME_OR_PASSWORD
    assert refused.closed()
    v3 = RawClient(server.port, 4)
    assert v3.connect("eve", username="eve").reason_code == ReasonCode.BAD_USER_NAME_OR_PASSWORD
    ok = RawClient(server.port, 5)
    assert ok.connect("alice", username="alice").reason_code == ReasonCode.SUCCESS
    assert isinstance(ok.connack if hasattr(ok, "connack") else Connack(), Connack)
