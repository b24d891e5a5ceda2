"""One established link connection: the trio shell around the ``$link/`` protocol.

After the handshake (``tidelog.mesh.node``: hello, welcome, start) both sides
run the same :class:`LinkSession`, which may carry both directions at once:

* the **source** reads this node's log from the position the receiver asked
  for (at the head, the events just committed, from a
  :class:`~tidelog.mesh.tail.LiveTail` in memory), keeps the events its
  :class:`~tidelog.mesh.routing.Route` admits and sends them in
  ``$link/events`` batches, at most ``window`` unacknowledged (credit-based
  flow control: each PUBACK returns one credit);
* the **sink** takes the peer's batches in order, drops what was appended
  already (per origin), appends the rest in one durable write, advances the
  positions and only then acknowledges; while the peer has more than half its
  credit left the PUBACKs of durable batches are held and sent together (a PUBACK
  only returns credit: :meth:`LinkSession._acknowledge`);
* the **reader** decodes packets and handles them; a batch it checks and decodes
  at once, then hands to the sink (no task in between: a live batch costs the
  receiver one hand-off fewer); the **heartbeat** sends
  this node's head offset every ``heartbeat_seconds``. A connection silent for
  three heartbeats is closed (half-open connections end).

Memory is bounded: a batch holds at most ``batch_events`` events and a peer
that sends more than ``window`` batches without acknowledgement is cut off.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from operator import attrgetter
from typing import TYPE_CHECKING, Any, NamedTuple

import trio

from tidelog.concurrency import background_nursery
from tidelog.mesh import wire
from tidelog.mesh.config import LinkConfig
from tidelog.mesh.routing import MATCH_CACHE_TOPICS, Route
from tidelog.mesh.status import LinkStatus
from tidelog.mesh.tail import LiveTail
from tidelog.protocols.mqtt.decoder import Decoder
from tidelog.protocols.mqtt.encoder import encode
from tidelog.protocols.mqtt.packets import Disconnect, Packet, Pingreq, Pingresp, Puback, Publish
from tidelog.protocols.mqtt.reason_codes import ReasonCode
from tidelog.security import Access, Right
from tidelog.storage.base import DEFAULT_READ_MAX_BYTES
from tidelog.storage.records import Event, NewEvent
from tidelog.topics import Matcher, compile_filter, validate_topic_filter

if TYPE_CHECKING:
    from tidelog.mesh.node import Mesh

TAIL_MAX_EVENTS = 20_000
"""Most events a link's :class:`LiveTail` holds (whatever ``batch_events`` is); below
that a window's worth of batches (at least 4): what commits while the receiver holds
every credit stays in memory."""
TAIL_MAX_BYTES = 2 * DEFAULT_READ_MAX_BYTES
"""Most bytes a link's :class:`LiveTail` holds (payloads, topics and a fixed cost per
event: :func:`~tidelog.mesh.tail.held_bytes`)."""

log = logging.getLogger("tidelog.mesh")
RECEIVE_BYTES = 262_144
"""Most bytes one read of a link's stream takes: a live batch of about 500 events is
75-110 KB, read at once rather than in two reads (each a round of the event loop)
and joined by the decoder."""
INTEREST_POLL_SECONDS = 0.25
"""How often a link with live interest looks for changed subscriptions."""
STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
COALESCE_SECONDS = 0.05
"""Most a source at the head waits for a commit on its way to send it in the same
batch as the one it holds (:meth:`LinkSession._coalesce`); the commit normally ends
sooner (its own fsync)."""


class _Batch(NamedTuple):
    """A peer's batch, checked and decoded, waiting for the sink."""

    packet_id: int
    next_offset: int
    events: list[NewEvent]
    shape: wire.BatchShape | None


class LinkClosed(Exception):
    """The link ended (the reason is in the message)."""


class LinkRefused(Exception):
    """A link the other side (or this one) will not have; carries the reason code."""

    def __init__(self, code: ReasonCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class LinkChannel:
    """Packets over one stream: one writer at a time, a decoder for what comes in."""

    def __init__(self, stream: trio.abc.Stream, decoder: Decoder, level: int = 5) -> None:
        self.stream = stream
        self.decoder = decoder
        self.level = level
        """The MQTT protocol level packets are encoded for (5; 4 for 3.1.1 bridges)."""
        self._lock = trio.Lock()
        self.pending: list[Packet] = []

    async def send(self, *packets: Packet) -> None:
        """Send ``packets`` in one write. An uncontended lock is taken without a
        checkpoint, so the bytes reach the socket before this task yields: a batch
        or a burst of PUBACKs does not wait a full round of the event loop's other
        tasks first (``send_all`` checkpoints after sending)."""
        data = b"".join(encode(packet, self.level) for packet in packets)
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()
        try:
            await self.stream.send_all(data)
        finally:
            self._lock.release()

    async def receive(self) -> Packet:
        """The next packet; :class:`LinkClosed` at end of stream."""
        while not self.pending:
            data = await self.stream.receive_some(RECEIVE_BYTES)
            if not data:
                raise LinkClosed("the peer closed the connection")
            self.pending = self.decoder.feed(data)
        return self.pending.pop(0)

    async def receive_publish(self, topic: str, timeout: float) -> Publish:
        """The next packet, which must be a PUBLISH on ``topic`` (handshakes)."""
        with trio.move_on_after(timeout):
            packet = await self.receive()
            if isinstance(packet, Disconnect):
                reason = packet.properties.reason_string or ReasonCode(packet.reason_code).name
                raise LinkClosed(f"refused by the peer: {reason}")
            if not isinstance(packet, Publish) or packet.topic != topic:
                raise wire.LinkProtocolError(f"expected {topic}, got {packet!r}")
            return packet
        raise LinkClosed(f"no {topic} within {timeout}s")


class LinkSession:
    """One connected link: source, sink, reader and heartbeat (see the module docs)."""

    def __init__(
        self,
        mesh: Mesh,
        channel: LinkChannel,
        status: LinkStatus,
        peer: str,
        peer_incarnation: str,
        *,
        window: int,
        batch_events: int,
        heartbeat_seconds: float,
        transit: bool,
        push_access: Access | None = None,
    ) -> None:
        self.mesh = mesh
        self.broker = mesh.broker
        self.channel = channel
        self.status = status
        self.peer = peer
        self.peer_incarnation = peer_incarnation
        self.window = window
        self.batch_events = batch_events
        self.heartbeat_seconds = heartbeat_seconds
        self.transit = transit
        """A transit link: counts for the topology (cycles, ``$link/nodes``)."""
        self.push_access = push_access
        """The dialer's rights, when it pushes into this node (inbound links)."""
        self.pull_route: Route | None = None
        """What the dialer pulls from this node (inbound links; started by ``$link/start``)."""
        self.pull_access: Access | None = None
        self.push_route: Route | None = None
        """What this node pushes to the peer (outbound links)."""
        self.interest: list[str] | None = None
        """Live interest the peer advertised for what this side's source sends: the
        dialer's pull, or the remote's for the dialer's push (None: static filters)."""
        self._interest_matchers: list[Matcher] | None = None
        self._advertised: list[str] | None = None
        self.peer_nodes: set[str] = set()
        """The nodes reachable behind the peer (transit), as it reported them."""
        self.sent_nodes: list[str] | None = None
        self.link: LinkConfig | None = None
        """The dialer's ``[[link]]`` (on the dialing side only): its prefixes rename
        the topics of what it pulls and pushes (the remote needs no configuration)."""
        self._batches_in, self._batches_out = trio.open_memory_channel[_Batch](window)
        self._unacknowledged = 0
        """The peer's batches received and not acknowledged yet (at most ``window``):
        waiting for the sink, committing, or durable with their PUBACK held."""
        self._held: list[Puback] = []
        """PUBACKs of durable batches not sent yet (:meth:`_acknowledge`)."""
        self._credit = trio.Semaphore(window)
        self._inflight: dict[int, int] = {}
        self._packet_id = 0
        self._nursery: trio.Nursery | None = None
        self._source_position: int | None = None
        self._source_started = False
        """A session runs one source: a second ``$link/start`` is a protocol error."""
        self._last_heard = trio.current_time()

    # -- running ---------------------------------------------------------------------

    async def run(
        self,
        route: Route | None,
        start: tuple[str, int] | None,
        advertise: tuple[str, ...] | None = None,
    ) -> None:
        """Serve until the connection ends; ``route`` (with ``start``, the receiver's
        position in this log) starts the source now (push), else ``$link/start``
        may start it (pull, on the remote side). ``advertise``: the filters whose live
        interest this side sends (``interest = true``): the dialer's pull filters on
        the dialer, its push filters on the remote."""
        try:
            async with background_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._sink)
                nursery.start_soon(self._heartbeat)
                if advertise is not None:
                    nursery.start_soon(self._advertise, advertise)
                if route is not None:
                    self.start_source(route, start, None)
                try:
                    await self._read()
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            self._nursery = None

    def start_soon(self, task: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run ``task(*args)`` within this session (it may send on the channel): it ends
        with the session, before the connection closes the stream under it (a send
        still running then would make the close fail); nothing once it has ended."""
        if self._nursery is not None:
            self._nursery.start_soon(task, *args)

    def start_source(
        self, route: Route, start: tuple[str, int] | None, access: Access | None
    ) -> None:
        assert self._nursery is not None
        if self._source_started:
            raise wire.LinkProtocolError("the link's source was started already")
        self._source_started = True
        self._nursery.start_soon(self._source, route, start, access)

    async def close(self, code: ReasonCode, reason: str) -> None:
        with trio.move_on_after(1):
            await self.channel.send(Disconnect(code, _reason(reason)))

    # -- reader ----------------------------------------------------------------------

    async def _read(self) -> None:
        silence = 3 * self.heartbeat_seconds
        while True:
            with trio.move_on_after(silence) as scope:
                packet = await self.channel.receive()
            if scope.cancelled_caught:
                raise LinkClosed(f"nothing heard for {silence}s")
            if isinstance(packet, Publish):
                await self._on_publish(packet)
            elif isinstance(packet, Puback):
                self._acked(packet.packet_id)
            elif isinstance(packet, Pingreq):
                await self.channel.send(Pingresp())
            elif isinstance(packet, Disconnect):
                reason = packet.properties.reason_string or ReasonCode(packet.reason_code).name
                raise LinkClosed(f"the peer disconnected: {reason}")
            elif not isinstance(packet, Pingresp):
                raise wire.LinkProtocolError(f"unexpected {type(packet).__name__} on a link")

    async def _on_publish(self, packet: Publish) -> None:
        topic = packet.topic
        if topic == wire.EVENTS:
            self._unacknowledged += 1
            if self._unacknowledged > self.window:
                raise wire.LinkProtocolError(
                    f"the peer sent more than {self.window} unacknowledged batches"
                )
            events, shape = self._checked_batch(packet)
            batch = _Batch(packet.packet_id or 0, wire.next_offset_of(packet), events, shape)
            self._batches_in.send_nowait(batch)  # room: at most window unacknowledged
        elif topic == wire.HEAD:
            body = wire.parse_control(packet)
            head, sent = body.get("head"), body.get("sent")
            if isinstance(head, int):
                self.status.heard(head, sent if isinstance(sent, int) else None)
            await self._acknowledge()  # held at most until the peer's next heartbeat
        elif topic == wire.GAP:
            body = wire.parse_control(packet)
            self.mesh.report_gap(self.status, self.peer, body)
        elif topic == wire.NODES:
            self.peer_nodes = set(wire.string_list(wire.parse_control(packet), "nodes"))
            self.mesh.check_cycle(self)
            self.mesh.topology_changed(self)
        elif topic == wire.INTEREST:
            self.set_interest(wire.string_list(wire.parse_control(packet), "filters"))
        elif topic == wire.START:
            await self.mesh.on_start(self, wire.parse_control(packet))
        else:
            raise wire.LinkProtocolError(f"unknown link message {topic!r}")

    def set_interest(self, filters: list[str]) -> None:
        """The peer's live interest: this side's source sends only what it matches."""
        for topic_filter in filters:
            validate_topic_filter(topic_filter)
        self.interest = filters
        self._interest_matchers = [compile_filter(f) for f in filters]
        if self.link is None:
            self.status.interest = filters  # the dialer's, for its pull
        else:
            self.status.push_interest = filters  # the remote's, for this push

    # -- sink ------------------------------------------------------------------------

    async def _sink(self) -> None:
        """Append the peer's batches: every batch waiting when one arrives, up to half the
        ``window`` (so the peer keeps credit to send more while they commit), goes into
        one durable write, and their PUBACKs leave together once it is durable, or
        are held while the peer has credit to spare (:meth:`_acknowledge`; a
        commit's latency is paid once for the group, all appended or none). The
        reader checked and decoded each batch as it came (:meth:`_on_publish`), so
        checking the next batches overlaps the commit of those before."""
        most = max(1, self.window // 2)
        async for first in self._batches_out:
            group = [first]
            while len(group) < most:
                try:
                    group.append(self._batches_out.receive_nowait())
                except trio.WouldBlock:
                    break
            events: list[NewEvent] = []
            for batch in group:
                events += batch.events
            shape = wire.joined_shape([batch.shape for batch in group if batch.events])
            next_offset = group[-1].next_offset
            fresh = await self._append(events, next_offset, shape)
            self.status.events_in += len(fresh)
            self.status.batches_in += len(group)
            self.status.position = next_offset
            self._held += [Puback(batch.packet_id) for batch in group]
            if self._unacknowledged >= self._hold_below:
                await self._acknowledge()

    @property
    def _hold_below(self) -> int:
        """Durable batches' PUBACKs are held while fewer than this many of the peer's
        batches are unacknowledged: half the ``window``, at least 1 (none held below 4)."""
        return max(1, self.window // 2)

    async def _acknowledge(self) -> None:
        """Send the held PUBACKs, in one write.

        A PUBACK on a link only returns credit: the receiver's position is its own,
        advanced in the durable write of each batch, and a reconnect resumes from it
        whatever was acknowledged. So the sink holds the PUBACKs of durable batches
        while fewer than half the ``window`` of the peer's batches are unacknowledged
        (the peer still has more than half its credit), and sends them together:
        a peer keeping up at light load wakes for an acknowledgement every
        ``window // 2`` batches instead of every batch. Once half the window is
        unacknowledged (the receiver behind) each commit's PUBACKs leave at once, so
        the peer is never short of credit for what is held, and never waits on it:
        at most ``window // 2 - 1`` are held. What no later batch releases goes with
        the peer's next ``$link/head`` (:meth:`_on_publish`): the peer reports where it
        has sent up to (``sent``, the lag of a link whose last events did not match)
        only with nothing unacknowledged."""
        acks, self._held = self._held, []
        if acks:
            self._unacknowledged -= len(acks)
            await self.channel.send(*acks)

    def _checked_batch(self, packet: Publish) -> tuple[list[NewEvent], wire.BatchShape | None]:
        """A batch's events, renamed by the link's prefixes, and their shape; raises for
        an event this peer may not send."""
        decoded, shape = wire.decode_shaped(packet.payload, self.peer)
        events: list[NewEvent] = list(decoded)
        if self.link is not None and self.link.remapped:
            events = _renamed(events, self.link.to_local)
            if len(events) != len(decoded):
                shape = None  # some had no local name: first and last may be gone
        if self.push_access is not None:
            for topic in {event.topic for event in events}:
                if not self.push_access.allows(Right.LINK, topic):
                    raise LinkRefused(ReasonCode.NOT_AUTHORIZED, f"no link right for {topic!r}")
        return events, shape

    async def _append(
        self, events: list[NewEvent], next_offset: int, shape: wire.BatchShape | None
    ) -> list[NewEvent]:
        """Append what was not appended yet, in one durable write, and advance the
        positions with it; returns what was appended."""
        positions = self.mesh.positions
        async with self.mesh.peer_lock(self.peer):
            fresh = await positions.append_fresh(self.broker, events, shape)
            self.status.duplicates += len(events) - len(fresh)
            positions.advance_sender(self.peer, self.peer_incarnation, next_offset)
        return fresh

    # -- source ----------------------------------------------------------------------

    def _acked(self, packet_id: int) -> None:
        if self._inflight.pop(packet_id, None) is None:
            raise wire.LinkProtocolError(f"PUBACK for unknown batch {packet_id}")
        self._credit.release()

    async def _source(
        self, route: Route, start: tuple[str, int] | None, access: Access | None
    ) -> None:
        """Send this node's events from the receiver's position, a batch per credit. At
        the head, committed events come from a :class:`LiveTail` (memory) instead of
        the log; a wait for new events lasts at most a heartbeat."""
        me = self.mesh.identity
        position = await self._start_position(start)
        single = route.single_filter()
        rename = self.link.to_remote if self.link and self.link.remapped else None
        # topic -> whether the link right, the prefixes and the live interest let it
        # through: asked once per topic, not per event (emptied when the interest changes)
        passes: dict[str, bool] = {}
        passes_for: list[Matcher] | None = None
        # a live tail; with a single filter other than "#" it keeps only what the filter
        # matches, and a link that matches little of what the node commits goes back to
        # the log's topic index (it must not look at every event the node commits)
        live = LiveTail(
            min(max(4, self.window) * self.batch_events, TAIL_MAX_EVENTS),
            TAIL_MAX_BYTES,
            None if single is None or single == "#" else route.matches,
        )
        self.broker.add_commit_hook(live.committed)
        tail: LiveTail | None = live
        self.status.sends_from = "memory"
        try:
            while True:
                try:  # a free credit without a round of the event loop (a send yields)
                    self._credit.acquire_nowait()
                except trio.WouldBlock:
                    await self._credit.acquire()
                page = None
                if tail is not None and tail.sparse:
                    self.broker.remove_commit_hook(tail.committed)
                    tail = None
                    self.status.sends_from = "log"
                if tail is not None:
                    tail.arm()
                    page = tail.take(position, self.batch_events, DEFAULT_READ_MAX_BYTES)
                if page is not None:
                    candidates, next_offset = page
                elif tail is not None and position >= self.broker.end_offset:
                    # at the head: what the log holds past it is committed and not fanned
                    # out yet, and comes with the fan-out to the tail (not read back)
                    await tail.wait(self.heartbeat_seconds)
                    if self._coalesce(tail):
                        await tail.wait_commit(COALESCE_SECONDS)
                    # what the commits that ended the waits brought, with the credit held
                    # (not a pass of the loop without events first: an empty batch
                    # admitted, the credit given back and taken again)
                    page = tail.take(position, self.batch_events, DEFAULT_READ_MAX_BYTES)
                    candidates, next_offset = page if page is not None else ([], position)
                else:  # the log (what the tail holds is sent whatever retention did since)
                    first = (await self.broker.log_state()).first_offset
                    if position < first:
                        await self._send_gap(position, first, "retention")
                        position = first
                    # without a tail the log waits at the head for an append
                    wait = self.heartbeat_seconds if tail is None else None
                    result = await self.broker.read(
                        position, single, limit=self.batch_events, wait=wait
                    )
                    candidates, next_offset = result.events, max(result.next_offset, position)
                    at_head = next_offset >= self.broker.end_offset
                    if tail is not None and not candidates and at_head:
                        await tail.wait(self.heartbeat_seconds)  # a filtered read got there
                interest = self._interest_matchers
                if interest is not passes_for:
                    passes.clear()
                    passes_for = interest
                events = _admitted(candidates, route, passes, access, rename, interest)
                if events:
                    self._packet_id = self._packet_id % 0xFFFF + 1
                    payload = wire.encode_batch(events, me.node_id, me.incarnation, rename)
                    self._inflight[self._packet_id] = next_offset
                    packet = wire.events_packet(payload, self._packet_id, next_offset)
                    await self.channel.send(packet)
                    self.status.events_out += len(events)
                    self.status.batches_out += 1
                else:
                    self._credit.release()
                position = self._source_position = next_offset
        finally:
            self.status.sends_from = None
            if tail is not None:
                self.broker.remove_commit_hook(tail.committed)

    def _coalesce(self, tail: LiveTail) -> bool:
        """Whether a source woken at the head waits for the commit on its way before it
        sends: when the tail holds at least a quarter of ``batch_events`` (and less than
        a whole batch) and this node has events submitted that are not committed yet.
        One batch then carries two commits: the link's cost per batch (the wake-up, the
        batch's packet and send at the origin; its decode setup, durable write and
        acknowledgement at the receiver) is paid half as often under load, when CPU is
        what the link lacks. A light load (commits smaller than that quarter, nothing on
        its way) is sent at once, as before; a commit that never comes (refused) holds
        the batch at most :data:`COALESCE_SECONDS`."""
        return (
            max(1, self.batch_events // 4) <= len(tail) < self.batch_events
            and self.broker.append_horizon > self.broker.end_offset
        )

    async def _start_position(self, start: tuple[str, int] | None) -> int:
        me = self.mesh.identity
        first = (await self.broker.log_state()).first_offset
        if start is None:
            return first
        incarnation, offset = start
        if incarnation != me.incarnation:
            await self._send_gap(offset, first, "incarnation")
            return first
        return min(offset, self.broker.end_offset)

    async def _send_gap(self, start: int, end: int, reason: str) -> None:
        await self.channel.send(
            wire.control(wire.GAP, {"from": start, "to": end, "reason": reason})
        )

    # -- heartbeat -------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        while True:
            state = await self.broker.log_state()
            sent = self._source_position if not self._inflight else None
            await self.channel.send(
                wire.control(
                    wire.HEAD,
                    {
                        "head": self.broker.end_offset,
                        "first": state.first_offset,
                        "sent": sent,
                        "time": self.broker.clock(),
                    },
                )
            )
            await trio.sleep(self.heartbeat_seconds)

    def wanted(self, filters: tuple[str, ...]) -> list[str]:
        """The live interest within ``filters`` (the dialer's pull, or on the remote
        the dialer's push), in the remote's names."""
        wanted = self.mesh.interest_for(self, filters)
        if self.link is not None and self.link.remapped:
            wanted = sorted({r for w in wanted if (r := self.link.to_remote(w)) is not None})
        return wanted

    async def advertise_now(self, filters: tuple[str, ...]) -> None:
        """Send the live interest within ``filters`` if it changed since last sent."""
        wanted = self.wanted(filters)
        if wanted != self._advertised:
            await self.channel.send(wire.control(wire.INTEREST, {"filters": wanted}))
            self.advertised(wanted)

    def advertised(self, wanted: list[str]) -> None:
        """``wanted`` is the interest the peer has from this side now."""
        self._advertised = wanted
        if self.link is not None:
            self.status.interest = wanted  # the dialer's, for its pull
        else:
            self.status.push_interest = wanted  # the remote's, for the dialer's push

    async def _advertise(self, filters: tuple[str, ...]) -> None:
        """Keep the advertised interest current (subscriptions come and go)."""
        while True:
            await self.advertise_now(filters)
            await trio.sleep(INTEREST_POLL_SECONDS)

    async def send_nodes(self, nodes: list[str]) -> None:
        if nodes != self.sent_nodes:
            self.sent_nodes = nodes
            await self.channel.send(wire.control(wire.NODES, {"nodes": nodes}))


_TOPIC = attrgetter("topic")
_PROVENANCE = attrgetter("provenance")


def _admitted(
    candidates: list[Event],
    route: Route,
    passes: dict[str, bool],
    access: Access | None,
    rename: Callable[[str], str | None] | None,
    interest: list[Matcher] | None,
) -> list[Event]:
    """The ``candidates`` a source sends: their topic passes (:func:`_passes`, and the
    route's filters; asked once per topic, kept in ``passes``) and the route admits
    them. Per topic, not per event: a batch repeats a few topics, and the usual live
    batch (every topic passes, no event came over a link or a bridge: no provenance
    but an MQTT publish's) is taken whole."""

    def passing(topic: str) -> bool:
        passed = passes.get(topic)
        if passed is None:
            passed = route.matches(topic) and _passes(topic, access, rename, interest)
            if len(passes) < MATCH_CACHE_TOPICS:
                passes[topic] = passed
        return passed

    if all(map(passing, set(map(_TOPIC, candidates)))):
        pool = candidates
    else:
        pool = [e for e in candidates if passing(e.topic)]
    if not any(map(_PROVENANCE, pool)):
        return pool  # all published here (route.admits takes each)
    return [e for e in pool if route.admits(e)]


def _passes(
    topic: str,
    access: Access | None,
    rename: Callable[[str], str | None] | None,
    interest: list[Matcher] | None,
) -> bool:
    """Whether a source may send an event on ``topic``: the peer's link right, a name
    under the link's prefixes and the peer's live interest in that name."""
    if access is not None and not access.allows(Right.LINK, topic):
        return False
    name = topic if rename is None else rename(topic)
    return name is not None and (interest is None or any(match(name) for match in interest))


def _renamed(events: list[NewEvent], rename: Callable[[str], str | None]) -> list[NewEvent]:
    """``events`` under the names ``rename`` gives them (an event without one is
    dropped: the parent level of a prefix, which has no name on this side); a renamed
    event is encoded anew when appended (its record names the old topic)."""
    out = []
    for e in events:
        topic = rename(e.topic)
        if topic is not None:
            out.append(NewEvent(topic, e.payload, e.qos, e.retain, e.properties, e.provenance))
    return out


def _reason(text: str) -> Any:
    from tidelog.protocols.mqtt.properties import Properties

    return Properties(reason_string=text[:200])
