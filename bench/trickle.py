"""The ``trickle`` scenarios: thousands of MQTT connections, each publishing now and then.

This is the workload of issue 12 (many devices, each sending a message now and
then): ``connections`` publishers each send one QoS 1 PUBLISH every
``1 / rate`` seconds, at a random phase of their own, and ``subscribers``
connections subscribed to a ``+`` wildcard over every publisher's topic must
receive every message once.

Why not :class:`bench.load_clients.Publisher`: a trio task or two per connection
costs the load generator about what it costs the broker, and 10,000 of them
would measure the client. Here one thread drives every connection with one
epoll selector (:mod:`selectors`): a schedule of due sends sorted by phase, a
``select`` until the next one is due, and the readable sockets handled in
between. Connections are opened in waves (:data:`OPEN_WAVE` CONNECTs sent,
then their CONNACKs read), so opening 10,000 is one round trip per wave. The
thread runs under ``trio.to_thread.run_sync``, so runners measuring several
brokers at once (``mqtt_compare --quick``) keep working.

Checks are those of :mod:`bench.mqtt_load`: payloads start with the sequence
number and the send time (``>QQ``, :func:`time.monotonic_ns`, one process so
one clock); a subscriber keeps one byte per sequence number (missing: lost,
second copy: duplicated), a publisher checks each PUBACK against the packet
identifiers in flight (an ack for nothing in flight counts as duplicated). The
run ends when everything is acknowledged and delivered, or when nothing moved
for ``stall`` seconds after the last send.

The process needs a file descriptor per connection: runners raise
RLIMIT_NOFILE to the hard limit (:func:`bench.process_stats.raise_fd_limit`) and
report it; a run asking for more connections than the limit allows fails with
a clear error before connecting.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import resource
import selectors
import socket
import time

import attrs
import trio

from bench.load_clients import HEADER
from bench.load_results import Latency, ScenarioResult
from bench.load_scenarios import Scenario
from bench.process_stats import RssSampler, process_cpu_seconds
from tidelog.protocols.mqtt import (
    Connack,
    Connect,
    Decoder,
    Disconnect,
    MQTTProtocolError,
    PacketType,
    Puback,
    Publish,
    Role,
    Suback,
    Subscribe,
    Subscription,
    encode,
    reason_code_name,
)
from tidelog.testing.mqtt_client import LoadError, Target

OPEN_WAVE = 500
"""Connections whose CONNECT is sent before their CONNACKs are read."""
FD_RESERVE = 64
"""File descriptors kept free for everything else the process opens."""
READ_SIZE = 65_536
MAX_PACKET_ID = 65_535


@attrs.frozen
class TrickleShape:
    """One trickle run: who connects and how often each publishes."""

    connections: int
    """Publishing connections."""
    messages: int
    """Messages per publishing connection (the run lasts about ``messages / rate`` s)."""
    rate: float
    """Messages per second per publishing connection."""
    subscribers: int = 1
    payload_size: int = 64
    level: int = 4
    seed: int = 12


class _Conn:
    """One client connection of the driver."""

    __slots__ = ("decoder", "index", "out", "sock", "template")

    def __init__(self, sock: socket.socket, index: int, level: int) -> None:
        self.sock = sock
        self.index = index
        self.decoder = Decoder(level, role=Role.CLIENT)
        self.out = b""
        """Bytes the socket did not take yet."""
        self.template: bytes = b""
        """Publishers: their PUBLISH, encoded once; sequence, time and packet id patched in."""


class TrickleDriver:
    """Opens the connections, runs the schedule, checks what comes back (one thread)."""

    def __init__(self, target: Target, shape: TrickleShape, tag: str, stall: float) -> None:
        self.target = target
        self.shape = shape
        self.tag = tag
        self.stall_ns = int(stall * 1e9)
        self.total = shape.connections * shape.messages
        self.topic_base = f"tidelog-bench/{tag}"
        self.selector = selectors.DefaultSelector()  # epoll on Linux
        self.publishers: list[_Conn] = []
        self.subscribers: list[_Conn] = []
        self.errors: list[str] = []
        # publishing side
        self.sent = 0
        self.accepted = 0
        self.refused = 0
        self.duplicated_acks = 0
        self.in_flight: dict[int, int] = {}
        """(publisher index << 16 | packet id) -> send time."""
        self.ack_latencies: list[int] = []
        self.first_send_ns = 0
        self.last_ack_ns = 0
        self.max_lag_ns = 0
        """Latest a send left after its due time (the driver keeping up, or not)."""
        # subscribing side
        self.seen = bytearray(self.total)
        self.delivered = 0
        self.duplicated = 0
        self.latencies: list[int] = []
        self.last_delivery_ns = 0
        self._last_progress = 0
        self._puback = [b""] * (MAX_PACKET_ID + 1)

    # -- opening ---------------------------------------------------------------------

    def _connect(self, client_id: str, index: int) -> _Conn:
        sock = socket.create_connection((self.target.host, self.target.port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(sock, index, self.shape.level)
        sock.sendall(encode(Connect(client_id, protocol_level=self.shape.level), self.shape.level))
        return conn

    def _expect(self, conn: _Conn, cls: type, what: str) -> object:
        """Blocking read of the next packet, which must be a ``cls``."""
        while True:
            data = conn.sock.recv(READ_SIZE)
            if not data:
                raise LoadError(f"{what}: the broker closed the connection")
            packets = conn.decoder.feed(data)
            if packets:
                if len(packets) > 1 or not isinstance(packets[0], cls):
                    raise LoadError(f"{what}: expected {cls.__name__}, got {packets}")
                return packets[0]

    def open(self) -> None:
        """Subscribers first (subscribed before anything is published), then the publishers
        in waves of :data:`OPEN_WAVE`; every socket ends non-blocking and registered."""
        shape = self.shape
        level = shape.level
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if shape.connections + shape.subscribers + FD_RESERVE > soft:
            raise LoadError(
                f"{shape.connections + shape.subscribers} connections need more file "
                f"descriptors than RLIMIT_NOFILE allows ({soft}; raise the hard limit)"
            )
        for s in range(shape.subscribers):
            what = f"{self.tag}-sub{s}"
            conn = self._connect(what, s)
            self._check_connack(self._expect(conn, Connack, what), what)
            conn.sock.sendall(
                encode(Subscribe(1, [Subscription(f"{self.topic_base}/+", 1)]), level)
            )
            suback = self._expect(conn, Suback, what)
            assert isinstance(suback, Suback)
            if suback.reason_codes[0] != 1:
                raise LoadError(f"{what}: SUBSCRIBE granted {suback.reason_codes[0]:#x}, not 1")
            self.subscribers.append(conn)
        padding = bytes(shape.payload_size - HEADER.size)
        for first in range(0, shape.connections, OPEN_WAVE):
            wave = []
            for i in range(first, min(shape.connections, first + OPEN_WAVE)):
                wave.append(self._connect(f"{self.tag}-pub{i}", i))
            for conn in wave:
                what = f"{self.tag}-pub{conn.index}"
                self._check_connack(self._expect(conn, Connack, what), what)
                topic = f"{self.topic_base}/{conn.index}"
                conn.template = encode(
                    Publish(topic, HEADER.pack(0, 0) + padding, qos=1, packet_id=1), level
                )
                self.publishers.append(conn)
        for conn in (*self.subscribers, *self.publishers):
            conn.sock.setblocking(False)
            self.selector.register(conn.sock, selectors.EVENT_READ, conn)

    def _check_connack(self, packet: object, what: str) -> None:
        assert isinstance(packet, Connack)
        if packet.reason_code >= 0x80 or (self.shape.level < 5 and packet.reason_code):
            name = reason_code_name(packet.reason_code, PacketType.CONNACK)
            raise LoadError(f"{what}: CONNACK refused: {name}")

    # -- running ---------------------------------------------------------------------

    def run(self) -> None:
        """Send on schedule until every message went out, then wait for the rest."""
        shape = self.shape
        rng = random.Random(shape.seed)
        period = int(1e9 / shape.rate)
        phases = [rng.randrange(period) for _ in range(shape.connections)]
        order = sorted(range(shape.connections), key=phases.__getitem__)
        sorted_phases = [phases[i] for i in order]
        n = shape.connections
        total = self.total
        size = shape.payload_size
        level = shape.level
        id_at_back = size + (3 if level >= 5 else 2)  # packet id, from the end
        clock = time.monotonic_ns
        select = self.selector.select
        publishers = self.publishers
        pack_header = HEADER.pack_into
        in_flight = self.in_flight
        start = self.first_send_ns = clock() + 50_000_000
        self._last_progress = start
        position = 0
        while True:
            now = clock()
            while position < total:
                rnd, slot = divmod(position, n)
                due = start + rnd * period + sorted_phases[slot]
                if due > now:
                    break
                index = order[slot]
                conn = publishers[index]
                packet_id = rnd % MAX_PACKET_ID + 1
                packet = bytearray(conn.template)
                at = len(packet) - id_at_back
                packet[at : at + 2] = packet_id.to_bytes(2, "big")
                sent_at = clock()
                pack_header(packet, len(packet) - size, index * shape.messages + rnd, sent_at)
                key = index << 16 | packet_id
                if key in in_flight:
                    self.errors.append(f"publisher {index}: packet id {packet_id} still in flight")
                in_flight[key] = sent_at
                self._send(conn, packet)
                self.max_lag_ns = max(self.max_lag_ns, sent_at - due)
                position += 1
            self.sent = position
            if position < total:
                rnd, slot = divmod(position, n)
                timeout = max(0.0, (start + rnd * period + sorted_phases[slot] - now) / 1e9)
            else:
                if not in_flight and self.delivered >= total * len(self.subscribers):
                    return
                if now - self._last_progress > self.stall_ns:
                    self.errors.append(
                        f"stalled: nothing acknowledged or delivered for {self.stall_ns / 1e9:g} s "
                        f"({len(in_flight)} in flight)"
                    )
                    return
                timeout = 0.05
            for key, mask in select(timeout):
                conn = key.data
                if mask & selectors.EVENT_WRITE:
                    self._flush(conn)
                if mask & selectors.EVENT_READ:
                    self._read(conn)

    def _send(self, conn: _Conn, data: bytes | bytearray) -> None:
        if conn.out:
            conn.out += data
            return
        try:
            sent = conn.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise LoadError(f"connection {conn.index}: send failed: {exc}") from exc
        if sent < len(data):
            conn.out = bytes(data[sent:])
            self.selector.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)

    def _flush(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except BlockingIOError:
            return
        except OSError as exc:
            raise LoadError(f"connection {conn.index}: send failed: {exc}") from exc
        conn.out = conn.out[sent:]
        if not conn.out:
            self.selector.modify(conn.sock, selectors.EVENT_READ, conn)

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            raise LoadError(f"connection {conn.index}: {exc}") from exc
        if not data:
            raise LoadError(f"connection {conn.index}: the broker closed the connection")
        now = time.monotonic_ns()
        if conn.template:
            if len(data) == 4 and data[0] == 0x40 and data[1] == 2 and not conn.decoder.buffered:
                self._acked(conn.index, data[2] << 8 | data[3], 0, now)  # the common case
                return
            for packet in self._decode(conn, data):
                if isinstance(packet, Puback):
                    self._acked(conn.index, packet.packet_id, packet.reason_code, now)
                else:
                    self._unexpected(conn, packet)
            return
        self._deliver(conn, data, now)

    def _decode(self, conn: _Conn, data: bytes) -> list[object]:
        try:
            packets: list[object] = list(conn.decoder.feed(data))
        except MQTTProtocolError as exc:
            raise LoadError(f"connection {conn.index}: bad packet from the broker: {exc}") from exc
        return packets

    def _unexpected(self, conn: _Conn, packet: object) -> None:
        if isinstance(packet, Disconnect):
            raise LoadError(f"connection {conn.index}: the broker sent DISCONNECT {packet}")
        self.errors.append(f"connection {conn.index}: unexpected {type(packet).__name__}")

    def _acked(self, index: int, packet_id: int, reason_code: int, now: int) -> None:
        sent_at = self.in_flight.pop(index << 16 | packet_id, None)
        if sent_at is None:
            self.duplicated_acks += 1
            return
        self.ack_latencies.append(now - sent_at)
        if reason_code >= 0x80:
            self.refused += 1
        else:
            self.accepted += 1
        self.last_ack_ns = self._last_progress = now

    def _deliver(self, conn: _Conn, data: bytes, now: int) -> None:
        seen = self.seen
        total = self.total
        replies = []
        delivered = 0
        pubacks = self._puback
        level = self.shape.level
        for packet in self._decode(conn, data):
            if not isinstance(packet, Publish):
                self._unexpected(conn, packet)
                continue
            packet_id = packet.packet_id
            if packet_id is not None:
                ack = pubacks[packet_id] or encode(Puback(packet_id), level)
                pubacks[packet_id] = ack
                replies.append(ack)
            seq, sent_ns = HEADER.unpack_from(packet.payload)
            if seq >= total:
                self.errors.append(f"{packet.topic}: a payload not from this run")
            elif seen[seq]:
                self.duplicated += 1
            else:
                seen[seq] = 1
                delivered += 1
                self.latencies.append(now - sent_ns)
        if delivered:
            self.delivered += delivered
            self.last_delivery_ns = self._last_progress = now
        if replies:
            self._send(conn, b"".join(replies))

    def close(self) -> None:
        """DISCONNECT (best effort) and close every connection."""
        goodbye = encode(Disconnect(), self.shape.level)
        for conn in (*self.publishers, *self.subscribers):
            with contextlib.suppress(OSError):
                conn.sock.send(goodbye)
            conn.sock.close()
        self.selector.close()


async def run_trickle(
    target: Target,
    scenario: Scenario,
    shape: TrickleShape,
    *,
    broker: str,
    stall: float,
) -> ScenarioResult:
    """Open, run and check one trickle run against a listening broker (see the module docs).

    ``messages`` of the result counts all publishers; the rate is delivered msg/s
    over the publishing phase; broker CPU covers the publishing phase only
    (opening the connections is the ``idle-10k`` scenario's figure).
    """
    tag = f"tlbench-{os.getpid()}-{scenario.name}"
    driver = TrickleDriver(target, shape, tag, stall)
    result = ScenarioResult(scenario.name, broker, shape.level, driver.total)
    result.connections = shape.connections + shape.subscribers
    try:
        try:
            await trio.to_thread.run_sync(driver.open)
        except OSError as exc:
            if exc.errno == errno.EMFILE:
                raise LoadError(f"out of file descriptors after {len(driver.publishers)}") from exc
            raise
        memory = RssSampler(target.pid)
        broker_cpu = process_cpu_seconds(target.pid) if target.pid else None
        client_cpu = time.process_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(memory.run)
            await trio.to_thread.run_sync(driver.run)
            nursery.cancel_scope.cancel()
        memory.record(result)
        result.client_cpu_s = time.process_time() - client_cpu
        if broker_cpu is not None and target.pid:
            after = process_cpu_seconds(target.pid)
            result.broker_cpu_s = None if after is None else after - broker_cpu
    finally:
        await trio.to_thread.run_sync(driver.close)
    subscribers = len(driver.subscribers) or shape.subscribers
    result.sent = driver.sent
    result.accepted = driver.accepted
    result.refused = driver.refused
    result.delivered = driver.delivered
    result.duplicated = driver.duplicated_acks + driver.duplicated
    result.lost = driver.total * subscribers - driver.delivered
    result.window = 1
    result.errors.extend(driver.errors)
    unacked = driver.total - driver.accepted - driver.refused
    if unacked:
        result.errors.append(f"{unacked} messages were never acknowledged")
    result.schedule_lag_s = driver.max_lag_ns / 1e9
    result.latency = Latency.from_samples(driver.latencies)
    result.ack_latency = Latency.from_samples(driver.ack_latencies)
    ended = max(driver.last_delivery_ns, driver.last_ack_ns)
    if ended > driver.first_send_ns:
        result.elapsed_s = (ended - driver.first_send_ns) / 1e9
        result.rate = driver.delivered / result.elapsed_s
    return result
