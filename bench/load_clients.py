"""The load generator's publishers and subscribers (theory of operation in
``bench/mqtt_load.py``): PUBLISH packets encoded once per run
(:func:`encode_publishes`), sent in windows with every acknowledgement checked
(:class:`Publisher`), and received with every sequence number counted once
(:class:`Subscriber`)."""

from __future__ import annotations

import functools
import struct
import time

import attrs
import trio

from tidelog.concurrency import background_nursery
from tidelog.protocols.mqtt import (
    Disconnect,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    encode,
    encode_many,
)
from tidelog.testing.mqtt_client import (
    MAX_PACKET_ID,
    ClientConnection,
    LoadError,
    ack_table,
    disconnect_reason,
    encoded_ack,
)

HEADER = struct.Struct(">QQ")
"""Start of every payload: sequence number, send time (monotonic ns)."""
_U64 = struct.Struct(">Q")
CHUNK_BYTES = 262_144
"""At most this many bytes of PUBLISH packets per ``send_all``."""


@attrs.frozen(eq=False)
class EncodedPublishes:
    """``count`` PUBLISH packets of equal size back to back in ``buffer``.

    Packet ``i`` carries sequence number ``first_seq + i`` and packet identifier
    ``i % 65535 + 1`` (QoS 1/2); its send timestamp sits at
    ``i * packet_size + timestamp_at``.
    """

    buffer: bytearray
    count: int
    packet_size: int
    timestamp_at: int


@functools.lru_cache(maxsize=6)
def encode_publishes(
    topic: str, qos: int, count: int, payload_size: int, level: int, first_seq: int = 0
) -> EncodedPublishes:
    """Encode a run's PUBLISH packets once (cached: runs restamp the same buffer).

    The codec encodes two packets; the rest are copies of the first with the
    sequence number and packet identifier patched in (all packets of a run are
    the same size), so a million-message burst takes a second, not a minute.
    """
    padding = bytes(payload_size - HEADER.size)

    def packet(i: int) -> Publish:
        packet_id = i % MAX_PACKET_ID + 1 if qos else None
        return Publish(topic, HEADER.pack(first_seq + i, 0) + padding, qos=qos, packet_id=packet_id)

    first = encode_many([packet(0)], level)
    packet_size = len(first)
    payload_at = packet_size - payload_size
    id_at = payload_at - (3 if level >= 5 else 2)  # v5: a zero property length sits between
    if count <= 2:
        buffer = bytearray(encode_many([packet(i) for i in range(count)], level))
    else:
        buffer = bytearray(first) * count
        pack_seq = _U64.pack_into
        for i in range(1, count):
            at = i * packet_size
            pack_seq(buffer, at + payload_at, first_seq + i)
            if qos:
                buffer[at + id_at : at + id_at + 2] = (i % MAX_PACKET_ID + 1).to_bytes(2, "big")
        # the codec is the reference: the second packet must match what it encodes
        if buffer[packet_size : 2 * packet_size] != encode_many([packet(1)], level):
            raise AssertionError("patched PUBLISH differs from the codec's encoding")
    if len(buffer) != packet_size * count:
        raise AssertionError("PUBLISH packets of one run must all be the same size")
    return EncodedPublishes(buffer, count, packet_size, payload_at + 8)


class Publisher:
    """Sends one :class:`EncodedPublishes` over one connection and checks every ack."""

    def __init__(
        self,
        connection: ClientConnection,
        packets: EncodedPublishes,
        *,
        qos: int,
        window: int,
        rate: float | None,
        stamp: bool,
        stall_timeout: float,
    ) -> None:
        self.connection = connection
        self.packets = packets
        self.qos = qos
        self.window = max(1, min(window, connection.receive_maximum, MAX_PACKET_ID))
        self.rate = rate
        self.stamp = stamp
        self.stall_timeout = stall_timeout
        self.sent = 0
        self.accepted = 0
        self.refused = 0
        self.duplicated_acks = 0
        self.in_flight = 0
        self.first_send_ns = 0
        self.last_ack_ns = 0
        self.ack_latencies: list[int] = []
        self.errors: list[str] = []
        # per packet identifier: 0 free, 1 awaiting PUBACK/PUBREC, 2 awaiting PUBCOMP
        self._stage = bytearray(MAX_PACKET_ID + 1)
        self._sent_at = [0] * (MAX_PACKET_ID + 1)
        self._progress = trio.Event()
        self._pong = trio.Event()

    async def run(self) -> None:
        """Send everything, wait for every ack (or a stall), record what happened."""
        async with background_nursery() as nursery:
            nursery.start_soon(self._read)
            try:
                await self._write()
                if self.qos:
                    await self._drain()
                else:
                    await self._ping()
            except _Stalled as exc:
                self.errors.append(f"{self.connection.client_id}: {exc}")
            nursery.cancel_scope.cancel()

    async def _wait_for_progress(self, what: str) -> None:
        self._progress = trio.Event()
        with trio.move_on_after(self.stall_timeout):
            await self._progress.wait()
            return
        raise _Stalled(f"no {what} for {self.stall_timeout:g} s ({self.in_flight} in flight)")

    async def _write(self) -> None:
        packets = self.packets
        buffer = packets.buffer
        view = memoryview(buffer)
        size = packets.packet_size
        timestamp_at = packets.timestamp_at
        count = packets.count
        qos = self.qos
        window = self.window
        stamp = self.stamp
        chunk = max(1, CHUNK_BYTES // size)
        interval = 1e9 / self.rate if self.rate else 0.0
        stage = self._stage
        sent_at = self._sent_at
        pack_into = _U64.pack_into
        clock = time.monotonic_ns
        start = self.first_send_ns = clock()
        i = 0
        while i < count:
            take = min(count - i, chunk)
            if qos:
                free = window - self.in_flight
                if free <= 0:
                    await self._wait_for_progress("acknowledgement")
                    continue
                take = min(take, free)
            if interval:
                due = int((clock() - start) / interval) + 1 - i
                if due <= 0:
                    await trio.sleep(max(0.0, (start + i * interval - clock()) / 1e9))
                    continue
                take = min(take, due)
            now = clock()
            end = i + take
            if stamp:
                for k in range(i, end):
                    pack_into(buffer, k * size + timestamp_at, now)
            if qos:
                for k in range(i, end):
                    packet_id = k % MAX_PACKET_ID + 1
                    stage[packet_id] = 1
                    sent_at[packet_id] = now
                self.in_flight += take
            with trio.move_on_after(self.stall_timeout) as scope:
                await self.connection.send(view[i * size : end * size])
            if scope.cancelled_caught:
                raise _Stalled(f"the broker read nothing for {self.stall_timeout:g} s")
            i = self.sent = end

    async def _drain(self) -> None:
        while self.in_flight:
            await self._wait_for_progress("acknowledgement")

    async def _ping(self) -> None:
        await self.connection.send(encode(Pingreq(), self.connection.level))
        with trio.move_on_after(self.stall_timeout):
            await self._pong.wait()
            self.accepted = self.sent
            return
        raise _Stalled(f"no PINGRESP for {self.stall_timeout:g} s after the last PUBLISH")

    async def _read(self) -> None:
        connection = self.connection
        level = connection.level
        stage = self._stage
        sent_at = self._sent_at
        latencies = self.ack_latencies
        final: type[Puback | Pubcomp] = Pubcomp if self.qos == 2 else Puback
        final_stage = 2 if self.qos == 2 else 1
        clock = time.monotonic_ns
        while True:
            packets = await connection.receive_packets()
            now = clock()
            done = 0
            replies: list[bytes] = []
            for packet in packets:
                if isinstance(packet, final):
                    packet_id = packet.packet_id
                    if stage[packet_id] != final_stage:
                        self.duplicated_acks += 1
                        continue
                    stage[packet_id] = 0
                    done += 1
                    latencies.append(now - sent_at[packet_id])
                    if packet.reason_code >= 0x80:
                        self.refused += 1
                    else:
                        self.accepted += 1
                elif isinstance(packet, Pubrec):
                    packet_id = packet.packet_id
                    if stage[packet_id] != 1:
                        self.duplicated_acks += 1
                        continue
                    if packet.reason_code >= 0x80:
                        stage[packet_id] = 0  # refused: the exchange ends here (§4.3.3)
                        done += 1
                        self.refused += 1
                        continue
                    stage[packet_id] = 2
                    replies.append(encoded_ack(Pubrel, packet_id, level))
                elif isinstance(packet, Pingresp):
                    self.last_ack_ns = now
                    self._pong.set()
                elif isinstance(packet, Disconnect):
                    raise LoadError(
                        f"{connection.client_id}: broker sent DISCONNECT "
                        + disconnect_reason(packet)
                    )
                else:
                    self.errors.append(
                        f"{connection.client_id}: unexpected {type(packet).__name__}"
                    )
            if done:
                self.in_flight -= done
                self.last_ack_ns = now
            if done or replies:
                self._progress.set()
            if replies:
                await connection.send(b"".join(replies))


class _Stalled(Exception):
    pass


# -- subscribing ----------------------------------------------------------------


class Subscriber:
    """Receives, acknowledges and checks deliveries of sequence numbers 0..expected-1.

    With ``read_rate`` set it reads (and acknowledges) at most that many
    messages per second on average, in small reads, until ``read_rate`` is set
    to None; then as fast as it can.
    """

    SLOW_READ_SIZE = 4096
    """Bytes per socket read while pacing."""

    def __init__(
        self, connection: ClientConnection, expected: int, *, read_rate: float | None = None
    ) -> None:
        self.connection = connection
        self.expected = expected
        self.read_rate = read_rate
        self.delivered = 0
        self.duplicated = 0
        self.last_delivery_ns = 0
        self.latencies: list[int] = []
        self.errors: list[str] = []
        self._seen = bytearray(expected)

    @property
    def complete(self) -> bool:
        return self.delivered >= self.expected

    async def run(self) -> None:
        """Receive until cancelled."""
        connection = self.connection
        level = connection.level
        seen = self._seen
        expected = self.expected
        latencies = self.latencies
        unpack = HEADER.unpack_from
        pubacks = ack_table(Puback, level)
        awaiting_pubrel: set[int] = set()
        clock = time.monotonic_ns
        paced_from = clock()
        while True:
            if self.read_rate:
                wait_ns = paced_from + int(self.delivered * 1e9 / self.read_rate) - clock()
                if wait_ns > 0:
                    await trio.sleep(wait_ns / 1e9)
                    continue
                packets = await connection.receive_packets(self.SLOW_READ_SIZE)
            else:
                packets = await connection.receive_packets()
            now = clock()
            replies: list[bytes] = []
            delivered = self.delivered
            for packet in packets:
                if isinstance(packet, Publish):
                    packet_id = packet.packet_id
                    if packet_id is not None:  # QoS 1 or 2
                        if packet.qos == 1:
                            replies.append(
                                pubacks.get(packet_id) or encoded_ack(Puback, packet_id, level)
                            )
                        else:
                            replies.append(encoded_ack(Pubrec, packet_id, level))
                            if packet_id in awaiting_pubrel:
                                continue  # a resend of a QoS 2 message not yet released
                            awaiting_pubrel.add(packet_id)
                    try:
                        seq, sent_ns = unpack(packet.payload)
                    except struct.error:
                        seq, sent_ns = expected, 0
                    if seq >= expected:
                        self.errors.append(f"{packet.topic}: a payload not from this run")
                    elif seen[seq]:
                        self.duplicated += 1
                    else:
                        seen[seq] = 1
                        delivered += 1
                        latencies.append(now - sent_ns)
                elif isinstance(packet, Pubrel):
                    awaiting_pubrel.discard(packet.packet_id)
                    replies.append(encoded_ack(Pubcomp, packet.packet_id, level))
                elif isinstance(packet, Disconnect):
                    raise LoadError(
                        f"{connection.client_id}: broker sent DISCONNECT "
                        + disconnect_reason(packet)
                    )
                else:
                    self.errors.append(
                        f"{connection.client_id}: unexpected {type(packet).__name__}"
                    )
            if delivered != self.delivered:
                self.delivered = delivered
                self.last_delivery_ns = now
            if replies:
                await connection.send(b"".join(replies))
