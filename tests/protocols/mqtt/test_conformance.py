"""Tests for statements of the MQTT 5.0 / 3.1.1 specifications that the conformance
matrix (docs/mqtt-conformance.md) found without a test: the keep-alive cap, message
expiry wherever a copy waits, and the graceful close after a final CONNACK or
DISCONNECT. The sans-IO session is driven directly where the wire does not matter."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable

import pytest

from tests.protocols.mqtt.server_helpers import (
    TIMEOUT,
    RawClient,
    ServerThread,
    raw_connection,
    wait_for,
)
from tests.protocols.mqtt.test_session_core import deliver, make
from tidelog.protocols.mqtt import (
    Connack,
    Connect,
    Decoder,
    Disconnect,
    Puback,
    Publish,
    Role,
    Suback,
    Subscribe,
    Subscription,
    encode,
)
from tidelog.protocols.mqtt.admission import Limits, connack, negotiate
from tidelog.protocols.mqtt.planner import RETAINED, Source
from tidelog.protocols.mqtt.properties import Properties
from tidelog.protocols.mqtt.reason_codes import ReasonCode
from tidelog.protocols.mqtt.settings import MQTTSettings
from tidelog.storage import Event
from tidelog.storage import Properties as EventProperties
from tidelog.traffic import traffic

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
    from tidelog.engine.sessions import Session
    from tidelog.protocols.mqtt.stored_session import Inflight

    session = Session("s", expiry_interval=60)
    session.inflight = Inflight(out={7: (3, 2)}, sent_end=8).to_json()
    core, shell = make(persistent=True, session=session)
    core.restore()
    deliver(core, aged(7, 1, 30, qos=2), qos=2)
    (resent,) = shell.sent()
    assert resent.dup and resent.packet_id == 3


# -- the final packet reaches the client before the connection closes -----------------


def read_final(sock: socket.socket) -> bytes:
    """What the server sent until it closed; a reset ends it too (what was read stays)."""
    sock.settimeout(TIMEOUT)
    data = b""
    while True:
        try:
            chunk = sock.recv(65_536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def send_then_read(sock: socket.socket, trigger: bytes) -> bytes:
    """Send ``trigger`` and 2 MiB of PINGREQs behind it without reading (the client is
    busy sending while the server answers and closes), then read what came back."""
    sock.settimeout(TIMEOUT)
    with contextlib.suppress(OSError):  # the server may have closed already
        sock.sendall(trigger + FLOOD)
        sock.shutdown(socket.SHUT_WR)  # done sending: the server's drain ends here
    return read_final(sock)


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
    counters = traffic(server.running.broker)
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
