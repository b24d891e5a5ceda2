"""Conformance statements about subscriptions and wills that the matrix (docs/mqtt.md,
"Conformance matrix") had open: a replaced subscription, UNSUBSCRIBE with deliveries
in flight, and the order of a will's User Properties. Real server, real sockets."""

from __future__ import annotations

import pytest

from tests.protocols.mqtt.server_helpers import RawClient, ServerThread
from tidelog.protocols.mqtt import (
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
)
from tidelog.protocols.mqtt.packets import Will
from tidelog.protocols.mqtt.properties import Properties

FLOW = 40


def settle(client: RawClient, packet: object) -> None:
    """Acknowledge a delivery (or a PUBREL) the way a client does, so the flow goes on."""
    if isinstance(packet, Pubrel):
        client.send(Pubcomp(packet.packet_id))
        return
    if not isinstance(packet, Publish) or not packet.qos:
        return
    assert packet.packet_id is not None
    client.send((Puback if packet.qos == 1 else Pubrec)(packet.packet_id))


def next_publish(client: RawClient) -> Publish | object:
    """The next packet that is not a PUBREL (those are answered on the way)."""
    while isinstance(packet := client.receive(), Pubrel):
        settle(client, packet)
    return packet


@pytest.mark.parametrize("level", [4, 5], ids=["3.1.1", "5.0"])
def test_an_identical_filter_replaces_the_subscription_resends_retained_and_loses_nothing(
    server: ServerThread, level: int
) -> None:
    """5.0 [MQTT-3.8.4-4] (Retain Handling 0) and 3.1.1 [MQTT-3.8.4-3]: a SUBSCRIBE
    with the filter of an existing subscription replaces it (here with a higher maximum
    QoS), the retained message is sent again, and the messages flowing meanwhile are
    neither lost nor doubled."""
    publisher = RawClient(server.port, level)
    publisher.connect("flow-pub")
    publisher.send(Publish("flow/retained", b"kept", 1, retain=True, packet_id=1))
    publisher.expect(Puback)
    subscriber = RawClient(server.port, level)
    subscriber.connect("flow-sub")
    subscriber.send(Subscribe(1, [Subscription("flow/#", 1, retain_handling=0)]))
    assert subscriber.expect(Suback).packet_id == 1
    first = subscriber.expect(Publish)
    assert (first.payload, first.retain) == (b"kept", True)
    settle(subscriber, first)

    publisher.send(*(Publish("flow/x", b"%d" % n, 2, packet_id=n + 2) for n in range(FLOW)))
    subscriber.send(Subscribe(2, [Subscription("flow/#", 2, retain_handling=0)]))
    received: list[Publish] = []
    while True:  # deliveries before and after the new SUBACK, in any interleaving
        packet = next_publish(subscriber)
        if isinstance(packet, Suback):
            assert packet.packet_id == 2
            break
        assert isinstance(packet, Publish)
        received.append(packet)
        settle(subscriber, packet)
    publisher.send(
        *(Publish("flow/x", b"%d" % n, 2, packet_id=n + 2) for n in range(FLOW, 2 * FLOW))
    )
    after: list[Publish] = []
    while sum(p.payload != b"kept" for p in received + after) < 2 * FLOW:
        packet = next_publish(subscriber)
        assert isinstance(packet, Publish)
        after.append(packet)
        settle(subscriber, packet)
    for _ in range(2 * FLOW):
        publisher.send(Pubrel(publisher.expect(Pubrec).packet_id))
    for _ in range(2 * FLOW):
        publisher.expect(Pubcomp)
    payloads = [p.payload for p in received + after]
    assert payloads.count(b"kept") == 1, "the retained message is sent again, once"
    flowing = [p for p in payloads if p != b"kept"]
    assert sorted(flowing) == sorted(b"%d" % n for n in range(2 * FLOW)), "lost or doubled"
    # published (at QoS 2) after the new SUBACK: the replacement's maximum QoS applies
    assert {p.qos for p in after if p.payload != b"kept"} == {2}
    retained_again = [p for p in received + after if p.payload == b"kept"]
    assert retained_again[0].retain
    subscriber.close()
    publisher.close()


@pytest.mark.parametrize("level", [4, 5], ids=["3.1.1", "5.0"])
def test_unsubscribe_completes_the_deliveries_already_started(
    server: ServerThread, level: int
) -> None:
    """5.0 and 3.1.1 [MQTT-3.10.4-3]: deliveries the server started before UNSUBSCRIBE
    are completed: a QoS 2 PUBREC after the UNSUBACK gets its PUBREL (not "packet
    identifier not found"), a QoS 1 PUBACK is taken without complaint; nothing new is
    sent for the filter after the UNSUBACK ([MQTT-3.10.4-2])."""
    subscriber = RawClient(server.port, level)
    subscriber.connect("uns-sub")
    subscriber.send(Subscribe(1, [Subscription("uns/#", 2)]))
    subscriber.expect(Suback)
    publisher = RawClient(server.port, level)
    publisher.connect("uns-pub")
    publisher.send(
        Publish("uns/two", b"2", 2, packet_id=1), Publish("uns/one", b"1", 1, packet_id=2)
    )
    publisher.expect(Pubrec)
    publisher.send(Pubrel(1))
    deliveries = {p.qos: p for p in (subscriber.expect(Publish), subscriber.expect(Publish))}
    assert set(deliveries) == {1, 2}
    subscriber.send(Unsubscribe(3, ["uns/#"]))
    assert subscriber.expect(Unsuback).packet_id == 3
    two, one = deliveries[2], deliveries[1]
    assert two.packet_id is not None and one.packet_id is not None
    subscriber.send(Pubrec(two.packet_id))
    pubrel = subscriber.expect(Pubrel)
    assert pubrel.packet_id == two.packet_id
    assert pubrel.reason_code == 0
    subscriber.send(Pubcomp(two.packet_id), Puback(one.packet_id))
    publisher.send(Publish("uns/two", b"after", 1, packet_id=3))
    subscriber.send(Pingreq())
    # the PINGRESP comes, and no PUBLISH for the removed subscription before or after it
    assert isinstance(subscriber.receive(), Pingresp)
    subscriber.send(Pingreq())
    assert isinstance(subscriber.receive(), Pingresp)
    subscriber.close()
    publisher.close()


def test_a_will_keeps_the_order_of_its_user_properties(server: ServerThread) -> None:
    """5.0 [MQTT-3.1.3-10]: the will is published with its User Properties in the
    order the CONNECT gave them (repeated names included)."""
    order = (("b", "1"), ("a", "2"), ("b", "3"), ("a", "0"))
    watcher = RawClient(server.port, 5)
    watcher.connect("will-watcher")
    watcher.send(Subscribe(1, [Subscription("will/t", 0)]))
    watcher.expect(Suback)
    dying = RawClient(server.port, 5)
    dying.connect(
        "will-dying", will=Will("will/t", b"gone", 0, False, Properties(user_properties=order))
    )
    dying.close()  # no DISCONNECT: the will goes
    will = watcher.expect(Publish)
    assert will.payload == b"gone"
    assert will.properties.user_properties == order
    watcher.close()
