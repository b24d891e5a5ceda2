"""A closing connection's final DISCONNECT reaches the client even when the close
cuts the writer in the middle of a send (§4.13: a reason code must reach the
client before the connection closes).

Over real sockets: a subscriber that does not read (a small receive buffer)
leaves the server's writer blocked halfway through a batch of PUBLISHes; a
second connection with the same client id then takes the session over, which
cancels the first connection's writer mid-send. The subscriber must still read
whole packets only, ending with DISCONNECT 0x8E (Session taken over).
"""

from __future__ import annotations

import socket
from itertools import accumulate

from tests.protocols.mqtt.server_helpers import (
    TIMEOUT,
    Client,
    ServerThread,
    clients,
    connection_of,
    read_until_closed,
    wait_for,
)
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
    encode_many,
)
from tidelog.protocols.mqtt.outbound import publish_chunks
from tidelog.protocols.mqtt.reason_codes import ReasonCode
from tidelog.protocols.mqtt.wire import rest_of_packet

PAYLOAD = b"p" * 32_768
MESSAGES = 300  # 9.8 MB: more than the socket buffers on both sides hold


def _connect(port: int, client_id: str, *, receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:  # before connect: the window is set at the handshake
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", port))
    sock.sendall(encode_many([Connect(client_id, 5, True, 60)], 5))
    return sock


def _receive(sock: socket.socket, decoder: Decoder) -> object:
    while True:
        data = sock.recv(65_536)
        assert data, "closed before the expected packet"
        packets = decoder.feed(data)
        if packets:
            assert len(packets) == 1, packets
            return packets[0]


def test_takeover_mid_send_still_ends_with_whole_packets_and_disconnect(
    server: ServerThread,
) -> None:
    slow = _connect(server.port, "slow-reader", receive_buffer=4096)
    newer: socket.socket | None = None
    try:
        decoder = Decoder(5, role=Role.CLIENT)
        assert isinstance(_receive(slow, decoder), Connack)
        slow.sendall(encode_many([Subscribe(1, [Subscription("bulk/#", 0)])], 5))
        assert isinstance(_receive(slow, decoder), Suback)
        connection = connection_of(server, "slow-reader")
        with clients(Client(server.port)) as (publisher,):
            for number in range(MESSAGES):
                publisher.publish(f"bulk/{number % 4}", PAYLOAD, 0)

            def writer_blocked() -> bool:
                sender = connection.sender
                return sender is not None and server.call_sync(lambda: sender.sending)

            wait_for(writer_blocked, what="the writer blocked in a send")
            newer = _connect(server.port, "slow-reader")  # takes the session over
            wait_for(
                lambda: server.call_sync(lambda: connection._close is not None),
                what="the takeover to stop the older connection",
            )
            # Only now read: the close cancelled the writer halfway through its send
            data = read_until_closed(slow)
        packets = decoder.feed(data)
        assert decoder.buffered == 0, "the server closed in the middle of a packet"
        assert all(isinstance(packet, Publish) for packet in packets[:-1])
        final = packets[-1]
        assert isinstance(final, Disconnect)
        assert final.reason_code == ReasonCode.SESSION_TAKEN_OVER
        assert isinstance(_receive(newer, Decoder(5, role=Role.CLIENT)), Connack)
    finally:
        slow.close()
        if newer is not None:
            newer.close()


def test_rest_of_packet_completes_the_packet_a_send_was_cut_in() -> None:
    """What a writer cut mid-send sends before a final packet: for every cut point of
    a buffer of PUBLISHes (headers and payloads in separate chunks, as the planner
    makes them, one of them with a 2-byte Remaining Length) and a PUBACK, the bytes
    sent plus ``rest_of_packet`` are whole packets."""
    packets = [
        publish_chunks(b"\x00\x03a/b", b"x" * 300, 1, False, False, 7, b""),
        [encode(Puback(9), 4)],
        publish_chunks(b"\x00\x01c", b"yz", 0, True, False, 0, b""),
    ]
    data = b"".join(chunk for packet in packets for chunk in packet)
    ends = list(accumulate(len(b"".join(packet)) for packet in packets))
    assert len(Decoder(4, role=Role.CLIENT).feed(data)) == 3
    boundaries = set()
    for sent in range(len(data) + 1):
        rest = rest_of_packet(data, sent)
        decoder = Decoder(4, role=Role.CLIENT)
        decoder.feed(data[:sent] + rest)
        assert decoder.buffered == 0, sent
        if not rest:
            boundaries.add(sent)
    assert boundaries == {0, *ends}


def test_a_cut_in_the_acknowledgements_still_sends_all_of_them() -> None:
    """The writer puts the control packets (acknowledgements) before the PUBLISHes: a
    cut anywhere in them completes every one (``keep``: their end), not only the cut
    one; a cut in the PUBLISHes completes only the cut packet."""
    control = [encode(Puback(n), 4) for n in (1, 2, 3)]
    control_end = len(b"".join(control))
    publish = b"".join(publish_chunks(b"\x00\x03a/b", b"x" * 200, 1, False, False, 7, b""))
    data = b"".join(control) + publish
    for sent in range(len(data) + 1):
        rest = rest_of_packet(data, sent, control_end)
        decoder = Decoder(4, role=Role.CLIENT)
        packets = decoder.feed(data[:sent] + rest)
        assert decoder.buffered == 0, sent
        if sent <= control_end:
            assert [p for p in packets if isinstance(p, Puback)] == [
                Puback(1),
                Puback(2),
                Puback(3),
            ]
            assert rest == data[sent:control_end]
        else:
            assert sent + len(rest) in (control_end, len(data))
