"""Delivery planning: which queued deliveries become which outgoing PUBLISHes.

A connection's deliveries wait in :attr:`Planner.ready` as ``(event,
subscriptions, source)``; :meth:`Planner.emit` turns as many as the client's
Receive Maximum and the send budget allow into PUBLISH bytes, in order:

1. a delivery of the main feed below ``resume_end`` is a resume: sent again
   with DUP and its stored packet identifier if it was in flight, skipped if it
   was delivered before the client went away;
2. otherwise :meth:`Planner.plan` decides it: the one place every fresh
   delivery passes (per-topic ACL, No Local, QoS downgrade, Retain As
   Published, subscription identifiers); a resend passes its ACL check
   (:meth:`Planner.permit`) first like any other delivery; an expired message
   is dropped there;
3. topic aliases are assigned, and the PUBLISH is built from bytes shared by
   every subscriber where it can be (3.x, or MQTT 5 without per-subscriber
   properties), or its own otherwise; one over the client's Maximum Packet Size
   is dropped as if sent (§3.1.2.11.4).

No I/O, no trio: the shell sends what :meth:`emit` returns.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from tidelog.engine.fanout import FeedSubscription
from tidelog.protocols.mqtt.admission import Limits
from tidelog.protocols.mqtt.outbound import (
    EMPTY_TOPIC,
    chunks_size,
    delivery_properties,
    expired,
    publish_chunks,
    shared_head,
    shared_qos0,
    topic_part,
)
from tidelog.protocols.mqtt.protocol import MAX_PACKET_ID
from tidelog.protocols.mqtt.stored_session import SubOptions
from tidelog.protocols.mqtt.wire import U16
from tidelog.security import Access, Right
from tidelog.storage import Event
from tidelog.storage.base import Clock, wall_clock_ms

if TYPE_CHECKING:
    from tidelog.engine.consumers import ConsumerGroup
    from tidelog.engine.fanout import Feed

# where a delivery comes from
MAIN, SHARED, REPLAY, RETAINED = 0, 1, 2, 3
# outbound QoS 1/2 states
PUB, REL = 1, 2

OWN_OFFSETS: Final = 65_536
"""Offsets of its own publishes a connection remembers for No Local."""
_NO_OFFSETS: Final[frozenset[int]] = frozenset()


class Source:
    """Where deliveries come from: the main feed, a shared or replay subscription's
    feed, or retained messages sent on subscribe. ``options`` is set when the feed's
    own subscription options are not the connection's (shared groups). ``scope`` is
    the shell's (the cancel scope of the source's pump, once it runs).

    A durable shared subscription has no feed but a ``consumer`` (the engine's
    consumer group of its cursor): its deliveries are leased to ``member``, and the
    offsets this connection finished wait in ``settled`` until the shell
    acknowledges them to the group (:meth:`Planner.settle`)."""

    __slots__ = (
        "consumer",
        "feed",
        "group",
        "inner",
        "key",
        "kind",
        "left",
        "member",
        "options",
        "refused",
        "scope",
        "settled",
    )

    def __init__(
        self,
        kind: int,
        feed: Feed | None = None,
        options: SubOptions | None = None,
        key: str = "",
        group: str = "",
        inner: str = "",
        consumer: ConsumerGroup | None = None,
        member: str = "",
    ) -> None:
        self.kind = kind
        self.feed = feed
        self.options = options
        self.key = key
        self.group = group
        self.inner = inner
        self.scope: Any = None
        self.consumer = consumer
        self.member = member
        self.settled: list[int] = NO_IDS
        self.refused: list[int] = NO_IDS
        """Offsets too large for this client, to give back to the group."""
        self.left = False
        """The subscription ended: what its pump still fetches goes back to the group."""


Ready = tuple[Event, tuple[FeedSubscription, ...], Source]


class _NoDeliveries(deque[Ready]):
    """The ready queue of a connection that has not queued anything yet: empty and
    shared (a deque costs 760 bytes; most idle connections never need one). Adding
    to it is a bug, so it fails loudly instead of dropping."""

    def append(self, item: Ready) -> None:
        raise RuntimeError("NO_DELIVERIES is shared: give the connection its own deque")

    def extend(self, items: Any) -> None:
        raise RuntimeError("NO_DELIVERIES is shared: give the connection its own deque")


NO_DELIVERIES: Final = _NoDeliveries()


class _Empty(dict[Any, Any]):
    """An empty dict shared by every connection that has nothing in it (an empty dict
    costs 64 bytes, times several per idle connection). Reading it is fine; a
    connection replaces it with its own dict before it writes (writing it fails)."""

    def __setitem__(self, key: Any, value: Any) -> None:
        raise RuntimeError("EMPTY is shared: give the connection its own dict")

    def setdefault(self, key: Any, default: Any = None) -> Any:
        raise RuntimeError("EMPTY is shared: give the connection its own dict")

    def update(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("EMPTY is shared: give the connection its own dict")


EMPTY: Final[dict[Any, Any]] = _Empty()


class _NoIds(list[int]):
    """An empty list shared by every connection, for lists most never fill (as
    :data:`EMPTY`)."""

    def append(self, item: int) -> None:
        raise RuntimeError("NO_IDS is shared: give the connection its own list")

    def extend(self, items: Any) -> None:
        raise RuntimeError("NO_IDS is shared: give the connection its own list")


NO_IDS: Final[list[int]] = _NoIds()


class Outbound:
    """An outgoing QoS 1/2 message not yet acknowledged."""

    __slots__ = ("delivery", "offset", "packet_id", "qos", "source", "state")

    def __init__(
        self,
        packet_id: int,
        qos: int,
        state: int,
        source: Source | None,
        offset: int,
        delivery: Ready | None = None,
    ) -> None:
        self.packet_id = packet_id
        self.qos = qos
        self.state = state
        self.source = source
        self.offset = offset
        self.delivery = delivery


class Planner:
    """A connection's outgoing side: queued deliveries, messages in flight, aliases."""

    __slots__ = (
        "access",
        "alias_max_out",
        "aliases_out",
        "budget",
        "checked_subs",
        "clock",
        "emitted",
        "level",
        "main",
        "max_packet",
        "next_id",
        "no_local",
        "outstanding",
        "own",
        "own_order",
        "persistent",
        "ready",
        "resume",
        "resume_end",
        "settling",
        "shared_resend",
        "unsaved_qos2",
        "window",
    )

    def __init__(self, access: Access, level: int, limits: Limits, budget: int) -> None:
        self.access = access
        self.level = level
        self.window = limits.window
        self.max_packet = limits.max_packet
        self.alias_max_out = limits.alias_max_out if level == 5 else 0
        self.budget = budget
        """Bytes of PUBLISHes per :meth:`emit` (more when one packet is larger)."""
        self.ready: deque[Ready] = NO_DELIVERIES
        self.outstanding: dict[int, Outbound] = {}
        self.next_id = 1
        self.aliases_out: dict[str, int] = {}
        self.main = Source(MAIN)
        self.resume: dict[int, int] = EMPTY
        """Offset -> packet identifier of main-feed messages in flight when the
        previous connection of the session ended."""
        self.resume_end = 0
        self.shared_resend: dict[tuple[str, int], int] = EMPTY
        """(shared subscription, offset) -> packet identifier of a resumed session's
        shared QoS 2 messages queued to be sent again (with DUP)."""
        self.no_local = 0
        """Subscriptions of the main feed with No Local."""
        self.own: set[int] | frozenset[int] = _NO_OFFSETS
        self.own_order: deque[int] | None = None
        """Created with the first own publish remembered (a deque costs 760 bytes)."""
        self.checked_subs: set[str] | None = None
        """Subscriptions whose events are checked per topic (a deny rule overlaps)."""
        self.emitted = 0
        self.clock: Clock = wall_clock_ms
        """The broker's clock: message expiry is measured on it (the shell sets it)."""
        self.persistent = False
        self.unsaved_qos2 = False
        """A QoS 2 PUBLISH of a persistent session went out: save before sending it."""
        self.settling: list[Source] | None = None
        """Durable shared sources with offsets in ``settled`` (see :meth:`settle`)."""

    retained: Final = Source(RETAINED)
    """The source of retained messages sent on subscribe (no feed; shared)."""

    def own_ready(self) -> deque[Ready]:
        """``ready``, made this planner's own deque if it was the shared empty one."""
        ready = self.ready
        if ready is NO_DELIVERIES:
            ready = self.ready = deque()
        return ready

    def emit(self, chunks: list[bytes]) -> bool:
        """Turn ready deliveries into PUBLISH chunks; True if more could go right away."""
        clock = self.clock
        ready = self.ready
        outstanding = self.outstanding
        room = self.window - len(outstanding)
        budget = self.budget
        size = 0
        level = self.level
        main = self.main
        max_packet = self.max_packet
        while ready:
            event, subs, source = ready[0]
            resent = None
            if source is main and self.resume_end:
                if event.offset < self.resume_end:
                    packet_id = self.resume.pop(event.offset, 0)
                    if not packet_id:  # delivered before the client went away
                        ready.popleft()
                        continue
                    resent = outstanding[packet_id]
                    resent.delivery = ready[0]
                else:
                    self.end_resume()
            elif self.shared_resend and source.kind == SHARED:
                packet_id = self.shared_resend.pop((source.key, event.offset), 0)
                if packet_id:  # a resumed session's shared QoS 2 message ([MQTT-4.8.2-4])
                    resent = outstanding.get(packet_id)
                    if resent is None:  # finished meanwhile
                        ready.popleft()
                        continue
                    resent.delivery = ready[0]
            plan = self.plan(event, subs, source, resent)
            if plan is None:
                ready.popleft()
                if resent is not None:
                    del outstanding[resent.packet_id]
                if source.consumer is not None:  # dropped (expired, ACL): finished
                    self.settle(source, event.offset)
                continue
            qos, retain, ids = plan
            dup = resent is not None
            if resent is not None:
                packet_id = resent.packet_id
            elif qos:
                if room <= 0:
                    return False
                packet_id = self.next_free_id()
            else:
                packet_id = 0
            alias = None
            new_alias = False
            topic = event.topic
            if self.alias_max_out:
                alias = self.aliases_out.get(topic)
                if alias is None and len(self.aliases_out) < self.alias_max_out:
                    alias = len(self.aliases_out) + 1
                    new_alias = True
            packet: Sequence[bytes]
            if not dup and (
                level < 5 or (not ids and alias is None and event.properties is None)
            ):  # the same bytes for every subscriber but the packet identifier
                if qos:
                    head, props, packet_size = shared_head(event, level, qos, retain)
                    id_part = U16.pack(packet_id)
                    packet = (head, id_part + props if props else id_part, event.payload)
                else:
                    packet = shared_qos0(event, level, retain)
                    packet_size = len(packet[0]) + len(packet[1])
            else:
                props = delivery_properties(event, ids, alias, clock) if level == 5 else b""
                name = EMPTY_TOPIC if alias is not None and not new_alias else topic_part(topic)
                packet = publish_chunks(name, event.payload, qos, retain, dup, packet_id, props)
                packet_size = chunks_size(packet)
            if packet_size > max_packet:  # §3.1.2.11.4: discard as if it had been sent
                ready.popleft()
                if dup:
                    del outstanding[packet_id]
                if source.consumer is not None:  # another member may take it
                    self.refuse(source, event.offset)
                continue
            if size and size + packet_size > budget:
                return True
            ready.popleft()
            size += packet_size
            chunks.extend(packet)
            self.emitted += 1
            if new_alias:
                self.aliases_out[topic] = alias  # type: ignore[assignment]
            if qos and not dup:
                outstanding[packet_id] = Outbound(
                    packet_id, qos, PUB, source, event.offset, (event, subs, source)
                )
                if qos == 2 and self.persistent and (source is main or source.kind == SHARED):
                    # main feed and shared groups alike: the stored session must list
                    # it before it goes (a shared one in ``shared``, [MQTT-4.8.2-4])
                    self.unsaved_qos2 = True
                self.next_id = packet_id % MAX_PACKET_ID + 1
                room -= 1
            if source.consumer is not None and not dup and (not qos or self._owns(qos)):
                # QoS 0 is finished once sent; a persistent session's QoS 2 is its own
                # from now on (stored before it goes, completed only with this client)
                self.settle(source, event.offset)
        return False

    def _owns(self, qos: int) -> bool:
        return qos == 2 and self.persistent

    def settle(self, source: Source, offset: int) -> None:
        """A durable shared delivery is finished (acknowledged, refused, dropped, or
        handed to the persistent session): the shell acknowledges it to the group."""
        if source.settled is NO_IDS:
            self._settling(source)
            source.settled = []
        source.settled.append(offset)

    def refuse(self, source: Source, offset: int) -> None:
        """A durable shared delivery is larger than this client's Maximum Packet Size:
        the shell gives it back to the group for a member that can take it."""
        if source.refused is NO_IDS:
            self._settling(source)
            source.refused = []
        source.refused.append(offset)

    def _settling(self, source: Source) -> None:
        if source.settled is NO_IDS and source.refused is NO_IDS:
            if self.settling is None:
                self.settling = []
            self.settling.append(source)

    def take_settled(self) -> list[tuple[Source, list[int], list[int]]]:
        """What :meth:`settle` and :meth:`refuse` collected, by source, for the shell
        to acknowledge and to give back."""
        sources, self.settling = self.settling or [], None
        taken = [(source, source.settled, source.refused) for source in sources]
        for source in sources:
            source.settled = source.refused = NO_IDS
        return taken

    def next_free_id(self) -> int:
        packet_id = self.next_id
        outstanding = self.outstanding
        while packet_id in outstanding:
            packet_id = packet_id % MAX_PACKET_ID + 1
        return packet_id

    def end_resume(self) -> None:
        """The feed is past what the previous connection sent: messages it had in flight
        that never came again (expired, unsubscribed) are finished."""
        for packet_id in self.resume.values():
            self.outstanding.pop(packet_id, None)
        self.resume = EMPTY
        self.resume_end = 0

    def plan(
        self,
        event: Event,
        subs: tuple[FeedSubscription, ...],
        source: Source,
        resent: Outbound | None = None,
    ) -> tuple[int, bool, tuple[int, ...]] | None:
        """QoS, retain flag and subscription identifiers of a delivery; None to skip it.

        Every delivery passes here, resends of a resumed session's messages
        (``resent``) included: this is the place for checks that apply to all. The
        ACL check comes first: a resend is checked against the access of the
        connection that receives it, which may not be the one that sent it first
        (the ACL file changed between connections); a refused resend is dropped, its
        in-flight entry and packet identifier freed by :meth:`emit`."""
        if self.checked_subs and not self.permit(event, source):
            return None
        if resent is not None:  # sent before with this QoS: again, with DUP
            return resent.qos, False, identifiers(subs)
        if event.properties is not None and expired(event, self.clock):
            # [MQTT-3.3.2-5]: not yet sent, so the copy goes (a retained message, or
            # one that waited here for the client's window; feeds drop theirs too)
            return None
        options = source.options
        if options is None:
            if self.no_local and event.offset in self.own:
                subs = tuple(s for s in subs if not s.options.no_local)
                if not subs:
                    return None
            if len(subs) == 1:
                options = subs[0].options
            else:
                granted = max(s.options.qos for s in subs)
                qos = event.qos if event.qos < granted else granted
                retain = source.kind == RETAINED or (
                    event.retain and any(s.options.retain_as_published for s in subs)
                )
                return qos, retain, identifiers(subs)
        elif options.no_local and event.offset in self.own:
            return None
        granted = options.qos
        qos = event.qos if event.qos < granted else granted
        retain = source.kind == RETAINED or (event.retain and options.retain_as_published)
        return qos, retain, (options.identifier,) if options.identifier else ()

    def permit(self, event: Event, source: Source) -> bool:
        """The per-topic ACL check of a delivery (called only while a subscription
        needs it: ``checked_subs``)."""
        right = Right.READ if source.kind == REPLAY else Right.SUBSCRIBE
        return self.access.allows(right, event.topic)

    def check_per_topic(self, key: str, checked: bool) -> None:
        """Mark a subscription as needing a per-topic ACL check of its events (or not);
        the set exists only once one does (most connections never need it)."""
        if checked:
            if self.checked_subs is None:
                self.checked_subs = set()
            self.checked_subs.add(key)
        elif self.checked_subs is not None:
            self.checked_subs.discard(key)

    def remember_own(self, offset: int) -> None:
        """An offset this connection published (for its No Local subscriptions)."""
        own, order = self.own, self.own_order
        if order is None:  # the first one: the set and its order are made together
            own, order = self.own, self.own_order = set(), deque()
        assert isinstance(own, set)
        own.add(offset)
        order.append(offset)
        if len(order) > OWN_OFFSETS:
            own.discard(order.popleft())

    def forget_source(self, source: Source) -> None:
        """Drop a closed source's queued deliveries and in-flight QoS 1 messages."""
        if any(src is source for _, _, src in self.ready):
            self.ready = deque(d for d in self.ready if d[2] is not source)  # never empty
        for entry in list(self.outstanding.values()):
            if entry.source is source and entry.state == PUB:
                del self.outstanding[entry.packet_id]

    def lowest_unfinished(self, source: Source) -> int | None:
        """The lowest offset among :meth:`unfinished` (None: none)."""
        return min((event.offset for event, _ in self.unfinished(source)), default=None)

    def unfinished(self, source: Source) -> list[tuple[Event, tuple[FeedSubscription, ...]]]:
        """What a source's deliveries this connection took but did not finish."""
        unfinished = [(e, s) for e, s, src in self.ready if src is source]
        for entry in self.outstanding.values():
            if entry.source is source and entry.state == PUB and entry.delivery is not None:
                unfinished.append((entry.delivery[0], entry.delivery[1]))
        return unfinished


def identifiers(subs: tuple[FeedSubscription, ...]) -> tuple[int, ...]:
    """The subscription identifiers of a delivery matching ``subs``, sorted."""
    return tuple(sorted({s.options.identifier for s in subs if s.options.identifier}))
