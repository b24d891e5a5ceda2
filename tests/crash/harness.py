"""Crash harness: kill -9 a loaded ``tidelog serve`` again and again, check every promise.

    python -m tests.crash.harness                  # 100 kills on the default backend
    python -m tests.crash.harness --kills 20 --storage sqlite:///tmp/crash/log.db

``tests/crash/`` runs the same harness with fewer kills in CI.

Theory of operation
-------------------
A ``tidelog serve`` subprocess (:class:`~tidelog.testing.server.HarnessServer`) runs on a data
directory that outlives it. While it runs, this process drives mixed load at it:

* a QoS 1 publisher (MQTT 5, clean session) that resends what was not
  acknowledged on a new connection (a resend may be stored twice: QoS 1 is
  "at least once", so such copies count as *duplicated*, not as errors);
* a QoS 2 publisher on a persistent session (MQTT 3.1.1, clean session 0) that
  after a reconnect resends unacknowledged PUBLISHes with DUP set and the same
  packet identifier, and PUBREL for those already PUBRECed; the broker must not
  store such a resend twice (a second copy counts as ``qos2_duplicates``);
* a REST batch publisher (``POST /v1/events``, ten events all or nothing) that
  never retries: a batch without a 201 must be in the log whole or not at all;
* two persistent-session subscribers to ``crash/#`` (3.1.1 QoS 1 and 5 QoS 2)
  that acknowledge every delivery as it arrives.

Each publisher's payload is ``<name>:<seq>``. After a random time the server is
killed with SIGKILL; with the server dead, the harness opens the log itself and
checks (:func:`check_log`): offsets dense from 0; every acknowledged message
present, once (more only if it was sent more than once), and each publisher's
messages in the order it sent them; REST batches whole; nothing unknown; and for
each subscriber's stored session, every event the session counts as delivered
(below its position, or before its ``sent_end`` and not in flight) was
acknowledged by that subscriber. Then the server restarts on the same data
directory (on the same ports or new ones, chosen at random) and the clients
reconnect by themselves.

At the end the publishers stop, the server restarts once more, the subscribers
must receive every event in the log (a missing one is *lost*; one received twice
is a subscriber duplicate, allowed for unacknowledged deliveries) and the server
must exit 0 on SIGTERM with both sessions at the end of the log.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from tidelog.concurrency import background_nursery
from tidelog.protocols.mqtt import (
    NO_PROPERTIES,
    Properties,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    encode,
)
from tidelog.storage import open_log
from tidelog.testing.mqtt_client import ClientConnection, LoadError, Target, encoded_ack
from tidelog.testing.server import HOST, HarnessServer, default_storage

FILTER = "crash/#"
CLIENT_ERRORS = (LoadError, OSError, trio.BrokenResourceError, trio.ClosedResourceError)
"""What a client sees when the server dies under it."""


# -- clients ---------------------------------------------------------------------------


@attrs.define
class Message:
    """One message a publisher means to publish."""

    seq: int
    attempts: int = 0
    """How many PUBLISHes carried it on fresh exchanges (resends with DUP do not count)."""
    dup_resends: int = 0
    acked: bool = False
    acked_at: float = 0.0
    """``time.monotonic()`` when the PUBACK / PUBREC came."""


class Client:
    """A client that reconnects by itself until :meth:`stop`."""

    name: str

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.stopping = False
        self.connections = 0

    async def run(self) -> None:
        while not self.stopping:
            try:
                await self.session()
            except* CLIENT_ERRORS:  # the server died: reconnect
                pass
            if not self.stopping:
                await trio.sleep(0.05)

    async def session(self) -> None:
        raise NotImplementedError

    def target(self) -> Target:
        return Target(HOST, self.harness.server.ports["MQTT"])


class MQTTPublisher(Client):
    """QoS 1 on clean sessions, or QoS 2 on a persistent session (see the module docs)."""

    def __init__(self, harness: Harness, name: str, qos: int, level: int, window: int = 16):
        super().__init__(harness)
        self.name = name
        self.qos = qos
        self.level = level
        self.window = window
        self.messages: list[Message] = []
        self.unacked: dict[int, int] = {}  # packet id -> seq, awaiting PUBACK / PUBREC
        self.released: set[int] = set()  # QoS 2: packet ids awaiting PUBCOMP
        self._next_id = 1
        self._progress = trio.Event()

    def payload(self, seq: int) -> bytes:
        return f"{self.name}:{seq}".encode()

    def _packet_id(self) -> int:
        # identifiers come from a small pool, so they are reused within seconds (as a
        # busy client's are): a broker that remembers a finished one wrongly shows
        while True:
            packet_id = self._next_id
            self._next_id = packet_id % (4 * self.window) + 1
            if packet_id not in self.unacked and packet_id not in self.released:
                return packet_id

    async def session(self) -> None:
        persistent = self.qos == 2
        connection = await ClientConnection.open(
            self.target(), self.name, self.level, clean_start=not persistent
        )
        self.connections += 1
        try:
            resend: list[bytes] = []
            if persistent and connection.session_present:
                for packet_id, seq in sorted(self.unacked.items(), key=lambda i: i[1]):
                    self.messages[seq].dup_resends += 1
                    resend.append(self._publish(seq, packet_id, dup=True))
                resend.extend(
                    encoded_ack(Pubrel, packet_id, self.level) for packet_id in self.released
                )
            else:  # a new session: what was not acknowledged goes again as new messages
                self.released.clear()
                pending = sorted(self.unacked.values())
                self.unacked.clear()
                for seq in pending:
                    packet_id = self._packet_id()
                    self.unacked[packet_id] = seq
                    self.messages[seq].attempts += 1
                    resend.append(self._publish(seq, packet_id))
            if resend:
                await connection.send(b"".join(resend))
            async with background_nursery() as nursery:
                nursery.start_soon(self._read, connection)
                await self._write(connection)
        finally:
            await connection.stream.aclose()

    def _publish(self, seq: int, packet_id: int, *, dup: bool = False) -> bytes:
        packet = Publish(f"crash/{self.name}", self.payload(seq), self.qos, False, dup, packet_id)
        return encode(packet, self.level)

    async def _write(self, connection: ClientConnection) -> None:
        while not self.stopping:
            room = self.window - len(self.unacked) - len(self.released)
            if room <= 0:
                self._progress = trio.Event()
                with trio.move_on_after(0.5):
                    await self._progress.wait()
                continue
            data = []
            for _ in range(min(room, 8)):
                seq = len(self.messages)
                message = Message(seq, attempts=1)
                self.messages.append(message)
                packet_id = self._packet_id()
                self.unacked[packet_id] = seq
                data.append(self._publish(seq, packet_id))
            await connection.send(b"".join(data))
            await trio.sleep(0.01)
        # stopping: let what is in flight finish (bounded)
        with trio.move_on_after(5):
            while self.unacked or self.released:
                self._progress = trio.Event()
                await self._progress.wait()

    async def _read(self, connection: ClientConnection) -> None:
        while True:
            replies = []
            for packet in await connection.receive_packets():
                if isinstance(packet, Puback | Pubrec):
                    seq = self.unacked.pop(packet.packet_id, None)
                    if seq is None:
                        continue
                    if packet.reason_code < 0x80:
                        self.messages[seq].acked = True
                        self.messages[seq].acked_at = time.monotonic()
                        if isinstance(packet, Pubrec):
                            self.released.add(packet.packet_id)
                            replies.append(encoded_ack(Pubrel, packet.packet_id, self.level))
                elif isinstance(packet, Pubcomp):
                    self.released.discard(packet.packet_id)
            self._progress.set()
            if replies:
                await connection.send(b"".join(replies))


@attrs.define
class Batch:
    payloads: list[bytes]
    offsets: list[int] | None = None
    """Set when the broker answered 201."""
    acked_at: float = 0.0


class RestPublisher(Client):
    """Batches of ten through ``POST /v1/events``; never retries."""

    name = "rest"

    def __init__(self, harness: Harness) -> None:
        super().__init__(harness)
        self.batches: list[Batch] = []
        self.seq = 0

    async def session(self) -> None:
        port = self.harness.server.ports["HTTP"]
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=10) as http:
            self.connections += 1
            while not self.stopping:
                batch = Batch([f"rest:{self.seq + i}".encode() for i in range(10)])
                self.seq += 10
                self.batches.append(batch)
                body = {
                    "events": [
                        {"topic": "crash/rest", "payload": p.decode(), "encoding": "text", "qos": 1}
                        for p in batch.payloads
                    ]
                }
                try:
                    response = await http.post("/v1/events", json=body)
                except httpx.HTTPError as exc:
                    raise LoadError(str(exc)) from exc
                if response.status_code == 201:
                    batch.offsets = [e["offset"] for e in response.json()["events"]]
                    batch.acked_at = time.monotonic()
                await trio.sleep(0.02)


class Subscriber(Client):
    """A persistent session on ``crash/#`` that acknowledges every delivery at once."""

    def __init__(self, harness: Harness, name: str, qos: int, level: int) -> None:
        super().__init__(harness)
        self.name = name
        self.qos = qos
        self.level = level
        self.received: Counter[bytes] = Counter()
        self.acked: set[bytes] = set()
        """Payloads whose PUBACK/PUBREC this client handed to the socket."""
        self.awaiting_pubrel: set[int] = set()
        self.redelivered_acked = 0
        """Deliveries of messages this client had already acknowledged (as new messages)."""
        self.subscribed = trio.Event()

    async def session(self) -> None:
        properties = (
            Properties(session_expiry_interval=0xFFFFFFFF) if self.level == 5 else NO_PROPERTIES
        )
        connection = await ClientConnection.open(
            self.target(), self.name, self.level, clean_start=False, properties=properties
        )
        self.connections += 1
        try:
            if not self.subscribed.is_set():
                await connection.subscribe(FILTER, self.qos)
                self.subscribed.set()
            elif not connection.session_present:
                raise AssertionError(f"{self.name}: the broker lost the persistent session")
            while True:
                replies = []
                acked = []
                for packet in await connection.receive_packets():
                    if isinstance(packet, Publish):
                        packet_id = packet.packet_id
                        if packet.qos == 2:
                            assert packet_id is not None
                            replies.append(encoded_ack(Pubrec, packet_id, self.level))
                            acked.append(packet.payload)
                            if packet_id in self.awaiting_pubrel:
                                continue  # a resend of a message this client already has
                            self.awaiting_pubrel.add(packet_id)
                        elif packet.qos == 1:
                            assert packet_id is not None
                            replies.append(encoded_ack(Puback, packet_id, self.level))
                            acked.append(packet.payload)
                        if packet.payload in self.acked:
                            self.redelivered_acked += 1
                        self.received[packet.payload] += 1
                    elif isinstance(packet, Pubrel):
                        self.awaiting_pubrel.discard(packet.packet_id)
                        replies.append(encoded_ack(Pubcomp, packet.packet_id, self.level))
                if replies:
                    await connection.send(b"".join(replies))
                    self.acked.update(acked)
        finally:
            await connection.stream.aclose()


# -- checking --------------------------------------------------------------------------


@attrs.define
class Totals:
    kills: int = 0
    acknowledged: int = 0
    """Messages whose publisher got PUBACK / PUBREC / 201."""
    lost: int = 0
    """Acknowledged messages missing from the log, and log events a subscriber never got."""
    duplicated: int = 0
    """Extra stored copies of QoS 1 messages that were resent (allowed: at least once)."""
    qos2_duplicates: int = 0
    """Extra stored copies of a QoS 2 message resent with DUP on its session."""
    subscriber_duplicates: int = 0
    """Deliveries a subscriber received more than once."""
    redelivered_after_ack: int = 0
    """Of those, deliveries of messages the subscriber had already acknowledged: a
    persistent session's position is saved at most every ``session_save_interval``,
    so after a kill what was acknowledged since the last save comes again."""
    qos2_redelivered: int = 0
    """Of those, extra QoS 2 deliveries of one event (exactly once broken by a kill)."""
    events: int = 0
    unsynced_acknowledged: int = 0
    """``fsync=interval``: acknowledged events not yet fsynced when the server was
    killed, summed over the kills (what a power loss at those moments would take)."""
    max_unsynced_age_ms: float = 0.0
    """``fsync=interval``: the oldest of those, ms between its acknowledgement and the
    kill: the interval plus the duration of a sync (unbounded: a slow disk)."""
    violations: list[str] = attrs.field(factory=list)

    def summary(self) -> str:
        return (
            f"kills={self.kills} events={self.events} acknowledged={self.acknowledged} "
            f"lost={self.lost} duplicated={self.duplicated} "
            f"qos2_duplicates={self.qos2_duplicates} "
            f"subscriber_duplicates={self.subscriber_duplicates} "
            f"(after_ack={self.redelivered_after_ack} qos2={self.qos2_redelivered}) "
            f"unsynced_acknowledged={self.unsynced_acknowledged} "
            f"max_unsynced_age_ms={self.max_unsynced_age_ms:.0f} "
            f"violations={len(self.violations)}"
        )


async def read_everything(storage: str) -> tuple[list[tuple[int, bytes]], dict[str, Any]]:
    """(offset, payload) of every event, and the stored sessions, with the server down."""
    events: list[tuple[int, bytes]] = []
    async with open_log(storage) as log:
        state = await log.state()
        position = state.first_offset
        while position < state.next_offset:
            result = await log.read(position, limit=10_000, max_bytes=64 * 1024 * 1024)
            events.extend((e.offset, e.payload) for e in result.events)
            if result.next_offset <= position:
                break
            position = result.next_offset
        sessions = {k: json.loads(v) for k, v in (await log.list_state("sessions")).items()}
    return events, sessions


def check_log(
    events: list[tuple[int, bytes]],
    sessions: dict[str, Any],
    publishers: list[MQTTPublisher],
    rest: RestPublisher,
    subscribers: list[Subscriber],
) -> Totals:
    """Check the log and the stored sessions against what the clients saw (module docs)."""
    totals = Totals(events=len(events))
    bad = totals.violations.append
    offsets = [offset for offset, _ in events]
    if offsets != list(range(len(events))):
        bad(f"offsets are not dense from 0: {_gaps(offsets)}")
    where: dict[bytes, list[int]] = {}
    for offset, payload in events:
        where.setdefault(payload, []).append(offset)
    known: set[bytes] = set()
    for publisher in publishers:
        last = -1
        for message in publisher.messages:
            payload = publisher.payload(message.seq)
            known.add(payload)
            found = where.get(payload, [])
            if message.acked:
                totals.acknowledged += 1
                if not found:
                    totals.lost += 1
                    bad(f"{payload!r} was acknowledged and is not in the log")
            extra = len(found) - 1
            if extra > 0:
                if extra < message.attempts:
                    totals.duplicated += extra
                elif publisher.qos == 2 and extra < message.attempts + message.dup_resends:
                    totals.qos2_duplicates += extra - message.attempts + 1
                    totals.duplicated += message.attempts - 1
                else:
                    bad(f"{payload!r} stored {len(found)} times, sent {message.attempts}")
            if found:
                if found[0] < last:
                    bad(f"{payload!r} at offset {found[0]} is before an earlier message")
                last = found[0]
    for batch in rest.batches:
        found_batch = [where.get(p, []) for p in batch.payloads]
        known.update(batch.payloads)
        if batch.offsets is not None:
            totals.acknowledged += len(batch.payloads)
            stored = zip(batch.payloads, batch.offsets, found_batch, strict=True)
            for payload, offset, found in stored:
                if found != [offset]:
                    totals.lost += not found
                    bad(f"REST {payload!r} acknowledged at {offset}, found at {found}")
        elif any(found_batch) and not all(len(f) == 1 for f in found_batch):
            bad(f"an unacknowledged REST batch is in the log in part: {found_batch}")
    unknown = [payload for payload in where if payload not in known]
    if unknown:
        bad(f"{len(unknown)} events no client published, e.g. {unknown[:3]}")
    payload_at = dict(events)
    for subscriber in subscribers:
        session = sessions.get(subscriber.name)
        if session is None:
            if subscriber.subscribed.is_set():
                bad(f"{subscriber.name}: the persistent session is not stored")
            continue
        inflight = session.get("inflight", {})
        out = {int(o) for o in inflight.get("out", {})}
        delivered_end = max(session["position"], inflight.get("sent_end", 0))
        for offset in range(min(delivered_end, len(events))):
            if offset < session["position"] or offset not in out:
                payload = payload_at.get(offset)
                if payload is not None and payload not in subscriber.acked:
                    bad(
                        f"{subscriber.name}: the session counts offset {offset} ({payload!r}) as"
                        f" delivered, the client never acknowledged it"
                    )
                    break
    return totals


def check_exposure(
    events: list[tuple[int, bytes]],
    durable: int,
    durable_as_of: float,
    at: float,
    publishers: list[MQTTPublisher],
    rest: RestPublisher,
    totals: Totals,
) -> None:
    """``fsync=interval``: the acknowledged events at or above ``durable`` (the server's
    fsynced watermark, read at ``time.monotonic()`` ``at`` just before the kill) are
    what a power loss would have taken. Each must have been acknowledged after the
    sync that made ``durable`` durable began (``durable_as_of``, the same clock: the
    system's CLOCK_MONOTONIC): anything acknowledged before was committed before, and
    that sync had to cover it. ``max_unsynced_age_ms`` reports how long the oldest
    waited: the interval plus one sync at most, as the timer starts a sync every
    interval after the last one ended."""
    first_offset: dict[bytes, int] = {}
    for offset, payload in events:
        first_offset.setdefault(payload, offset)
    acked: list[tuple[bytes, float]] = [
        (publisher.payload(m.seq), m.acked_at)
        for publisher in publishers
        for m in publisher.messages
        if m.acked
    ]
    acked += [(p, b.acked_at) for b in rest.batches if b.offsets is not None for p in b.payloads]
    for payload, acked_at in acked:
        offset = first_offset.get(payload)
        if offset is None or offset < durable:
            continue
        totals.unsynced_acknowledged += 1
        age_ms = (at - acked_at) * 1000
        totals.max_unsynced_age_ms = max(totals.max_unsynced_age_ms, age_ms)
        if acked_at < durable_as_of:
            early = (durable_as_of - acked_at) * 1000
            totals.violations.append(
                f"{payload!r} (offset {offset}) was acknowledged {early:.0f} ms before the "
                f"last completed sync began, and that sync did not cover it (durable below "
                f"{durable})"
            )


def fsync_interval_ms(storage: str) -> int | None:
    """The ``interval:<ms>`` of a storage URL's fsync option, if it has one."""
    match = re.search(r"fsync=interval:(\d+)", storage)
    return int(match[1]) if match else None


def _gaps(offsets: list[int]) -> str:
    for expected, offset in enumerate(offsets):
        if offset != expected:
            return f"expected {expected}, found {offset}"
    return "?"


# -- the run ---------------------------------------------------------------------------


class Harness:
    def __init__(
        self,
        directory: Path,
        *,
        storage: str | None = None,
        kills: int = 10,
        min_life: float = 0.3,
        max_life: float = 2.0,
        seed: int | None = None,
        report: Callable[[str], None] = print,
    ) -> None:
        self.directory = directory
        self.storage = storage or default_storage(directory)
        self.kills = kills
        self.min_life = min_life
        self.max_life = max_life
        self.rng = random.Random(seed)
        self.report = report
        self.server = HarnessServer(self.storage, directory / "server.log")
        self.totals = Totals()
        self.publishers = [
            MQTTPublisher(self, "q1", qos=1, level=5),
            MQTTPublisher(self, "q2", qos=2, level=4),
        ]
        self.rest = RestPublisher(self)
        self.subscribers = [
            Subscriber(self, "sub-q1", qos=1, level=4),
            Subscriber(self, "sub-q2", qos=2, level=5),
        ]
        self.deadline_failures: list[str] = []
        self.interval_ms = fsync_interval_ms(self.storage)
        self.last_events: list[tuple[int, bytes]] = []

    async def _durable_offset(self) -> tuple[int, float, float]:
        """The server's fsynced watermark and when the sync that made it began
        (``/v1/stats``; 0 and -inf before the first sync), and when it was read."""
        if self.interval_ms is None:
            return 0, 0.0, 0.0
        port = self.server.ports["HTTP"]
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=10) as http:
            log = (await http.get("/v1/stats")).json()["log"]
        as_of = log["durable_as_of"]
        return log["durable_offset"], -math.inf if as_of is None else as_of, time.monotonic()

    async def check(self) -> Totals:
        events, sessions = await read_everything(self.storage)
        self.last_events = events
        return check_log(events, sessions, self.publishers, self.rest, self.subscribers)

    async def run(self) -> Totals:
        self.directory.mkdir(parents=True, exist_ok=True)
        await self.server.start()
        async with trio.open_nursery() as nursery:
            for subscriber in self.subscribers:
                nursery.start_soon(subscriber.run)
            with trio.fail_after(20):
                for subscriber in self.subscribers:
                    await subscriber.subscribed.wait()
            publishers: list[Client] = [*self.publishers, self.rest]
            for client in publishers:
                nursery.start_soon(client.run)
            for kill in range(self.kills):
                await trio.sleep(self.rng.uniform(self.min_life, self.max_life))
                durable, durable_as_of, at = await self._durable_offset()
                self.server.kill()
                self.totals.kills += 1
                totals = await self.check()
                totals.kills = self.totals.kills
                if self.interval_ms is not None:
                    check_exposure(
                        self.last_events, durable, durable_as_of, at, self.publishers,
                        self.rest, totals,
                    )  # fmt: skip
                    self.totals.unsynced_acknowledged += totals.unsynced_acknowledged
                    self.totals.max_unsynced_age_ms = max(
                        self.totals.max_unsynced_age_ms, totals.max_unsynced_age_ms
                    )
                self.totals.violations.extend(f"kill {kill + 1}: {v}" for v in totals.violations)
                self.report(f"kill {kill + 1}: {totals.summary()}")
                same_ports = self.rng.random() < 0.5
                ports = self.server.ports if same_ports else {}
                await self.server.start(ports.get("MQTT", 0), ports.get("HTTP", 0))
            for client in publishers:
                client.stopping = True
            with trio.move_on_after(10):
                while any(c.unacked or c.released for c in self.publishers):
                    await trio.sleep(0.05)
            await trio.sleep(0.3)
            events, _ = await self._stop_and_read()
            # every subscriber must now get every event of the log
            await self.server.start()
            expected = {payload for _, payload in events}
            with trio.move_on_after(60):
                while any(not expected <= set(s.received) for s in self.subscribers):
                    await trio.sleep(0.05)
            await trio.sleep(0.5)  # the last acks reach the broker
            for subscriber in self.subscribers:
                subscriber.stopping = True
            events, sessions = await self._stop_and_read()
            nursery.cancel_scope.cancel()
        totals = check_log(events, sessions, self.publishers, self.rest, self.subscribers)
        totals.kills = self.totals.kills
        totals.unsynced_acknowledged = self.totals.unsynced_acknowledged
        totals.max_unsynced_age_ms = self.totals.max_unsynced_age_ms
        totals.violations[:0] = self.totals.violations + self.deadline_failures
        copies = Counter(payload for _, payload in events)
        for subscriber in self.subscribers:
            missing = {p for _, p in events} - set(subscriber.received)
            totals.lost += len(missing)
            if missing:
                totals.violations.append(
                    f"{subscriber.name} never received {len(missing)} events, "
                    f"e.g. {sorted(missing)[:3]}"
                )
            # a message stored twice is two events: two deliveries of it are no duplicate
            extra = {p: n - copies[p] for p, n in subscriber.received.items() if n > copies[p]}
            totals.subscriber_duplicates += sum(extra.values())
            totals.redelivered_after_ack += subscriber.redelivered_acked
            if subscriber.qos == 2:
                totals.qos2_redelivered += sum(n for p, n in extra.items() if p[:3] == b"q2:")
            position = sessions.get(subscriber.name, {}).get("position")
            if position != len(events):
                totals.violations.append(
                    f"{subscriber.name}: stored position {position} after a clean shutdown with "
                    f"everything acknowledged, expected {len(events)}"
                )
        self.totals = totals
        return totals

    async def _stop_and_read(self) -> tuple[list[tuple[int, bytes]], dict[str, Any]]:
        status = await self.server.terminate()
        if status != 0:
            self.deadline_failures.append(
                f"tidelog serve exited {status} on SIGTERM:\n{self.server.tail()}"
            )
        return await read_everything(self.storage)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.crash.harness", description=__doc__)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--storage", help="storage URL (default: the default backend)")
    parser.add_argument("--directory", type=Path, help="data directory (default: a temp dir)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--min-life", type=float, default=0.3)
    parser.add_argument("--max-life", type=float, default=3.0)
    args = parser.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tidelog-crash-") as tmp:
        directory = args.directory or Path(tmp)
        harness = Harness(
            directory,
            storage=args.storage,
            kills=args.kills,
            min_life=args.min_life,
            max_life=args.max_life,
            seed=args.seed,
        )
        started = time.monotonic()
        try:
            totals = trio.run(harness.run)
        finally:
            harness.server.kill()
        print(f"storage {harness.storage}, {time.monotonic() - started:.0f} s")
        print(f"TOTALS {totals.summary()}")
        for violation in totals.violations:
            print(f"VIOLATION {violation}")
    return 1 if totals.violations else 0


if __name__ == "__main__":
    sys.exit(main())
