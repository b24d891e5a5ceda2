"""QoS 2 on persistent sessions across a crash: every ack that lets the client move on
is sent only once the stored session agrees with it.

Found by the crash harness (tests/crash/harness.py): with saves coalesced, PUBCOMP went out
while the stored session still listed the packet identifier as received, so after a
kill -9 the client's next PUBLISH reusing that identifier was answered as a resend
and never stored (acknowledged and lost). On the outbound side, a QoS 2 message sent
before the session recorded its packet identifier came again after a crash under a
new identifier (delivered twice), and the identifier the client still held made it
drop a later message as a resend (lost).

The server here saves sessions rarely (``session_save_interval`` 60 s), so whatever
is stored when an ack arrives was stored for that ack.
"""

from __future__ import annotations

import json
from typing import Any

from tests.protocols.mqtt.server_helpers import RawClient, ServerThread
from tidelog.protocols.mqtt import (
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
)


def stored_session(server: ServerThread, client_id: str) -> dict[str, Any]:
    assert server.running is not None
    raw = server.call(server.running.broker.log.get_state, "sessions", client_id)
    assert raw is not None
    session: dict[str, Any] = json.loads(raw)
    return session


def test_pubcomp_only_after_the_stored_session_forgets_the_identifier(make_server: Any) -> None:
    server = make_server(session_save_interval=60)
    client = RawClient(server.port)
    client.connect("q2-in", clean=False)
    client.send(Publish("in/t", b"one", 2, packet_id=5))
    client.expect(Pubrec)
    assert 5 in stored_session(server, "q2-in")["inflight"]["in"]
    client.send(Pubrel(5))
    client.expect(Pubcomp)
    # the client may now reuse 5 for a new message: after a crash, the stored session
    # must not take that message for a resend of the old one
    assert 5 not in stored_session(server, "q2-in")["inflight"]["in"]
    client.close()


def test_qos2_delivery_is_stored_before_it_is_sent_and_rel_before_pubrel(
    make_server: Any,
) -> None:
    server = make_server(session_save_interval=60)
    subscriber = RawClient(server.port)
    subscriber.connect("q2-out", clean=False)
    subscriber.send(Subscribe(1, [Subscription("out/#", 2)]))
    subscriber.expect(Suback)
    publisher = RawClient(server.port)
    publisher.connect("q2-pub")
    publisher.send(Publish("out/t", b"two", 2, packet_id=1))
    publisher.expect(Pubrec)
    delivery = subscriber.expect(Publish)
    assert delivery.qos == 2
    out = stored_session(server, "q2-out")["inflight"]["out"]
    assert [delivery.packet_id, 2] in out.values(), out
    subscriber.send(Pubrec(delivery.packet_id))
    pubrel = subscriber.expect(Pubrel)
    assert pubrel.packet_id == delivery.packet_id
    inflight = stored_session(server, "q2-out")["inflight"]
    assert delivery.packet_id in inflight["rel"], inflight
    subscriber.send(Pubcomp(delivery.packet_id))
    subscriber.close()
    publisher.close()


def test_shared_qos2_delivery_is_stored_before_it_is_sent(make_server: Any) -> None:
    """A persistent member's QoS 2 message from a shared group is in the stored session
    (``shared``) before the PUBLISH goes: after a crash it is sent again with its
    identifier ([MQTT-4.8.2-4]), never lost to the session while the client still
    holds the identifier (and would drop a new message reusing it as a resend)."""
    server = make_server(session_save_interval=60)
    member = RawClient(server.port)
    member.connect("q2-member", clean=False)
    member.send(Subscribe(1, [Subscription("$share/g/shared/#", 2)]))
    member.expect(Suback)
    publisher = RawClient(server.port)
    publisher.connect("q2-shared-pub")
    publisher.send(Publish("shared/t", b"one", 2, packet_id=1))
    publisher.expect(Pubrec)
    delivery = member.expect(Publish)
    assert delivery.qos == 2
    shared = stored_session(server, "q2-member")["inflight"].get("shared", {})
    assert [pid for _, pid in shared.get("$share/g/shared/#", [])] == [delivery.packet_id]
    member.send(Pubrec(delivery.packet_id))
    assert member.expect(Pubrel).packet_id == delivery.packet_id
    member.send(Pubcomp(delivery.packet_id))
    member.close()
    publisher.close()
