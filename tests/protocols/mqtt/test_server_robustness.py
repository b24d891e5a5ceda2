"""Bad input over real sockets: each case gets the reply the spec requires (or a closed
connection), and a fresh client still works afterwards."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable

import pytest

from tests.protocols.mqtt.helpers import connect, packet, props, string, u16
from tests.protocols.mqtt.server_helpers import (
    Client,
    RawClient,
    ServerThread,
    raw_connection,
    read_until_closed,
)
from tidelog.protocols.mqtt import Connack, Decoder, Disconnect, ReasonCode, Role

CONNECT_5 = connect(5, client_id="bad")
CONNECT_4 = connect(4, client_id="bad")


def fresh_client_works(server: ServerThread) -> None:
    client = Client(server.port)
    try:
        client.subscribe("health", 1)
        client.publish("health", b"ok", 1)
        assert client.receive()[0].payload == b"ok"
    finally:
        client.disconnect()


def answer(server: ServerThread, *chunks: bytes, level: int = 5) -> list[object]:
    """Send raw chunks, return the packets the server sent before closing."""
    sock = raw_connection(server.port)
    try:
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        data = read_until_closed(sock)
    finally:
        sock.close()
    decoder = Decoder(level, role=Role.CLIENT)
    return list(decoder.feed(data)) if data else []


def disconnect_code(packets: list[object]) -> ReasonCode:
    assert isinstance(packets[-1], Disconnect), packets
    return packets[-1].reason_code


# (name, bytes after a v5 CONNECT, DISCONNECT reason code expected)
V5_CASES = [
    ("publish-qos-3", packet(0x36, string("t"), u16(1), b"\x00"), ReasonCode.MALFORMED_PACKET),
    ("subscribe-flags", packet(0x80, u16(1), b"\x00", string("t"), b"\x00"), 0x81),
    ("bad-utf8-topic", packet(0x30, string(b"\xff\xfe"), b"\x00"), ReasonCode.MALFORMED_PACKET),
    ("nul-in-topic", packet(0x30, string("a\x00b"), b"\x00"), ReasonCode.MALFORMED_PACKET),
    ("wildcard-topic", packet(0x30, string("a/#"), b"\x00"), ReasonCode.TOPIC_NAME_INVALID),
    ("second-connect", CONNECT_5, ReasonCode.PROTOCOL_ERROR),
    ("remaining-length-5-bytes", b"\x30\xff\xff\xff\xff\x01", ReasonCode.MALFORMED_PACKET),
    (
        "duplicate-property",
        packet(0x30, string("t"), props(b"\x01\x00", b"\x01\x01")),
        ReasonCode.PROTOCOL_ERROR,
    ),
    ("packet-id-0", packet(0x32, string("t"), u16(0), b"\x00"), ReasonCode.PROTOCOL_ERROR),
    ("subscribe-no-filter", packet(0x82, u16(1), b"\x00"), ReasonCode.PROTOCOL_ERROR),
    ("bad-filter", packet(0x82, u16(1), b"\x00", string("a/#/b"), b"\x00"), 0x8F),
    ("reserved-type-0", b"\x00\x00", ReasonCode.MALFORMED_PACKET),
    ("pingreq-with-body", packet(0xC0, b"\x00"), ReasonCode.MALFORMED_PACKET),
    ("oversized", b"\x30\xff\xff\xff\x7f", ReasonCode.PACKET_TOO_LARGE),
]


@pytest.mark.parametrize(("name", "data", "code"), V5_CASES, ids=[c[0] for c in V5_CASES])
def test_malformed_v5_packets_get_disconnect_with_reason(
    server: ServerThread, name: str, data: bytes, code: int
) -> None:
    packets = answer(server, CONNECT_5, data)
    assert isinstance(packets[0], Connack)
    assert disconnect_code(packets) == code
    fresh_client_works(server)


@pytest.mark.parametrize(("name", "data", "code"), V5_CASES, ids=[c[0] for c in V5_CASES])
def test_malformed_311_packets_close_the_connection(
    server: ServerThread, name: str, data: bytes, code: int
) -> None:
    if name in ("duplicate-property", "bad-filter"):
        return  # no properties in 3.1.1; a bad filter there is a SUBACK failure, not a close
    packets = answer(server, CONNECT_4, data, level=4)
    assert isinstance(packets[0], Connack)
    assert len(packets) == 1  # no DISCONNECT in 3.x: the connection is just closed
    fresh_client_works(server)


@pytest.mark.parametrize(
    "first",
    [
        pytest.param(b"\xc0\x00", id="pingreq"),
        pytest.param(packet(0x30, string("t"), b"x"), id="publish"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http"),
        pytest.param(b"\xff" + random.Random(4).randbytes(63), id="random"),
    ],
)
def test_first_packet_not_connect_closes(server: ServerThread, first: bytes) -> None:
    assert answer(server, first) == []
    fresh_client_works(server)


def test_connect_refusals(server: ServerThread) -> None:
    unsupported = answer(server, connect(6, name="MQTT"))
    assert isinstance(unsupported[0], Connack)
    assert unsupported[0].reason_code == ReasonCode.UNSUPPORTED_PROTOCOL_VERSION
    sock = raw_connection(server.port)
    sock.sendall(connect(4, client_id="", flags=0x00))  # empty id without clean session
    assert read_until_closed(sock) == b"\x20\x02\x00\x02"  # identifier rejected
    sock.close()
    sock = raw_connection(server.port)
    sock.sendall(connect(4, name="MQTT", flags=0x03))  # reserved flag set
    assert read_until_closed(sock) == b""
    sock.close()
    fresh_client_works(server)


def test_partial_packets_and_early_close(server: ServerThread) -> None:
    data = CONNECT_4 + packet(0x30, string("health"), b"partial")
    for cut in (1, 5, len(CONNECT_4) + 3):
        sock = raw_connection(server.port)
        sock.sendall(data[:cut])
        sock.shutdown(socket.SHUT_WR)
        read_until_closed(sock)
        sock.close()
    fresh_client_works(server)


def test_byte_by_byte_delivery_works(server: ServerThread) -> None:
    sock = raw_connection(server.port)
    for byte in CONNECT_4 + packet(0xC0):
        sock.sendall(bytes((byte,)))
    sock.settimeout(5)
    received = b""
    while len(received) < 6:
        received += sock.recv(100)
    assert received == b"\x20\x02\x00\x00\xd0\x00"
    sock.close()


def test_no_connect_within_the_timeout(make_server: Callable[..., ServerThread]) -> None:
    server = make_server(connect_timeout=0.3)
    sock = raw_connection(server.port)
    started = time.monotonic()
    assert read_until_closed(sock) == b""
    assert time.monotonic() - started < 3
    sock.close()
    fresh_client_works(server)


def test_a_bad_client_does_not_affect_others(server: ServerThread) -> None:
    watcher = Client(server.port)
    try:
        watcher.subscribe("#", 1)
        bad = RawClient(server.port, 5)
        bad.connect("bad-one")
        bad.send_raw(b"\x00" + random.Random(7).randbytes(31))  # type 0 is reserved
        assert bad.closed()
        fresh_client_works(server)
        assert watcher.receive()[0].payload == b"ok"
    finally:
        watcher.disconnect()
