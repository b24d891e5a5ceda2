"""Fan-out: committed events to feeds, with bounded memory and catch-up from the log.

A :class:`Feed` is one consumer's stream (a Python subscriber, an MQTT
connection, a shared-subscription group). It owns subscriptions (topic
filters); the :class:`FanOut` keeps every subscription in a trie and, after each
commit, appends each event once to every *live* feed with a matching
subscription, carrying all of that feed's matching subscriptions (so
overlapping subscriptions give one delivery).

Theory of operation — the one invariant that makes handoffs exact:

* ``FanOut.dispatched_end`` is the offset after the last event fanned out.
  Commits are fanned out in offset order, on the trio thread, by the single
  writer.
* Each feed has a ``fence``: every event below it has been handled for this
  feed (buffered, read from the log, or known not to match). Dispatch gives a
  feed only events at or above its fence and moves the fence past them.
* A live feed whose buffer is full stops being live; its fence stays at the
  first event it did not take. The consumer drains the buffer, then reads the
  log from the fence (*catch-up*), advancing the fence, until the fence is at
  or past ``dispatched_end``; at that moment, with no await in between, the
  feed is live again. Events committed but not yet fanned out may already
  have been read; the fence makes their later dispatch skip them.

So a feed sees every matching event exactly once, in offset order, whether it
was live, behind, or started in the past (replay-then-live is a feed that
starts in catch-up at an old offset). Memory per feed is bounded by
``max_events``/``max_bytes`` whatever the consumer does.
"""

from __future__ import annotations

import heapq
import itertools
import operator
from collections.abc import Callable
from typing import Any

import trio

from tidelog.engine.trie import SubscriptionTrie
from tidelog.errors import LogClosedError
from tidelog.storage import Event, EventLog
from tidelog.storage.base import Clock, wall_clock_ms
from tidelog.topics import compile_filter

Delivery = tuple[Event, tuple["FeedSubscription", ...]]
"""An event and every subscription of the feed it matched."""

_TOPIC = operator.attrgetter("topic")
_PROPERTIES = operator.attrgetter("properties")


def _offset(delivery: Delivery) -> int:
    return delivery[0].offset


DEFAULT_FEED_MAX_EVENTS = 10_000
DEFAULT_FEED_MAX_BYTES = 16 * 1024 * 1024


class FeedSubscription:
    """One topic filter of a feed, with options the protocol layer owns.

    ``created_offset``: events below it are never delivered through this
    subscription (a subscription added to a persistent session does not
    receive history from before it existed, even when the session catches up).
    """

    __slots__ = ("created_offset", "feed", "matches", "options", "topic_filter")

    def __init__(self, feed: Feed, topic_filter: str, options: Any, created_offset: int) -> None:
        self.feed = feed
        self.topic_filter = topic_filter
        self.options = options
        self.created_offset = created_offset
        self.matches = compile_filter(topic_filter)

    def __repr__(self) -> str:
        return f"FeedSubscription({self.topic_filter!r}, from={self.created_offset})"


class Feed:
    """A bounded stream of deliveries for one consumer (or one shared group).

    Consume with :meth:`receive` (waits) or :meth:`receive_nowait`; several
    tasks may consume one feed (shared subscriptions), each delivery goes to
    one of them. ``on_ready`` (optional) is called whenever the feed may have
    something to receive, for consumers that wait on several sources.
    """

    def __init__(
        self,
        fanout: FanOut,
        fence: int,
        *,
        live: bool,
        max_events: int = DEFAULT_FEED_MAX_EVENTS,
        max_bytes: int = DEFAULT_FEED_MAX_BYTES,
        on_ready: Callable[[], None] | None = None,
        name: str = "",
    ) -> None:
        self.name = name
        self.fence = fence
        self.live = live
        self.subscriptions: dict[str, FeedSubscription] = {}
        self.on_ready = on_ready
        self._fanout = fanout
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._buffer: list[Delivery] = []
        self._buffer_bytes = 0
        self._lot = trio.lowlevel.ParkingLot()
        self._catch_up_lock = trio.Lock()
        self._closed = False
        self.catch_ups = 0  # times this feed fell behind and read from the log
        self.delivered = 0
        self.holders: dict[object, Callable[[], int | None]] = {}
        """Consumers that take deliveries and finish them later (shared-group members):
        each returns the lowest offset it took and has not finished, None if none
        (:attr:`unfinished_from`)."""
        self.accept: Callable[[int], bool] | None = None
        """If set, only events at offsets it accepts are delivered (a cluster-wide shared
        group: the events this node owns, :mod:`tidelog.engine.shares`)."""

    # -- subscriptions -------------------------------------------------------------

    def subscribe(
        self, topic_filter: str, options: Any = None, *, since: int | None = None
    ) -> FeedSubscription:
        """Add a subscription matching events from offset ``since`` on (default: from
        now, i.e. what is fanned out next). Re-subscribing the same filter replaces
        its options and keeps its creation offset unless ``since`` is given."""
        existing = self.subscriptions.get(topic_filter)
        if existing is not None and since is None:
            existing.options = options
            return existing
        if existing is not None:
            self._fanout._remove(existing)
        created = self._fanout.dispatched_end if since is None else since
        sub = FeedSubscription(self, topic_filter, options, created)
        self.subscriptions[topic_filter] = sub
        self._fanout._add(sub)
        return sub

    def unsubscribe(self, topic_filter: str) -> bool:
        sub = self.subscriptions.pop(topic_filter, None)
        if sub is None:
            return False
        self._fanout._remove(sub)
        return True

    # -- consuming -----------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Deliveries buffered now (not counting what catch-up will read)."""
        return len(self._buffer)

    @property
    def handled_end(self) -> int:
        """Every event below this offset was taken by the consumer or does not match.

        A persistent consumer that saves its position uses this (together with
        what it took but has not yet finished) as the point to resume from.
        """
        if self._buffer:
            return self._buffer[0][0].offset
        if self.live:
            return max(self.fence, self._fanout.dispatched_end)
        return self.fence

    @property
    def unfinished_from(self) -> int:
        """Every event below this offset was finished by a consumer (a shared-group
        member acknowledged it) or does not match: :attr:`handled_end`, or lower while a
        holder still has a delivery unfinished. What to hand to others if they go."""
        end = self.handled_end
        for held in self.holders.values():
            lowest = held()
            if lowest is not None and lowest < end:
                end = lowest
        return end

    @property
    def ready(self) -> bool:
        """True if :meth:`receive` would not wait for new events."""
        return bool(self._buffer) or not self.live or self._closed

    def receive_nowait(self, max_events: int = 1000) -> list[Delivery]:
        """Buffered deliveries, up to ``max_events`` (never reads the log)."""
        if not self._buffer:
            return []
        if len(self._buffer) <= max_events:
            taken, self._buffer = self._buffer, []
            self._buffer_bytes = 0
        else:
            taken = self._buffer[:max_events]
            del self._buffer[:max_events]
            self._buffer_bytes = max(0, self._buffer_bytes - sum(len(e.payload) for e, _ in taken))
        return self._unexpired(taken)

    async def receive(self, max_events: int = 1000) -> list[Delivery]:
        """Wait for deliveries and return up to ``max_events`` of them, oldest first.

        Raises :class:`LogClosedError` once the feed is closed and drained.
        """
        while True:
            if self._buffer:
                taken = self.receive_nowait(max_events)
                if taken:
                    return taken
                continue
            if self._closed:
                raise LogClosedError("the feed is closed")
            if not self.live:
                taken = await self._catch_up(max_events)
                if taken:
                    return taken
                continue
            await self._lot.park()

    def requeue(self, deliveries: list[Delivery]) -> None:
        """Put deliveries a consumer took but could not hand on back into the buffer
        (a shared-group member that left, a hand-back's page), merged by offset so the
        buffer stays in log order: :attr:`handled_end` (the position a shared group
        hands back from) reads its first entry. Deliveries all below the buffer's first
        are put in front as given (retained messages keep their order). May exceed the
        bound by their number."""
        if deliveries:
            if self._buffer and max(_offset(d) for d in deliveries) > _offset(self._buffer[0]):
                ordered = sorted(deliveries, key=_offset)
                self._buffer = list(heapq.merge(ordered, self._buffer, key=_offset))
            else:
                self._buffer[:0] = deliveries
            self._buffer_bytes += sum(len(e.payload) for e, _ in deliveries)
            self._wake()

    def close(self) -> None:
        """Remove every subscription and wake consumers (who get LogClosedError)."""
        for sub in list(self.subscriptions.values()):
            self._fanout._remove(sub)
        self.subscriptions.clear()
        self._fanout._feeds.discard(self)
        self._closed = True
        self._wake()

    # -- internals -----------------------------------------------------------------

    def _wake(self) -> None:
        self._lot.unpark_all()
        if self.on_ready is not None:
            self.on_ready()

    def _fall_behind(self) -> None:
        """The buffer is full: stop being live; the consumer catches up from the log."""
        self.live = False
        self.catch_ups += 1
        self._fanout.catch_ups += 1

    def _unexpired(self, deliveries: list[Delivery]) -> list[Delivery]:
        """Drop events whose MQTT message expiry has passed (most carry no expiry)."""
        now: int | None = None
        out: list[Delivery] = []
        for delivery in deliveries:
            props = delivery[0].properties
            if props is not None and props.message_expiry is not None:
                now = now or self._fanout.clock()
                if _expired(delivery[0], now):
                    continue
            out.append(delivery)
        self.delivered += len(out)
        return out

    def _match(self, event: Event) -> tuple[FeedSubscription, ...]:
        return tuple(
            sub
            for sub in self.subscriptions.values()
            if event.offset >= sub.created_offset and sub.matches(event.topic)
        )

    async def _catch_up(self, max_events: int) -> list[Delivery]:
        """Read the log from the fence; go live when the fence reaches dispatched_end."""
        async with self._catch_up_lock:
            if self.live or self._buffer:
                return []
            fanout = self._fanout
            subs = list(self.subscriptions.values())
            if not subs:  # nothing to match: skip straight to the live position
                self.fence = max(self.fence, fanout.dispatched_end)
                self.live = not self._closed
                return []
            topic_filter = subs[0].topic_filter if len(subs) == 1 else None
            result = await fanout.log.read(self.fence, topic_filter, limit=max_events)
            events = result.events
            if events and events[0].offset < self.fence:  # the fence moved during the read
                events = [event for event in events if event.offset >= self.fence]
            # the subscriptions as they are now: they may have changed during the read
            taken = self._match_page(events, list(self.subscriptions.values()))
            if self.accept is not None:
                accept = self.accept
                taken = [delivery for delivery in taken if accept(delivery[0].offset)]
            self.fence = max(self.fence, result.next_offset)
            if self.fence >= fanout.dispatched_end and not self._closed:
                self.live = True  # no await since the check: nothing can slip between
            if any(map(_PROPERTIES, events)):  # else no event can have expired
                return self._unexpired(taken)
            self.delivered += len(taken)
            return taken

    def _match_page(self, events: list[Event], subs: list[FeedSubscription]) -> list[Delivery]:
        """Deliveries for a page of events read from the log (ascending offsets).

        Matches each distinct topic of the page once, not each event: a page holds
        thousands of events on a few topics. When every event of the page matches
        the same subscriptions (one subscription, or a filter the log already
        applied), the deliveries are built without a Python-level loop.
        """
        if not events:
            return []
        if any(sub.created_offset > events[0].offset for sub in subs):
            # A subscription created after part of the page: check offsets per event.
            return [(event, matched) for event in events if (matched := self._match(event))]
        by_topic = {
            topic: tuple(sub for sub in subs if sub.matches(topic))
            for topic in set(map(_TOPIC, events))
        }
        routes = set(by_topic.values())
        if len(routes) == 1:
            (matched,) = routes
            return list(zip(events, itertools.repeat(matched))) if matched else []
        return [(event, matched) for event in events if (matched := by_topic[event.topic])]


def _expired(event: Event, now: int) -> bool:
    props = event.properties
    return (
        props is not None
        and props.message_expiry is not None
        and event.timestamp + props.message_expiry * 1000 <= now
    )


class FanOut:
    """Routes committed events to feeds. One per broker."""

    def __init__(self, log: EventLog, dispatched_end: int, clock: Clock = wall_clock_ms) -> None:
        self.log = log
        self.clock = clock
        """The broker's clock (ms since the epoch): message expiry is measured on it."""
        self.dispatched_end = dispatched_end
        self._trie: SubscriptionTrie[FeedSubscription] = SubscriptionTrie()
        self._feeds: set[Feed] = set()
        self._routes: dict[str, list[tuple[Feed, tuple[FeedSubscription, ...]]]] = {}
        self.deliveries = 0
        """Events handed to live feeds (catch-up reads from the log are not counted)."""
        self.delivered_bytes = 0
        """Their payload bytes."""
        self.catch_ups = 0
        """Times a feed fell behind (its buffer was full) and switched to reading the log."""

    def open_feed(
        self,
        *,
        start: int | None = None,
        max_events: int = DEFAULT_FEED_MAX_EVENTS,
        max_bytes: int = DEFAULT_FEED_MAX_BYTES,
        on_ready: Callable[[], None] | None = None,
        name: str = "",
    ) -> Feed:
        """A new feed, live from now (``start=None``) or catching up from ``start``."""
        live = start is None or start >= self.dispatched_end
        fence = self.dispatched_end if start is None else start
        feed = Feed(
            self,
            fence,
            live=live,
            max_events=max_events,
            max_bytes=max_bytes,
            on_ready=on_ready,
            name=name,
        )
        self._feeds.add(feed)
        return feed

    @property
    def feeds(self) -> frozenset[Feed]:
        return frozenset(self._feeds)

    @property
    def subscription_count(self) -> int:
        return len(self._trie)

    def subscription_filters(self) -> set[str]:
        """Every filter a live subscription uses (shared ones by their inner filter)."""
        return {topic_filter for topic_filter, _ in self._trie.filters()}

    def _add(self, sub: FeedSubscription) -> None:
        self._trie.add(sub.topic_filter, sub)
        self._routes.clear()

    def _remove(self, sub: FeedSubscription) -> None:
        self._trie.remove(sub.topic_filter, sub)
        self._routes.clear()

    def _route(self, topic: str) -> list[tuple[Feed, tuple[FeedSubscription, ...]]]:
        by_feed: dict[Feed, list[FeedSubscription]] = {}
        for sub in self._trie.match(topic):
            by_feed.setdefault(sub.feed, []).append(sub)
        route = [(feed, tuple(subs)) for feed, subs in by_feed.items()]
        if len(self._routes) >= 100_000:
            self._routes.clear()
        self._routes[topic] = route
        return route

    def dispatch(self, events: list[Event]) -> None:
        """Fan out one committed batch (called by the writer, in offset order). Without
        any subscription no event goes anywhere: the batch costs nothing per event (a
        link's receiver or an origin nobody reads live)."""
        if not events:
            return
        if not self._trie:
            self.dispatched_end = events[-1].offset + 1
            return
        routes = self._routes
        touched: set[Feed] = set()
        count = 0
        size = 0
        for event in events:
            route = routes.get(event.topic)
            if route is None:
                route = self._route(event.topic)
            if not route:
                continue
            taken = 0
            offset = event.offset
            payload_size = len(event.payload)
            for feed, subs in route:
                if not feed.live or offset < feed.fence:
                    continue
                if feed.accept is not None and not feed.accept(offset):
                    feed.fence = offset + 1  # another node's event (shared group)
                    continue
                touched.add(feed)
                # Feed._offer inlined: this loop runs once per event and matching feed
                buffer = feed._buffer
                if len(buffer) >= feed._max_events or feed._buffer_bytes >= feed._max_bytes:
                    feed._fall_behind()
                    continue
                buffer.append((event, subs))
                feed._buffer_bytes += payload_size
                feed.fence = offset + 1
                taken += 1
            count += taken
            size += taken * payload_size
        self.dispatched_end = events[-1].offset + 1
        self.deliveries += count
        self.delivered_bytes += size
        for feed in touched:
            feed._wake()
