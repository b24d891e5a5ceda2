"""Broker-agnostic MQTT load generator: raw trio sockets and tidelog's sans-IO codec.

    python -m bench.mqtt_load --port 1883                      # every scenario, running broker
    python -m bench.mqtt_load --port 1883 --scenario e2e-qos1 --protocol 5 --quick

``bench/mqtt_compare.py`` starts brokers itself and runs them side by side.

Theory of operation
-------------------
A :class:`Scenario` is data: publishers and subscribers, the QoS of each side,
the in-flight window, the message count, an optional fixed rate. New scenarios
(fan-out, fan-in, other payload sizes) are new values in :data:`SCENARIOS`;
:func:`run_scenario` runs any of them against a :class:`Target` (address, and
the broker's pid for CPU accounting when known) and returns a
:class:`ScenarioResult`.

Publishers send pre-encoded PUBLISH packets: a run's packets are encoded once
with tidelog's codec (:func:`encode_many`) into one buffer, cached across runs,
and only the send timestamp inside each payload is written at send time.
Packets leave as slices of that buffer, one ``send_all`` per wake-up, as many
as the in-flight window allows: for QoS 1/2 the window counts messages sent and
not yet acknowledged (PUBACK; PUBCOMP for QoS 2), capped by the broker's Receive
Maximum in MQTT 5. A QoS 0 publisher ends with PINGREQ: a broker answers
PINGRESP only after reading everything sent before it, so the rate counts
messages the broker accepted, not bytes left in socket buffers.

Every payload starts with the message's sequence number and its send time
(``>QQ``, :func:`time.monotonic_ns`; publishers and subscribers run in this one
process, so they share the clock), zero-padded to the payload size. Publishers
check every acknowledgement against the packet identifier it answers (an ack
for nothing in flight counts as duplicated); subscribers keep one byte per
sequence number, so a missing message is lost and a second copy duplicated
whatever the order of arrival.

Progress is watched, not timed: a run ends when every message is acknowledged
and delivered, or when nothing has moved for ``stall_timeout`` seconds (no ack,
no delivery); whatever is missing then counts as lost.

Two scenario kinds are not message streams (:attr:`Scenario.kind`):

* ``idle``: open ``messages`` MQTT connections (CONNECT/CONNACK, no keep
  alive, 200 being opened at any moment) and hold them; the rate is connections accepted per
  second, and the broker's RSS growth per connection is measured one second
  after the last CONNACK (:func:`run_idle`).
* ``burst``: one QoS 1 publisher sends ``messages`` as fast as the broker
  acknowledges while the one subscriber reads at ``read_rate`` msg/s; once
  everything is acknowledged the subscriber drains as fast as it can, so every
  acknowledged message not delivered counts as lost. The rate is the
  publisher's acknowledged msg/s during the burst, its latency publish ->
  PUBACK (delivery latency would measure the pacing); ``drain_s`` the time
  from the last PUBACK until the subscriber had everything.

Broker memory: when the broker's pid is known, /proc/<pid>/status is sampled
every 100 ms during every run (:class:`RssSampler`): VmRSS (all resident
memory, including file pages mapped by the process, such as LMDB's map) and
RssAnon (heap and stacks only).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import resource
import struct
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from tidelog.concurrency import background_nursery
from tidelog.protocols.mqtt import (
    Connect,
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
    Target,
    ack_table,
    disconnect_reason,
    encoded_ack,
)

HEADER = struct.Struct(">QQ")
"""Start of every payload: sequence number, send time (monotonic ns)."""
_U64 = struct.Struct(">Q")
CHUNK_BYTES = 262_144
"""At most this many bytes of PUBLISH packets per ``send_all``."""
MIB = 1024 * 1024
LEVELS = {"3.1.1": 4, "4": 4, "5": 5, "5.0": 5}
"""``--protocol`` spellings -> protocol level."""


# -- results ------------------------------------------------------------------


@attrs.frozen
class Latency:
    """Percentiles of a latency sample, nanoseconds (nearest rank)."""

    count: int
    p50_ns: int
    p99_ns: int
    p999_ns: int
    max_ns: int

    @classmethod
    def from_samples(cls, samples: Sequence[int]) -> Latency | None:
        if not samples:
            return None
        ordered = sorted(samples)
        n = len(ordered)

        def rank(q: float) -> int:
            return ordered[min(n - 1, max(0, math.ceil(q * n) - 1))]

        return cls(n, rank(0.50), rank(0.99), rank(0.999), ordered[-1])


@attrs.define
class ScenarioResult:
    """One run of one scenario against one broker.

    ``messages`` is what the scenario publishes (all publishers); ``accepted``
    the messages the broker acknowledged with success (QoS 0: confirmed read
    by PINGRESP); ``refused`` acknowledged with a failure reason code (v5);
    ``delivered`` distinct messages received, summed over subscribers.
    ``lost``: with subscribers, expected deliveries (messages x subscribers)
    that never arrived; without, messages never acknowledged. ``duplicated``:
    second copies delivered plus acks for packet identifiers not in flight.
    ``rate`` is delivered/s with subscribers, accepted/s without, over
    ``elapsed_s`` from the first send to the last delivery (or ack).
    ``latency`` is publish -> delivery; ``ack_latency`` publish -> PUBACK
    (PUBCOMP for QoS 2). CPU figures are seconds used during the run.
    """

    scenario: str
    broker: str
    protocol_level: int
    messages: int
    sent: int = 0
    accepted: int = 0
    refused: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    elapsed_s: float = 0.0
    rate: float = 0.0
    window: int | None = None
    latency: Latency | None = None
    ack_latency: Latency | None = None
    broker_cpu_s: float | None = None
    client_cpu_s: float = 0.0
    errors: list[str] = attrs.field(factory=list)
    rss_start_bytes: int | None = None
    """Broker VmRSS when the run started (after its clients connected, except idle)."""
    rss_anon_start_bytes: int | None = None
    peak_rss_bytes: int | None = None
    """Highest broker VmRSS sampled during the run (every 100 ms)."""
    peak_rss_anon_bytes: int | None = None
    """Highest broker RssAnon sampled during the run."""
    connections: int | None = None
    """idle: connections that got a CONNACK."""
    rss_anon_per_connection_bytes: float | None = None
    """idle: broker RssAnon growth / connections, 1 s after the last CONNACK."""
    rss_per_connection_bytes: float | None = None
    """idle: the same with VmRSS."""
    drain_s: float | None = None
    """burst: seconds from the last PUBACK until the subscriber had everything (or stalled)."""
    capped_from: int | None = None
    """Messages, all publishers (idle: connections), the scenario asks for, when
    the runner capped this broker below it; ``messages`` is what ran."""
    schedule_lag_s: float | None = None
    """trickle: how late after its due time the load generator's latest send left
    (near zero: the generator kept its schedule)."""

    @property
    def ok(self) -> bool:
        """No errors, nothing lost, nothing duplicated, nothing refused."""
        return not (self.errors or self.lost or self.duplicated or self.refused)

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


# -- scenarios ----------------------------------------------------------------


@attrs.frozen
class Scenario:
    """A load shape. Counts are per publisher; ``rate`` is messages/s per publisher.

    With ``subscribers`` > 0 every subscriber subscribes (at ``subscribe_qos``)
    to all publishers' topics and must receive every message once; the rate is
    then deliveries/s.
    """

    name: str
    description: str
    publish_qos: int
    messages: int
    quick_messages: int
    window: int = 0
    subscribers: int = 0
    subscribe_qos: int = 1
    publishers: int = 1
    rate: float | None = None
    payload_size: int = 100
    kind: str = "load"
    """``load`` (a message stream), ``idle`` (``messages`` idle connections), ``burst``,
    or ``trickle`` (``publishers`` connections at ``rate`` msg/s each, :mod:`bench.trickle`)."""
    read_rate: float | None = None
    """burst: msg/s the subscriber reads while the publisher is still sending."""
    heavy: bool = False
    """Long and stable: runners repeat it once by default."""
    quick_publishers: int | None = None
    """Publishers of a quick (smoke) run, when fewer than ``publishers`` (trickle)."""

    def publisher_count(self, quick: bool) -> int:
        """Publishers of a run (a quick run may have fewer)."""
        if quick and self.quick_publishers is not None:
            return min(self.publishers, self.quick_publishers)
        return self.publishers

    @property
    def needs_qos(self) -> int:
        """The highest QoS the broker must support for this scenario."""
        return max(self.publish_qos, self.subscribe_qos if self.subscribers else 0)

    @property
    def figure(self) -> str:
        """What ``rate`` counts for this scenario."""
        if self.kind == "idle":
            return "connections/s"
        if self.kind == "burst":
            return "acked msg/s during the burst"
        if self.kind == "trickle":
            return "delivered msg/s"
        return "delivered msg/s" if self.subscribers else "acked msg/s"

    def __attrs_post_init__(self) -> None:
        if self.publish_qos not in (0, 1, 2) or self.subscribe_qos not in (0, 1, 2):
            raise ValueError("QoS must be 0, 1 or 2")
        if self.publish_qos and not 0 < self.window <= MAX_PACKET_ID:
            raise ValueError(f"QoS {self.publish_qos} needs a window of 1..{MAX_PACKET_ID}")
        if self.payload_size < HEADER.size:
            raise ValueError(f"payload must hold at least {HEADER.size} bytes")
        if self.kind not in ("load", "idle", "burst", "trickle"):
            raise ValueError(f"unknown scenario kind {self.kind!r}")
        if self.kind == "burst" and (self.publishers, self.subscribers) != (1, 1):
            raise ValueError("a burst has one publisher and one subscriber")
        if self.kind == "trickle" and not (self.rate and self.publish_qos == 1):
            raise ValueError("a trickle publishes QoS 1 at a fixed rate per connection")


def _trickle(
    name: str, connections: int, *, seconds: int, quick: tuple[int, int], heavy: bool = False
) -> Scenario:
    """A trickle scenario: ``connections`` publishers at 1 msg/s each for ``seconds``
    (quick: (connections, seconds)), one subscriber on a ``+`` wildcard."""
    return Scenario(
        name,
        f"{connections:,} connections each publishing QoS 1 at 1 msg/s (random phase, "
        "64-byte payloads) -> 1 subscriber on a + wildcard at QoS 1 (delivered msg/s)",
        publish_qos=1,
        window=1,
        publishers=connections,
        subscribers=1,
        rate=1.0,
        payload_size=64,
        kind="trickle",
        messages=seconds,
        quick_publishers=quick[0],
        quick_messages=quick[1],
        heavy=heavy,
    )


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "qos0-publish",
            "QoS 0 publish, 1 publisher, no subscriber (accepted msg/s)",
            publish_qos=0,
            messages=200_000,
            quick_messages=10_000,
        ),
        Scenario(
            "qos1-publish-w100",
            "QoS 1 publish, window 100, no subscriber (acked msg/s)",
            publish_qos=1,
            window=100,
            messages=50_000,
            quick_messages=2_000,
        ),
        Scenario(
            "qos1-publish-w1000",
            "QoS 1 publish, window 1000, no subscriber (acked msg/s)",
            publish_qos=1,
            window=1000,
            messages=50_000,
            quick_messages=2_000,
        ),
        Scenario(
            "e2e-qos1",
            "QoS 1 end to end, window 1000, 1 -> 1 subscriber at QoS 1 (delivered msg/s)",
            publish_qos=1,
            window=1000,
            subscribers=1,
            messages=50_000,
            quick_messages=2_000,
        ),
        Scenario(
            "latency-500",
            "QoS 1 at a fixed 500 msg/s, 1 -> 1 subscriber at QoS 1 (publish -> delivery)",
            publish_qos=1,
            window=100,
            subscribers=1,
            rate=500.0,
            messages=5_000,
            quick_messages=100,
        ),
        Scenario(
            "fanout-100",
            "QoS 1, window 1000, 1 -> 100 subscribers at QoS 1 (deliveries/s)",
            publish_qos=1,
            window=1000,
            subscribers=100,
            messages=2_000,
            quick_messages=20,
        ),
        Scenario(
            "fanin-100",
            "QoS 1, 100 publishers (window 100 each) -> 1 subscriber on a + wildcard at QoS 1 "
            "(delivered msg/s)",
            publish_qos=1,
            window=100,
            publishers=100,
            subscribers=1,
            messages=300,
            quick_messages=10,
        ),
        Scenario(
            "latency-2000",
            "QoS 1 at a fixed 2,000 msg/s, 1 -> 1 subscriber at QoS 1 (publish -> delivery)",
            publish_qos=1,
            window=100,
            subscribers=1,
            rate=2000.0,
            messages=6_000,
            quick_messages=200,
        ),
        Scenario(
            "e2e-qos1-1k",
            "1 KiB payloads, QoS 1 end to end, window 100, 1 -> 1 subscriber (delivered msg/s)",
            publish_qos=1,
            window=100,
            subscribers=1,
            payload_size=1024,
            messages=20_000,
            quick_messages=500,
        ),
        Scenario(
            "e2e-qos1-64k",
            "64 KiB payloads, QoS 1 end to end, window 100, 1 -> 1 subscriber (delivered msg/s)",
            publish_qos=1,
            window=100,
            subscribers=1,
            payload_size=65_536,
            messages=2_000,
            quick_messages=50,
        ),
        Scenario(
            "idle-10k",
            "10,000 idle MQTT connections held (connections/s, broker RSS per connection)",
            publish_qos=0,
            kind="idle",
            messages=10_000,
            quick_messages=100,
            heavy=True,
        ),
        Scenario(
            "burst",
            "QoS 1 burst, window 1000, to 1 subscriber reading 1,000 msg/s until the burst "
            "is acked, then draining (peak broker RSS, lost)",
            publish_qos=1,
            window=1000,
            subscribers=1,
            kind="burst",
            read_rate=1000.0,
            messages=1_000_000,
            quick_messages=2_000,
            heavy=True,
        ),
        _trickle("trickle", 2_000, seconds=20, quick=(300, 3)),
        _trickle("trickle-10k", 10_000, seconds=10, quick=(400, 2), heavy=True),
    )
}
"""Every scenario, in the order runners use."""


# -- CPU accounting ------------------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None  # the process is gone
    return text[text.rindex(")") + 2 :].split()


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (all threads), its live descendants and
    its reaped children, from /proc/<pid>/stat; None where /proc is missing."""
    if not Path("/proc/self/stat").exists():
        return None
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    ticks = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        fields = _stat_fields(current)
        if fields is None:
            continue
        # fields[11..14]: utime, stime, cutime, cstime (stat fields 14-17)
        ticks += sum(int(value) for value in fields[11:15])
        todo.extend(children.get(current, ()))
    return ticks / _CLOCK_TICKS


def rss_status(pid: int) -> tuple[int, int] | None:
    """(VmRSS, RssAnon) of ``pid`` in bytes from /proc/<pid>/status; None if unreadable."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon"):
            values[key] = int(rest.split()[0]) * 1024
    if len(values) < 2:
        return None
    return values["VmRSS"], values["RssAnon"]


class RssSampler:
    """Broker memory: the first sample, and the peaks of samples taken every ``interval`` s."""

    def __init__(self, pid: int | None, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.start: tuple[int, int] | None = None
        self.peak_rss = 0
        self.peak_anon = 0
        self.sample()

    def sample(self) -> tuple[int, int] | None:
        if self.pid is None:
            return None
        now = rss_status(self.pid)
        if now is not None:
            if self.start is None:
                self.start = now
            self.peak_rss = max(self.peak_rss, now[0])
            self.peak_anon = max(self.peak_anon, now[1])
        return now

    async def run(self) -> None:
        """Sample until cancelled."""
        while True:
            await trio.sleep(self.interval)
            self.sample()

    def record(self, result: ScenarioResult) -> None:
        """Take a last sample and write start and peaks into ``result``."""
        self.sample()
        if self.start is not None:
            result.rss_start_bytes, result.rss_anon_start_bytes = self.start
            result.peak_rss_bytes = self.peak_rss
            result.peak_rss_anon_bytes = self.peak_anon


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (for many connections); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1_048_576)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return hard
    return soft


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


# -- running a scenario -----------------------------------------------------------


async def run_scenario(
    target: Target,
    scenario: Scenario,
    *,
    broker: str = "broker",
    protocol_level: int = 4,
    quick: bool = False,
    messages: int | None = None,
    stall_timeout: float | None = None,
    connections: int | None = None,
) -> ScenarioResult:
    """Run ``scenario`` once against a broker that is already listening.

    ``messages`` (per publisher) overrides the scenario's count, ``connections``
    a trickle's publishers. Connection
    problems raise :class:`LoadError` or :class:`OSError`; a stall ends the run
    with an entry in ``errors`` and what is missing counted as lost.
    """
    per_publisher = messages or (scenario.quick_messages if quick else scenario.messages)
    stall = stall_timeout if stall_timeout is not None else (2.0 if quick else 5.0)
    if stall_timeout is None and scenario.kind == "trickle" and not quick:
        # a saturated broker answers thousands of connections in rounds: 10,000
        # connections on a starved broker were acknowledged after 15-20 s, in one go
        stall = TRICKLE_STALL_S
    level = protocol_level
    if scenario.kind == "idle":
        settle = IDLE_SETTLE_S / 5 if quick else IDLE_SETTLE_S
        return await run_idle(
            target, scenario, per_publisher, broker=broker, level=level, settle=settle
        )
    if scenario.kind == "trickle":
        from bench.trickle import TrickleShape, run_trickle  # imports this module

        shape = TrickleShape(
            connections=connections or scenario.publisher_count(quick),
            messages=per_publisher,
            rate=scenario.rate or 1.0,
            subscribers=scenario.subscribers,
            payload_size=scenario.payload_size,
            level=level,
        )
        return await run_trickle(target, scenario, shape, broker=broker, stall=stall)
    total = per_publisher * scenario.publishers
    base = f"tidelog-bench/{scenario.name}"
    tag = f"tlbench-{os.getpid()}-{scenario.name}"
    encoded = [
        encode_publishes(
            f"{base}/{p}",
            scenario.publish_qos,
            per_publisher,
            scenario.payload_size,
            level,
            p * per_publisher,
        )
        for p in range(scenario.publishers)
    ]
    result = ScenarioResult(scenario.name, broker, level, total)
    connections: list[ClientConnection] = []
    try:
        subscribers = []
        for s in range(scenario.subscribers):
            connection = await ClientConnection.open(target, f"{tag}-sub{s}", level)
            connections.append(connection)
            granted = await connection.subscribe(f"{base}/+", scenario.subscribe_qos)
            if granted != scenario.subscribe_qos:
                result.errors.append(f"subscriber {s}: granted QoS {granted}")
            subscribers.append(Subscriber(connection, total, read_rate=scenario.read_rate))
        publishers = []
        for p in range(scenario.publishers):
            connection = await ClientConnection.open(target, f"{tag}-pub{p}", level)
            connections.append(connection)
            publishers.append(
                Publisher(
                    connection,
                    encoded[p],
                    qos=scenario.publish_qos,
                    window=scenario.window,
                    rate=scenario.rate,
                    stamp=bool(scenario.subscribers),
                    stall_timeout=stall,
                )
            )
        result.window = publishers[0].window if scenario.publish_qos else None

        broker_cpu = process_cpu_seconds(target.pid) if target.pid else None
        client_cpu = time.process_time()
        memory = RssSampler(target.pid)
        async with background_nursery() as nursery:
            nursery.start_soon(memory.run)
            for subscriber in subscribers:
                nursery.start_soon(subscriber.run)
            async with background_nursery() as publishing:
                for publisher in publishers:
                    publishing.start_soon(publisher.run)
            acked_ns = time.monotonic_ns()
            for subscriber in subscribers:
                subscriber.read_rate = None  # a burst is acknowledged: drain
            await _wait_for_deliveries(subscribers, stall)
            if scenario.kind == "burst":
                result.drain_s = (time.monotonic_ns() - acked_ns) / 1e9
            nursery.cancel_scope.cancel()
        memory.record(result)
        result.client_cpu_s = time.process_time() - client_cpu
        if broker_cpu is not None and target.pid:
            after = process_cpu_seconds(target.pid)
            result.broker_cpu_s = None if after is None else after - broker_cpu
    finally:
        with trio.CancelScope(shield=True):
            for connection in connections:
                await connection.close()

    _summarize(result, scenario, publishers, subscribers)
    return result


TRICKLE_STALL_S = 30.0
"""Seconds without any acknowledgement or delivery that end a full trickle run."""
IDLE_BATCH = 200
"""Idle connections being opened at any moment."""
IDLE_SETTLE_S = 1.0
"""Seconds between the last CONNACK and the RSS-per-connection sample (quick: a fifth)."""


async def open_idle(target: Target, client_id: str, level: int) -> trio.socket.SocketType:
    """One MQTT connection that stays idle: a plain socket, CONNECT (clean, no keep
    alive), CONNACK checked for success. Lighter than :class:`ClientConnection`, so the
    client holds 10,000 and measures the broker's accept rate, not its own."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    try:
        sock.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, 1)
        await sock.connect((target.host, target.port))
        await sock.send(encode(Connect(client_id, protocol_level=level), level))
        data = b""
        while len(data) < 4:
            chunk = await sock.recv(64)
            if not chunk:
                raise LoadError(f"{client_id}: the broker closed the connection")
            data += chunk
        if data[0] != 0x20:
            raise LoadError(f"{client_id}: expected CONNACK, got packet type {data[0] >> 4}")
        if data[3] >= 0x80 or (level < 5 and data[3]):
            raise LoadError(f"{client_id}: CONNACK refused: 0x{data[3]:02X}")
    except BaseException:
        sock.close()
        raise
    return sock


async def run_idle(
    target: Target,
    scenario: Scenario,
    count: int,
    *,
    broker: str,
    level: int,
    settle: float = IDLE_SETTLE_S,
) -> ScenarioResult:
    """Open ``count`` MQTT connections (:data:`IDLE_BATCH` at a time, :func:`open_idle`),
    hold them ``settle`` s, measure, close them. ``rate`` is CONNACKs/s over the
    whole opening; ``accepted`` and ``connections`` the connections made."""
    result = ScenarioResult(scenario.name, broker, level, count)
    tag = f"tlbench-{os.getpid()}-idle"
    connections: list[trio.socket.SocketType] = []
    failures: list[str] = []
    memory = RssSampler(target.pid)
    broker_cpu = process_cpu_seconds(target.pid) if target.pid else None
    client_cpu = time.process_time()

    async def opener(first: int) -> None:
        for n in range(first, count, IDLE_BATCH):
            try:
                connections.append(await open_idle(target, f"{tag}-{n}", level))
            except (LoadError, OSError) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

    try:
        async with background_nursery() as sampling:
            sampling.start_soon(memory.run)
            started = time.monotonic_ns()
            async with trio.open_nursery() as nursery:
                for first in range(min(count, IDLE_BATCH)):
                    nursery.start_soon(opener, first)
            ended = time.monotonic_ns()
            if target.pid:
                after = process_cpu_seconds(target.pid)
                result.broker_cpu_s = (
                    None if broker_cpu is None or after is None else after - broker_cpu
                )
            result.client_cpu_s = time.process_time() - client_cpu
            await trio.sleep(settle)
            held = memory.sample()
            sampling.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            for sock in connections:
                sock.close()
    memory.record(result)
    result.sent = count
    result.accepted = result.connections = len(connections)
    result.elapsed_s = (ended - started) / 1e9
    result.rate = len(connections) / result.elapsed_s if result.elapsed_s else 0.0
    if held is not None and memory.start is not None and connections:
        result.rss_per_connection_bytes = (held[0] - memory.start[0]) / len(connections)
        result.rss_anon_per_connection_bytes = (held[1] - memory.start[1]) / len(connections)
    if failures:
        result.errors.append(f"{len(failures)} of {count} connections failed, first: {failures[0]}")
    return result


async def _wait_for_deliveries(subscribers: list[Subscriber], stall: float) -> None:
    """Return once every subscriber has everything, or nothing arrived for ``stall`` s."""
    if not subscribers:
        return
    last_progress = time.monotonic()
    delivered = -1
    while not all(subscriber.complete for subscriber in subscribers):
        now_delivered = sum(subscriber.delivered for subscriber in subscribers)
        if now_delivered != delivered:
            delivered = now_delivered
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > stall:
            return
        await trio.sleep(0.01)


def _summarize(
    result: ScenarioResult,
    scenario: Scenario,
    publishers: list[Publisher],
    subscribers: list[Subscriber],
) -> None:
    result.sent = sum(p.sent for p in publishers)
    result.accepted = sum(p.accepted for p in publishers)
    result.refused = sum(p.refused for p in publishers)
    result.delivered = sum(s.delivered for s in subscribers)
    result.duplicated = sum(p.duplicated_acks for p in publishers) + sum(
        s.duplicated for s in subscribers
    )
    for publisher in publishers:
        result.errors.extend(publisher.errors)
    for subscriber in subscribers:
        result.errors.extend(subscriber.errors)
    started = min((p.first_send_ns for p in publishers if p.first_send_ns), default=0)
    if subscribers:
        result.lost = result.messages * len(subscribers) - result.delivered
        ended = max(s.last_delivery_ns for s in subscribers)
        count = result.delivered
        result.latency = Latency.from_samples([x for s in subscribers for x in s.latencies])
    else:
        result.lost = result.messages - result.accepted - result.refused
        ended = max(p.last_ack_ns for p in publishers)
        count = result.accepted
    if scenario.publish_qos:
        result.ack_latency = Latency.from_samples([x for p in publishers for x in p.ack_latencies])
        unacked = result.messages - result.accepted - result.refused
        if subscribers and unacked:
            result.errors.append(f"{unacked} messages were never acknowledged")
    if scenario.kind == "burst":
        # the figure is the publisher's acked rate while the subscriber was slow;
        # delivery latency would measure the pacing, not the broker
        ended = max(p.last_ack_ns for p in publishers)
        count = result.accepted
        result.latency = None
    if started and ended > started:
        result.elapsed_s = (ended - started) / 1e9
        result.rate = count / result.elapsed_s


# -- command line -------------------------------------------------------------------


def format_result(result: ScenarioResult) -> str:
    """One line per result, for logs and the command line."""
    parts = [
        f"{result.scenario:<20} {result.broker:<20} {result.rate:>12,.0f} msg/s",
        f"sent {result.sent} accepted {result.accepted} delivered {result.delivered}",
        f"lost {result.lost} dup {result.duplicated}",
    ]
    if result.refused:
        parts.append(f"refused {result.refused}")
    if result.window is not None:
        parts.append(f"window {result.window}")
    for label, latency in (("lat", result.latency), ("ack", result.ack_latency)):
        if latency:
            parts.append(
                f"{label} p50/p99/p99.9 {latency.p50_ns / 1e6:.2f}/{latency.p99_ns / 1e6:.2f}"
                f"/{latency.p999_ns / 1e6:.2f} ms"
            )
    if result.broker_cpu_s is not None:
        parts.append(f"broker cpu {result.broker_cpu_s:.2f} s")
    parts.append(f"client cpu {result.client_cpu_s:.2f} s")
    if result.peak_rss_bytes is not None:
        parts.append(
            f"peak RSS {result.peak_rss_bytes / MIB:.0f} MiB "
            f"(anon {(result.peak_rss_anon_bytes or 0) / MIB:.0f})"
        )
    if result.rss_anon_per_connection_bytes is not None:
        parts.append(
            f"anon RSS/conn {result.rss_anon_per_connection_bytes / 1024:.1f} KiB "
            f"(VmRSS {(result.rss_per_connection_bytes or 0) / 1024:.1f})"
        )
    if result.drain_s is not None:
        parts.append(f"drain {result.drain_s:.1f} s")
    if result.capped_from is not None:
        parts.append(f"capped from {result.capped_from}")
    if result.schedule_lag_s is not None:
        parts.append(f"connections {result.connections}, send lag <= {result.schedule_lag_s:.3f} s")
    line = "  ".join(parts)
    if result.errors:
        line += "\n    ERRORS: " + "; ".join(result.errors[:5])
    return line


def parse_protocol(text: str) -> int:
    try:
        return LEVELS[text]
    except KeyError:
        raise argparse.ArgumentTypeError(f"protocol {text!r}: use 3.1.1 or 5") from None


def parse_names(text: str, known: Sequence[str], what: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown)}; choose from {', '.join(known)}"
        )
    return names


def scenario_names(text: str) -> list[str]:
    return parse_names(text, list(SCENARIOS), "scenario")


async def _main(args: argparse.Namespace, emit: Callable[[ScenarioResult], None]) -> int:
    target = Target(args.host, args.port, args.pid)
    failed = False
    for name in args.scenario:
        result = await run_scenario(
            target,
            SCENARIOS[name],
            broker=f"{args.host}:{args.port}",
            protocol_level=args.protocol,
            quick=args.quick,
            messages=args.messages,
        )
        emit(result)
        failed = failed or not result.ok
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.mqtt_load",
        description="Run MQTT load scenarios against a broker that is already running.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--pid", type=int, help="broker pid, for CPU accounting")
    parser.add_argument("--protocol", type=parse_protocol, default=4, help="3.1.1 (default) or 5")
    parser.add_argument(
        "--scenario",
        type=scenario_names,
        default=list(SCENARIOS),
        help=f"comma-separated; default all: {','.join(SCENARIOS)}",
    )
    parser.add_argument("--messages", type=int, help="messages per publisher (overrides)")
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    parser.add_argument("--json", action="store_true", help="print results as JSON lines")
    args = parser.parse_args(argv)

    def emit(result: ScenarioResult) -> None:
        print(json.dumps(result.to_dict()) if args.json else format_result(result), flush=True)

    raise_fd_limit()
    try:
        return trio.run(_main, args, emit)
    except (LoadError, OSError) as exc:
        print(f"mqtt_load: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
