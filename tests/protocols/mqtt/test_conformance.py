"""Tests for statements of the MQTT 5.0 / 3.1.1 specifications that the conformance
matrix (docs/mqtt.md, "Conformance matrix") found without a test: the keep-alive cap, message
expiry wherever a copy waits, and the graceful close after a final CONNACK or
DISCONNECT. The sans-IO session is driven directly where the wire does not matter."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable

import pytest
import trio
import trio_websocket

from tests.protocols.mqtt.server_helpers import (
    TIMEOUT,
    RawClient,
    ServerThread,
    raw_connection,
    read_until_closed,
    wait_for,
)
from tests.protocols.mqtt.test_session_core import deliver, make
from tidelog.engine.sessions import Session
from tidelog.errors import InvalidTopicError
from tidelog.protocols.mqtt import (
    Connack,
    Connect,
    Decoder,
    Disconnect,
    MQTTProtocolError,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Role,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    encode,
)
from tidelog.protocols.mqtt.admission import Limits, connack, negotiate
from tidelog.protocols.mqtt.packets import Will
from tidelog.protocols.mqtt.planner import RETAINED, SHARED, Source
from tidelog.protocols.mqtt.properties import Properties
from tidelog.protocols.mqtt.reason_codes import ReasonCode
from tidelog.protocols.mqtt.replies import Close, fitted
from tidelog.protocols.mqtt.settings import MQTTSettings
from tidelog.protocols.mqtt.stored_session import Inflight, SubOptions
from tidelog.storage import Event
from tidelog.storage import Properties as EventProperties
from tidelog.topics import compile_filter, parse_shared

# -- Server Keep Alive as a cap (mqtt.max_keep_alive) ------------------------------------


def announced(connect: Connect, settings: MQTTSettings) -> int | None:
    """The Server Keep Alive of the CONNACK accepting ``connect``."""
    ack = Decoder(5, role=Role.CLIENT).feed(connack(connect, settings, "c", False))[0]
    return ack.properties.server_keep_alive  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("asked", "held_to", "told"),
    [(60, 30, 30), (0, 30, 30), (10, 10, None), (30, 30, None)],
)
def test_max_keep_alive_caps_the_clients_and_tells_it(
    asked: int, held_to: int, told: int | None
) -> None:
    """[MQTT-3.1.2-21]/[MQTT-3.2.2-21]/[MQTT-3.2.2-22]: a v5 client asking for more
    than the cap, or for none, is told the cap; one within it keeps its own (no
    Server Keep Alive sent)."""
    settings = MQTTSettings(max_keep_alive=30)
    connect = Connect(client_id="k", keep_alive=asked, protocol_level=5)
    assert negotiate(connect, settings).keep_alive == held_to
    assert announced(connect, settings) == told


def test_max_keep_alive_holds_a_3x_client_that_cannot_be_told() -> None:
    settings = MQTTSettings(max_keep_alive=30)
    assert negotiate(Connect(client_id="k", keep_alive=0), settings).keep_alive == 30
    assert negotiate(Connect(client_id="k", keep_alive=90), settings).keep_alive == 30
    assert negotiate(Connect(client_id="k", keep_alive=20), settings).keep_alive == 20


def test_server_keep_alive_wins_over_the_cap() -> None:
    settings = MQTTSettings(server_keep_alive=50, max_keep_alive=30)
    connect = Connect(client_id="k", keep_alive=0, protocol_level=5)
    assert negotiate(connect, settings).keep_alive == 50
    assert announced(connect, settings) == 50


def test_the_cap_is_the_session_clock() -> None:
    """[MQTT-3.1.2-22]: the session times out at 1.5 times the keep alive in force."""
    settings = MQTTSettings(max_keep_alive=4)
    limits = negotiate(Connect(client_id="k", keep_alive=0, protocol_level=5), settings)
    core, _ = make(keep_alive=limits.keep_alive)
    deadline = core.expect_packets(100.0)
    assert deadline == 106.0
    assert not core.timed_out(105.9) and core.timed_out(106.0)


@pytest.mark.parametrize("level", [4, 5])
def test_a_client_asking_for_no_keep_alive_is_closed_at_the_cap(
    make_server: Callable[..., ServerThread], level: int
) -> None:
    server = make_server(max_keep_alive=1)
    client = RawClient(server.port, level)
    ack = client.connect("silent", keep_alive=0)
    if level == 5:
        assert ack.properties.server_keep_alive == 1
        assert client.expect(Disconnect).reason_code == ReasonCode.KEEP_ALIVE_TIMEOUT
    assert client.closed()


# -- message expiry wherever a copy waits ----------------------------------------------


def aged(offset: int, expiry: int, age_s: float, qos: int = 1) -> Event:
    """An event published ``age_s`` seconds ago with a Message Expiry Interval."""
    published = time.time_ns() // 1_000_000 - int(age_s * 1000)
    props = EventProperties(message_expiry=expiry)
    return Event(offset, published, "t", b"x", qos, True, props)


def test_an_expired_retained_message_is_not_sent_on_subscribe() -> None:
    """[MQTT-3.3.2-5] for a retained copy."""
    core, shell = make()
    retained = Source(RETAINED, None, None)
    deliver(core, aged(1, 5, 10), aged(2, 3600, 10), source=retained)
    sent = shell.sent()
    assert [p.topic for p in sent] == ["t"] and len(sent) == 1
    assert 3580 <= sent[0].properties.message_expiry_interval <= 3590  # [MQTT-3.3.2-6]


def test_a_message_that_expires_while_waiting_for_the_window_is_dropped() -> None:
    """[MQTT-3.3.2-5] for a copy queued behind the client's Receive Maximum: the
    expired one is never sent; the one after it still is."""
    core, shell = make(window=1)
    deliver(core, aged(1, 3600, 0), aged(2, 1, 2), aged(3, 3600, 0))
    (first,) = shell.sent()
    assert first.packet_id is not None  # the window is full: 2 and 3 wait
    assert [d[0].offset for d in core.planner.ready] == [3]  # 2 expired, dropped
    shell.receive(Puback(first.packet_id))
    (second,) = shell.sent()
    assert second.packet_id is not None and not core.planner.ready
    assert core.planner.outstanding[second.packet_id].offset == 3


def test_a_resent_message_is_sent_even_if_expired() -> None:
    """[MQTT-4.3.3-7]: once a PUBLISH has gone out, expiry no longer applies to it
    (a resumed session resends it with DUP)."""

    session = Session("s", expiry_interval=60)
    session.inflight = Inflight(out={7: (3, 2)}, sent_end=8).to_json()
    core, shell = make(persistent=True, session=session)
    core.restore()
    deliver(core, aged(7, 1, 30, qos=2), qos=2)
    (resent,) = shell.sent()
    assert resent.dup and resent.packet_id == 3


# -- the final packet reaches the client before the connection closes -----------------


def send_then_read(sock: socket.socket, trigger: bytes) -> bytes:
    """Send ``trigger`` and 2 MiB of PINGREQs behind it without reading (the client is
    busy sending while the server answers and closes), then read what came back."""
    sock.settimeout(TIMEOUT)
    with contextlib.suppress(OSError):  # the server may have closed already
        sock.sendall(trigger + FLOOD)
        sock.shutdown(socket.SHUT_WR)  # done sending: the server's drain ends here
    return read_until_closed(sock)


FLOOD = b"\xc0\x00" * (1024 * 1024)


def test_disconnect_behind_unread_deliveries_reaches_a_client_that_keeps_sending(
    server: ServerThread,
) -> None:
    """§4.13 / [MQTT-4.13.1-1]: the DISCONNECT 0x81 answering a malformed packet waits
    in the server's socket behind deliveries the client has not read yet, while the
    client keeps sending. Closing at once would reset the connection and destroy it
    (with unread input, the kernel drops its send queue); the server shuts down
    writing and drains the input instead, so the client reads every delivery, then
    the DISCONNECT, then the end of the stream."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a slow reader
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(
        encode(Connect(client_id="stalled", protocol_level=5), 5)
        + encode(Subscribe(1, [Subscription("big")]), 5)
    )
    decoder = Decoder(5, role=Role.CLIENT)
    received: list[object] = []
    while len(received) < 2:
        received.extend(decoder.feed(sock.recv(65_536)))
    assert isinstance(received[1], Suback)
    assert server.running is not None
    counters = server.running.context.traffic
    publisher = RawClient(server.port, 5)
    publisher.connect("publisher")
    sent_before = server.call_sync(lambda: counters.bytes_sent["mqtt"])
    publisher.send(*(Publish("big", b"D" * 1000) for _ in range(10)))
    # the server has written every delivery into its socket (the client reads none)
    wait_for(lambda: server.call_sync(lambda: counters.bytes_sent["mqtt"]) >= sent_before + 10_000)
    data = send_then_read(sock, b"\x00\x00")  # a reserved packet type: malformed
    sock.close()
    publisher.close()
    packets = Decoder(5, role=Role.CLIENT).feed(data)
    assert [type(p) for p in packets] == [Publish] * 10 + [Disconnect]
    assert packets[-1].reason_code == ReasonCode.MALFORMED_PACKET  # type: ignore[attr-defined]


def test_refusing_connack_reaches_a_client_that_keeps_sending(server: ServerThread) -> None:
    """[MQTT-3.2.2-7]: a CONNACK 0x8C (bad authentication method) is read by a
    client that pipelines more packets behind its CONNECT."""
    sock = raw_connection(server.port)
    connect = Connect(
        client_id="refused",
        protocol_level=5,
        properties=Properties(authentication_method="SCRAM-SHA-1"),
    )
    data = send_then_read(sock, encode(connect, 5) + b"\xc0\x00" * 100_000)
    sock.close()
    (ack,) = Decoder(5, role=Role.CLIENT).feed(data)
    assert isinstance(ack, Connack) and ack.reason_code == ReasonCode.BAD_AUTHENTICATION_METHOD


def test_limits_default_keep_alive_is_the_clients() -> None:
    assert Limits(1).keep_alive == 0
    connect = Connect(client_id="k", keep_alive=45, protocol_level=5)
    assert negotiate(connect, MQTTSettings()).keep_alive == 45
    assert announced(connect, MQTTSettings()) is None


# -- small statements without a test before the matrix ------------------------------------


def test_request_problem_information_0_leaves_reason_strings_out_of_acks() -> None:
    """[MQTT-3.1.2-29]: no Reason String on a PUBACK/PUBREC when the client asked
    for none (Request Problem Information 0)."""
    core, shell = make()
    core.problem_info = False  # what negotiate() sets for request_problem_information=0
    (request,) = shell.receive(Publish("a", b"1", 1, packet_id=1))
    core.durable(request.meta, OSError("disk gone"))
    (ack,) = shell.sent()
    assert ack.reason_code == ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR
    assert ack.properties.reason_string is None
    limits = negotiate(
        Connect(
            client_id="k", protocol_level=5, properties=Properties(request_problem_information=0)
        ),
        MQTTSettings(),
    )
    assert limits.problem_info is False


def test_topic_aliases_are_not_carried_to_a_new_connection() -> None:
    """[MQTT-3.3.2-7]: an alias set on one connection is unknown on the next."""
    first, shell = make()
    shell.receive(Publish("a/b", b"1", 0, properties=Properties(topic_alias=1)))
    assert first.error is None
    second, shell = make()
    shell.receive(Publish("", b"2", 0, properties=Properties(topic_alias=1)))
    assert second.error is not None and second.error.code == ReasonCode.PROTOCOL_ERROR


def test_the_will_keeps_its_retain_flag() -> None:
    """5.0 [MQTT-3.1.2-14]/[MQTT-3.1.2-15], 3.1.1 [MQTT-3.1.2-16]/[MQTT-3.1.2-17]."""

    lost = Close(ReasonCode.UNSPECIFIED_ERROR, "lost", reply=False)
    for level in (4, 5):
        core, _ = make(level)
        for retain in (False, True):
            planned = core.will(Will("w", b"x", 1, retain), lost)
            assert planned is not None and planned[0].retain is retain


def test_a_shared_delivery_refused_by_the_client_is_not_given_to_another_member() -> None:
    """[MQTT-4.8.2-6]: a PUBACK >= 0x80 from a shared-group member finishes the
    message; it is not among what the member hands back when it leaves."""

    core, shell = make()
    shared = Source(SHARED, None, SubOptions(1), "$share/g/t", "g", "t")
    deliver(core, aged(1, 3600, 0), aged(2, 3600, 0), source=shared)
    first, _ = shell.sent()
    shell.receive(Puback(first.packet_id, ReasonCode.UNSPECIFIED_ERROR))
    assert [event.offset for event, _ in core.planner.unfinished(shared)] == [2]


def test_reason_strings_are_left_out_past_the_clients_maximum_packet_size() -> None:
    """[MQTT-3.4.2-2]/[MQTT-3.5.2-2] (acks), [MQTT-3.9.2-1] (SUBACK), [MQTT-3.14.2-3]
    (DISCONNECT): a Reason String that would make the packet too big is not sent."""

    core, shell = make()
    core.planner.max_packet = 16  # what the client's CONNECT announced
    (request,) = shell.receive(
        Publish("a", b"1", 1, packet_id=1), Publish("b", b"", 2, packet_id=2)
    )
    core.durable(request.meta, OSError("a long explanation of a refusal"))
    puback, pubrec = shell.sent()
    assert isinstance(puback, Puback) and isinstance(pubrec, Pubrec)
    assert puback.reason_code == pubrec.reason_code == ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR
    assert puback.properties.reason_string is None and pubrec.properties.reason_string is None
    suback = Suback(1, [ReasonCode.NOT_AUTHORIZED], Properties(reason_string="x" * 100))
    assert len(fitted(suback, 5, 16)) <= 16 and len(fitted(suback, 5, 1000)) > 100
    close = Close(ReasonCode.KEEP_ALIVE_TIMEOUT, "keep alive timeout, at length")
    (small,) = Decoder(5, role=Role.CLIENT).feed(close.final_packet(5, 16))
    assert small.reason_code == ReasonCode.KEEP_ALIVE_TIMEOUT
    assert small.properties.reason_string is None
    (full,) = Decoder(5, role=Role.CLIENT).feed(close.final_packet(5))
    assert full.properties.reason_string == "keep alive timeout, at length"
    # [MQTT-3.14.2-2]: the server's DISCONNECT carries no Session Expiry Interval
    assert full.properties.session_expiry_interval is None


def test_pingreq_is_answered_while_the_window_is_full() -> None:
    """[MQTT-3.3.4-10]/[MQTT-4.9.0-3]/[MQTT-3.12.4-1]: PINGRESP (and other control
    packets) go out while PUBLISHes wait for the client's Receive Maximum."""

    core, shell = make(window=1)
    deliver(core, aged(1, 3600, 0), aged(2, 3600, 0))
    (first,) = shell.sent()
    assert isinstance(first, Publish) and core.planner.ready
    shell.receive(Pingreq())
    assert [type(p) for p in shell.sent()] == [Pingresp]


@pytest.mark.parametrize("level", [4, 5])
def test_disconnect_with_reserved_flags_is_malformed(level: int) -> None:
    """[MQTT-3.14.1-1] (5.0 and 3.1.1)."""

    decoder = Decoder()
    decoder.feed(encode(Connect(client_id="c", protocol_level=level), level))
    with pytest.raises(MQTTProtocolError) as error:
        decoder.feed(b"\xe1\x00")
    assert error.value.reason_code == ReasonCode.MALFORMED_PACKET


def test_a_bom_in_a_topic_is_kept() -> None:
    """[MQTT-1.5.4-3]: 0xEF 0xBB 0xBF is U+FEFF and is not stripped."""
    decoder = Decoder()
    decoder.feed(encode(Connect(client_id="c", protocol_level=5), 5))
    (publish,) = decoder.feed(encode(Publish("\ufeffa/b", b"x"), 5))
    assert publish.topic == "\ufeffa/b"


def test_dup_of_a_forwarded_message_is_its_own() -> None:
    """[MQTT-3.3.1-3]: a PUBLISH received with DUP is forwarded without it."""
    core, shell = make()
    (request,) = shell.receive(Publish("t", b"x", 1, dup=True, packet_id=5))
    (stored,) = shell.commit(request)
    shell.sent()  # the PUBACK
    deliver(core, stored)
    (forwarded,) = shell.sent()
    assert isinstance(forwarded, Publish) and forwarded.dup is False


def test_one_suback_and_one_unsuback_with_a_code_per_filter_in_order(
    server: ServerThread,
) -> None:
    """[MQTT-3.8.4-1/5/6/7], [MQTT-3.9.3-1/2], [MQTT-2.2.1-6], [MQTT-3.10.4-1/4/5/6],
    [MQTT-3.11.3-1/2]: several filters in one packet are handled one by one and
    answered in one acknowledgement, a code per filter in their order."""

    client = RawClient(server.port, 5)
    client.connect("filters")
    filters = [Subscription("x/1", 0), Subscription("x/+", 2), Subscription("$share/g/x", 1)]
    client.send(Subscribe(7, filters))
    suback = client.expect(Suback)
    assert suback.packet_id == 7
    assert list(suback.reason_codes) == [
        ReasonCode.GRANTED_QOS_0,
        ReasonCode.GRANTED_QOS_2,
        ReasonCode.GRANTED_QOS_1,
    ]
    # matched character by character: "x/#" was never subscribed although it covers x/1
    client.send(Unsubscribe(8, ["x/#", "x/+", "$share/g/x", "x/+"]))
    unsuback = client.expect(Unsuback)
    assert unsuback.packet_id == 8
    assert list(unsuback.reason_codes) == [
        ReasonCode.NO_SUBSCRIPTION_EXISTED,
        ReasonCode.SUCCESS,
        ReasonCode.SUCCESS,
        ReasonCode.NO_SUBSCRIPTION_EXISTED,
    ]
    client.close()


async def test_a_text_websocket_message_closes_the_connection(server: ServerThread) -> None:
    """[MQTT-6.0.0-1]: MQTT goes in binary messages; a text one closes the connection
    (close code 1003), and the subprotocol selected is "mqtt" ([MQTT-6.0.0-4])."""

    port = server.ports("WebSocket")
    async with trio_websocket.open_websocket(
        "127.0.0.1", port, "/mqtt", use_ssl=False, subprotocols=["mqtt"]
    ) as ws:
        assert ws.subprotocol == "mqtt"
        await ws.send_message(encode(Connect(client_id="ws-text", protocol_level=4), 4))
        assert isinstance(Decoder(4, role=Role.CLIENT).feed(await ws.get_message())[0], Connack)
        await ws.send_message("\u00c0\u0000")  # a PINGREQ's bytes, as text
        with trio.fail_after(TIMEOUT), pytest.raises(trio_websocket.ConnectionClosed) as closed:
            await ws.get_message()
    assert closed.value.reason.code == 1003


@pytest.mark.parametrize(
    "bad", ["$share//t", "$share/a+/t", "$share/a#/t", "$share/g", "$share/g/"]
)
def test_a_malformed_shared_filter_is_refused(bad: str) -> None:
    """[MQTT-4.8.2-1]/[MQTT-4.8.2-2]: a ShareName of at least one character, without
    "/", "+" or "#", followed by "/" and a Topic Filter."""

    with pytest.raises(InvalidTopicError):
        parse_shared(bad)
    assert parse_shared("$share/g/a/+") == ("g", "a/+")


def test_a_qos1_identifier_acknowledged_is_a_new_message_next_time() -> None:
    """[MQTT-4.3.2-5]: after PUBACK, a PUBLISH with the same identifier (DUP or not)
    is a new message and is stored again."""
    _, shell = make()
    (first,) = shell.receive(Publish("t", b"1", 1, packet_id=9))
    shell.commit(first)
    assert [type(p) for p in shell.sent()] == [Puback]
    (again,) = shell.receive(Publish("t", b"2", 1, dup=True, packet_id=9))
    assert [e.payload for e in again.events] == [b"2"]


def test_a_shared_subscription_delivers_at_its_granted_qos() -> None:
    """[MQTT-4.8.2-3]."""

    core, shell = make()
    shared = Source(SHARED, None, SubOptions(0), "$share/g/t", "g", "t")
    deliver(core, aged(1, 3600, 0, qos=2), source=shared)
    (sent,) = shell.sent()
    assert sent.qos == 0 and not core.planner.outstanding


def test_matching_does_not_normalise_topics() -> None:
    """[MQTT-4.7.3-4]: "café" (one code point) and "cafe" + U+0301 are different."""

    composed, decomposed = "caf\u00e9", "cafe\u0301"
    assert compile_filter(composed)(composed) and not compile_filter(composed)(decomposed)
    assert not compile_filter(f"{decomposed}/+")(f"{composed}/x")


def test_retain_0_and_unsubscribe_leave_what_they_should(server: ServerThread) -> None:
    """3.1.1 [MQTT-3.3.1-12] / 5.0 [MQTT-3.3.1-8]: RETAIN 0 neither replaces nor
    removes the retained message; 3.1.1 [MQTT-3.3.1-7]: a QoS 0 retained message
    replaces the previous one; [MQTT-3.10.4-2]: nothing new after UNSUBSCRIBE. Each
    check waits for a later message on the same ordered path, never for a time."""

    publisher = RawClient(server.port, 4)
    publisher.connect("retainer")
    publisher.send(Publish("r/1", b"kept", 1, True, packet_id=1))
    publisher.expect(Puback)
    publisher.send(Publish("r/1", b"live", 1, False, packet_id=2))  # RETAIN 0
    publisher.expect(Puback)
    publisher.send(Publish("r/2", b"old", 1, True, packet_id=3))
    publisher.expect(Puback)
    publisher.send(Publish("r/2", b"new", 0, True))  # QoS 0 retained replaces it
    publisher.send(Publish("r/3", b"fence", 1, packet_id=4))  # ordered after the QoS 0
    publisher.expect(Puback)
    subscriber = RawClient(server.port, 4)
    subscriber.connect("watcher")
    subscriber.send(Subscribe(1, [Subscription("r/1", 1), Subscription("r/2", 1)]))
    subscriber.expect(Suback)
    retained = {p.topic: p.payload for p in (subscriber.expect(Publish) for _ in range(2))}
    assert retained == {"r/1": b"kept", "r/2": b"new"}
    subscriber.send(Unsubscribe(2, ["r/1"]))
    subscriber.expect(Unsuback)
    publisher.send(Publish("r/1", b"after", 1, packet_id=5))
    publisher.expect(Puback)
    publisher.send(Publish("r/2", b"still", 1, packet_id=6))
    publisher.expect(Puback)
    (after,) = [subscriber.expect(Publish)]
    assert (after.topic, after.payload) == ("r/2", b"still")  # not r/1, sent before it
    publisher.close()
    subscriber.close()


def test_a_second_connect_gets_no_second_connack(server: ServerThread) -> None:
    """[MQTT-3.2.0-2] (and [MQTT-3.1.0-2]): one CONNACK per connection; a second
    CONNECT is answered with DISCONNECT 0x82 and nothing else."""
    client = RawClient(server.port, 5)
    client.connect("twice")
    client.send(Connect(client_id="twice", protocol_level=5))
    assert client.expect(Disconnect).reason_code == ReasonCode.PROTOCOL_ERROR
    with pytest.raises(EOFError):
        client.receive()
    client.close()


def inflight_shared_qos2(server: ServerThread, share: str) -> tuple[RawClient, RawClient, int]:
    """A persistent member ("keeper") of ``share`` that took a QoS 2 message ("1")
    and went away before PUBREC, a second member ("other") that joined after, and
    the message's packet identifier. Returns once the server has saved the keeper's
    session."""
    keeper = RawClient(server.port, 5)
    expiry = Properties(session_expiry_interval=60)
    keeper.connect("keeper", clean=False, properties=expiry)
    keeper.send(Subscribe(1, [Subscription(share, 2)]))
    keeper.expect(Suback)
    publisher = RawClient(server.port, 5)
    publisher.connect("producer")
    publisher.send(Publish("jobs/a", b"1", 2, packet_id=1))
    publisher.expect(Pubrec)
    taken = keeper.expect(Publish)
    assert taken.payload == b"1" and taken.qos == 2 and taken.packet_id is not None
    other = RawClient(server.port, 5)
    other.connect("other")
    other.send(Subscribe(1, [Subscription(share, 2)]))
    other.expect(Suback)
    keeper.close()  # gone without PUBREC
    assert server.running is not None
    sessions = server.running.broker.sessions

    def saved() -> bool:
        session = sessions.get("keeper")
        return session is not None and session.disconnected_at is not None

    wait_for(lambda: server.call_sync(saved), what="the keeper's session saved")
    # a later message goes to the member left; the first one was not given back to
    # the group (it would come first: a member's unfinished messages are requeued
    # at the front of the group's feed)
    publisher.send(Publish("jobs/b", b"2", 2, packet_id=2))
    publisher.expect(Pubrec)
    assert other.expect(Publish).payload == b"2"
    publisher.close()
    return keeper, other, taken.packet_id


def test_a_shared_qos2_message_in_flight_is_completed_by_the_same_client(
    server: ServerThread,
) -> None:
    """[MQTT-4.8.2-4]: a QoS 2 message of a shared subscription that a persistent
    session's client took but did not acknowledge stays with that session and is
    sent again (DUP, same packet identifier) when the client reconnects."""
    _, other, packet_id = inflight_shared_qos2(server, "$share/g/jobs/+")
    back = RawClient(server.port, 5)
    ack = back.connect("keeper", clean=False, properties=Properties(session_expiry_interval=60))
    assert ack.session_present
    again = back.expect(Publish)
    assert (again.payload, again.dup, again.packet_id) == (b"1", True, packet_id)
    back.send(Pubrec(packet_id))
    assert back.expect(Pubrel).packet_id == packet_id
    back.send(Pubcomp(packet_id))
    back.close()
    other.close()


def test_a_shared_qos2_message_of_an_ended_session_goes_to_no_other_member(
    server: ServerThread,
) -> None:
    """[MQTT-4.8.2-5]: the session ends (Clean Start) before its client completes the
    message: no other member of the group gets it."""
    _, other, _ = inflight_shared_qos2(server, "$share/h/jobs/+")
    fresh = RawClient(server.port, 5)
    assert not fresh.connect("keeper", clean=True).session_present
    publisher = RawClient(server.port, 5)
    publisher.connect("producer-2")
    publisher.send(Publish("jobs/c", b"3", 2, packet_id=1))
    publisher.expect(Pubrec)
    assert other.expect(Publish).payload == b"3"  # not "1"
    for client in (fresh, publisher, other):
        client.close()


def test_the_stored_session_lists_shared_qos2_messages_in_flight() -> None:
    """What [MQTT-4.8.2-4] needs stored: a shared subscription's QoS 2 messages sent
    and not PUBRECed (QoS 1 ones may go to another member, a SHOULD)."""
    core, shell = make(persistent=True, session=Session("s", expiry_interval=60))
    two = Source(SHARED, None, SubOptions(2), "$share/g/t", "g", "t")
    one = Source(SHARED, None, SubOptions(1), "$share/g/u", "g", "u")
    deliver(core, aged(4, 3600, 0, qos=2), source=two)
    deliver(core, aged(5, 3600, 0, qos=1), source=one)
    first, _ = shell.sent()
    core.snapshot(0)
    stored = Inflight.from_json(core.session.inflight)
    assert stored.shared == {"$share/g/t": [(4, first.packet_id)]}
    assert Inflight.from_json(stored.to_json()).shared == stored.shared
    core.restore()
    assert core.shared_resume == {"$share/g/t": [(4, first.packet_id)]}
