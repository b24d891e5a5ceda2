"""The broker: the engine's public face, usable embedded without any listener.

    async with tidelog.open("lmdb://./tidelog-data") as broker:
        await broker.publish("devices/42/temp", b"21.5", qos=1)
        async with broker.subscribe("devices/+/temp", start="earliest") as events:
            async for event in events:
                ...

Everything that is broker behaviour lives here, once, so the protocol adapters
(MQTT, REST, WebSocket) only translate: publishing goes through one
group-commit writer (:mod:`tidelog.engine.group_commit`), committed batches are
fanned out to feeds (:mod:`tidelog.engine.fanout`) and applied to retained
messages; cursors, sessions and wills hang off the same broker.
"""

from __future__ import annotations

import contextlib
import logging
import operator
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import attrs
import trio

from tidelog.concurrency import background_nursery
from tidelog.engine.cluster import ClusterRegistry
from tidelog.engine.consumers import (
    ConsumerGroup,
    ConsumerGroups,
    ConsumerOptions,
    share_cursor_name,
    share_options,
)
from tidelog.engine.cursors import Cursor, split_stored_name, stored_name, stored_options
from tidelog.engine.fanout import (
    DEFAULT_FEED_MAX_BYTES,
    DEFAULT_FEED_MAX_EVENTS,
    FanOut,
    Feed,
)
from tidelog.engine.group_commit import Callback, GroupCommitWriter, WriterStatistics
from tidelog.engine.positions import LATEST, PositionLike, parse_position, resolve_position
from tidelog.engine.retained import RetainedStore
from tidelog.engine.sessions import SessionStore
from tidelog.engine.shares import ClusterShares
from tidelog.engine.state_writer import StateWriter
from tidelog.engine.wills import WillStore
from tidelog.errors import (
    CursorExistsError,
    CursorNotFoundError,
    InvalidCursorNameError,
    InvalidTopicError,
    LogClosedError,
    OffsetOutOfRangeError,
    StorageError,
)
from tidelog.storage import (
    DEFAULT_URL,
    CursorState,
    Event,
    EventLog,
    LogState,
    LogStatistics,
    NewEvent,
    Properties,
    ReadResult,
    TopicInfo,
    open_log,
)
from tidelog.storage.base import DEFAULT_READ_MAX_BYTES, Clock, wall_clock_ms
from tidelog.topics import parse_shared, validate_topic_filter, validate_topic_name

log = logging.getLogger(__name__)
_EVENT = operator.itemgetter(0)
"""The event of a delivery ``(event, subscriptions)``."""
_TOPIC = operator.attrgetter("topic")
_QOS = operator.attrgetter("qos")
_QOS_LEVELS = frozenset((0, 1, 2))
_valid_topics: set[str] = set()
"""Topic names already validated (bounded): a publisher repeats a few topics, and
validating one costs more than the set lookup."""
COUNT_PAGE_EVENTS = 10_000
"""Events per read when :meth:`Broker.count` pages through the log."""


@attrs.frozen
class BrokerOptions:
    """Engine settings (storage settings go to the log)."""

    feed_max_events: int = DEFAULT_FEED_MAX_EVENTS
    """Deliveries a subscriber may have buffered before it reads from the log instead."""
    feed_max_bytes: int = DEFAULT_FEED_MAX_BYTES
    max_batch_events: int = 20_000
    """The most events one group commit holds."""
    max_batch_bytes: int = 32 * 1024 * 1024
    max_pending_bytes: int = 128 * 1024 * 1024
    """Publishers wait (back-pressure) while this much waits to be committed."""
    retained_flush_seconds: float = 1.0
    session_expiry_check_seconds: float = 1.0
    """How often expired sessions are deleted, and the longest a will waiting for its
    delay goes without re-reading the broker's clock."""


@attrs.frozen
class BrokerStatistics:
    """A snapshot for metrics and ``/v1/stats``."""

    published: int
    deliveries: int
    delivered_bytes: int
    catch_ups: int
    """Times a subscriber fell behind and switched to reading the log."""
    feeds: int
    feeds_catching_up: int
    waiting_reads: int
    """Reads long-polling for a first event (REST long-polls, cursor fetches that wait)."""
    subscriptions: int
    retained: int
    sessions: int
    end_offset: int
    topic_counts: dict[str, int]
    writer: WriterStatistics
    log: LogStatistics


class Subscriber:
    """What :meth:`Broker.subscribe` yields: an async iterator of events.

    ``async for event in subscriber`` yields events one at a time;
    :meth:`receive_batch` returns what is ready at once (cheaper per event).
    """

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self._ready: deque[Event] = deque()

    async def receive_batch(self, max_events: int = 1000) -> list[Event]:
        """Wait for events and return up to ``max_events`` of them."""
        if self._ready:
            count = min(max_events, len(self._ready))
            return [self._ready.popleft() for _ in range(count)]
        return list(map(_EVENT, await self.feed.receive(max_events)))

    def __aiter__(self) -> Subscriber:
        return self

    async def __anext__(self) -> Event:
        if not self._ready:
            try:
                self._ready.extend(map(_EVENT, await self.feed.receive()))
            except LogClosedError:
                raise StopAsyncIteration from None
        return self._ready.popleft()


class Broker:
    """An open broker. Create with :func:`open_broker` (``tidelog.open``)."""

    def __init__(
        self,
        log: EventLog,
        nursery: trio.Nursery,
        options: BrokerOptions,
        clock: Clock = wall_clock_ms,
    ) -> None:
        self.log = log
        self.options = options
        self.clock = clock
        """Now, in ms since the epoch: the log's clock (event timestamps, retention),
        which session expiry, message expiry and will delays are measured on. Tests
        pass a clock they move by hand (``tidelog.open(url, clock=...)``)."""
        self._nursery = nursery
        self.fanout = FanOut(log, 0, clock)
        self.retained = RetainedStore(log)
        self._state_writer = StateWriter(log)
        self.sessions = SessionStore(log, self._state_writer, clock)
        self.consumers = ConsumerGroups(self, self._state_writer)
        """The explicit cursors' groups (:mod:`tidelog.engine.consumers`)."""
        self._writer = GroupCommitWriter(
            log,
            self._on_commit,
            max_batch_events=options.max_batch_events,
            max_batch_bytes=options.max_batch_bytes,
            max_pending_bytes=options.max_pending_bytes,
        )
        self.cluster = ClusterRegistry(log, self._state_writer, clock, self.publish_many)
        """The nodes serving this log (several on a shared log: ``kafka://``)."""
        self.wills = WillStore(
            log,
            self._state_writer,
            nursery,
            self.publish_many,
            clock,
            recheck=options.session_expiry_check_seconds,
            node=lambda: self.cluster.node_id,
            claims=self.cluster.claims,
        )
        self._follow_scope = trio.CancelScope()
        self._claims_scope = trio.CancelScope()
        self._shared: dict[tuple[str, str], tuple[Feed, list[int]]] = {}
        self._adopted_shares: set[str] = set()
        """Durable shared subscriptions' cursors whose stale leases this process ended."""
        self.shares = ClusterShares(log, nursery, self.publish_nowait)
        """On a shared log: which node delivers each event of a shared group."""
        self._recordless: dict[str, int] = {}
        self._willless: set[str] = set()
        """Nodes with pending wills waiting on them and no record at the last pass."""
        self._topic_counts: Counter[str] = Counter()
        self._commit_hooks: list[Callable[[list[Event]], None]] = []
        self._waiting_reads = 0
        self.closed = False

    # -- lifecycle -------------------------------------------------------------------

    async def _start(self) -> None:
        end = (await self.log.state()).next_offset
        self.fanout.dispatched_end = end
        await self.retained.load(end)
        await self.sessions.load()
        self._nursery.start_soon(self._writer.run)
        self._nursery.start_soon(self._state_writer.run)
        if self.log.shared:
            await self.shares.load(end)
            self._nursery.start_soon(self._follow_log)
            self._nursery.start_soon(self._serve_claims)
        else:  # a shared log's node loads its own once its id is known (tidelog/node.py)
            await self.wills.load()

    async def _run_periodic(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.retained.run_flusher, self.options.retained_flush_seconds)
            nursery.start_soon(self.sessions.run_expiry, self.options.session_expiry_check_seconds)
            task_status.started(nursery.cancel_scope)

    async def _shutdown(self, periodic: trio.CancelScope) -> None:
        """Stop taking publishes, commit what is queued, persist state, stop tasks."""
        self.shares.leave_all()  # while publishes are taken: the leaves are committed
        self.closed = True
        self.wills.close()
        self._writer.close()
        await self._writer.wait_idle()
        self._follow_scope.cancel()
        self._claims_scope.cancel()
        periodic.cancel()
        await self.retained.flush()
        self._state_writer.close()
        for feed in list(self.fanout.feeds):
            feed.close()

    # -- publishing ------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> Event:
        """Publish one event; returns it stored (with offset and timestamp) once durable."""
        return (await self.publish_many([NewEvent(topic, payload, qos, retain, properties)]))[0]

    async def publish_many(self, events: Sequence[NewEvent]) -> list[Event]:
        """Publish a batch in one durable commit (all or nothing); returns them stored."""
        self._check_events(events)
        return await self._writer.submit(events)

    def publish_nowait(self, events: Sequence[NewEvent], callback: Callback) -> None:
        """For protocol adapters: queue a batch; ``callback`` gets the stored events once
        durable, or the exception that refused them. Validation errors raise at once."""
        self._check_events(events)
        self._writer.submit_nowait(events, callback)

    async def wait_writable(self) -> None:
        """Back-pressure: wait while too much is queued for commit."""
        await self._writer.wait_writable()

    def _check_events(self, events: Sequence[NewEvent]) -> None:
        if self.closed:
            raise LogClosedError("the broker is shutting down")
        valid = _valid_topics
        try:  # the usual batch, every topic seen before: two passes in C, no loop here
            if valid.issuperset(map(_TOPIC, events)) and _QOS_LEVELS.issuperset(map(_QOS, events)):
                return
        except TypeError:  # something unhashable: the loop names what is wrong
            pass
        for event in events:
            topic = event.topic
            if topic not in valid:
                validate_topic_name(topic)
                if len(valid) < 100_000:
                    valid.add(topic)
            if event.qos not in (0, 1, 2):
                raise ValueError(f"qos must be 0, 1 or 2, not {event.qos!r}")

    def add_commit_hook(self, hook: Callable[[list[Event]], None]) -> None:
        """Call ``hook(events)`` after every commit, after fan-out (e.g. metrics)."""
        self._commit_hooks.append(hook)

    def remove_commit_hook(self, hook: Callable[[list[Event]], None]) -> None:
        """Stop calling ``hook`` (added by :meth:`add_commit_hook`; absent: nothing)."""
        with contextlib.suppress(ValueError):
            self._commit_hooks.remove(hook)

    def _on_commit(self, events: list[Event]) -> None:
        if not self.log.shared:
            self._route(events)
        # a shared log: _follow_log routes every node's events, these included, in log order

    async def _follow_log(self) -> None:
        """On a shared log (other nodes append too), route events from the log's head in
        offset order, whichever node appended them: fan-out, retained messages, counts."""
        position = self.fanout.dispatched_end
        with self._follow_scope:
            while True:
                try:
                    result = await self.log.read(position, limit=10_000, max_bytes=None)
                    if result.events:
                        self._route(result.events)
                    if result.next_offset == position:
                        await self.log.wait_for_append(position)
                    position = result.next_offset
                except LogClosedError:
                    return
                except StorageError as exc:  # Kafka away: keep trying, the log catches up
                    log.warning("reading the shared log at %d failed (%s); retrying", position, exc)
                    await trio.sleep(1)

    async def _serve_claims(self) -> None:
        """Shared logs: other nodes' takeover requests and answers (engine/cluster.py)."""
        with self._claims_scope:
            async with self.subscribe("$cluster/#", retained=False) as events:
                await self.cluster.run_claims(events)

    async def take_over_dead_nodes(self, *, own: bool = False) -> list[str]:
        """Shared log: take over what nodes that died left behind (if this node is the
        one to, see :meth:`ClusterRegistry.dead_nodes`): leave their shared groups,
        handing their undelivered events to the live members, and publish their
        clients' pending wills when due. ``own``: this node's record from an earlier
        run too (called once at start). Returns the ids taken over."""
        taken = []
        dead, known = await self.cluster.dead_nodes(own=own)
        recordless = self.shares.member_nodes() - known if known else set()
        for node in sorted(recordless & self._recordless.keys()):
            # a member with no record two passes in a row (a node whose leaves were
            # lost while it stopped): hand back from when it was first seen so
            self.shares.leave_for(node, None, self._recordless[node])
            log.warning("node %s has no record: left its shared groups for it", node)
        self._recordless = {
            node: self._recordless.get(node, self.end_offset) for node in recordless
        }
        await self._take_over_recordless_wills(known)
        for record in dead:
            node = str(record["id"])
            groups = self.shares.leave_for(node, record.get("shares"))
            seen = int(record.get("seen_at", self.clock()))
            wills = await self.wills.adopt(node, seen)
            await self.cluster.mark_taken_over(record)
            log.warning(
                "node %s is gone: left its %d shared groups, took %d pending wills over",
                node,
                groups,
                wills,
            )
            taken.append(node)
        return taken

    async def _take_over_recordless_wills(self, known: set[str]) -> None:
        """Take over the wills waiting on a node with no record two passes in a row
        (``known``: the nodes with one, if this node is the one to take over): a node
        that stopped cleanly removed its record but left its delayed wills."""
        orphaned = await self.wills.waiters() - known if known else set()
        for node in sorted(orphaned & self._willless):
            wills = await self.wills.adopt(node, self.clock())
            log.warning("node %s has no record: took its %d pending wills over", node, wills)
        self._willless = orphaned

    def _route(self, events: list[Event]) -> None:
        if self.log.shared:
            self.shares.observe(events)  # membership changes apply from their offset on
        self.fanout.dispatch(events)
        self.retained.apply(events)
        self._topic_counts.update(map(_TOPIC, events))
        for hook in self._commit_hooks:
            hook(events)

    @property
    def shared(self) -> bool:
        """Whether other nodes serve the same log (``kafka://``): see docs/cluster.md."""
        return self.log.shared

    @property
    def end_offset(self) -> int:
        """The offset after the last event fanned out (what ``latest`` means). Every
        publish callback of the events below it has run."""
        return self.fanout.dispatched_end

    @property
    def append_horizon(self) -> int:
        """An upper bound on offsets already promised: events submitted now are stored
        at or above :attr:`end_offset` and below this plus their own count (the
        events queued or being committed come first)."""
        return self.fanout.dispatched_end + self._writer.outstanding

    # -- subscribing -----------------------------------------------------------------

    async def resolve(self, position: PositionLike, *, end: bool = False) -> int:
        """The offset a start position (``earliest``, ``latest``, ``offset:N``, ``time:T``)
        names now. A time after the last event names the end (the next event); an offset
        past the end raises :class:`~tidelog.errors.OffsetOutOfRangeError`, unless the
        position is an ``end`` (exclusive) bound."""
        return await resolve_position(
            self.log, parse_position(position), latest=self.end_offset, end=end
        )

    # -- the log, read-only ----------------------------------------------------------

    async def log_state(self) -> LogState:
        """The log's extent: first and next offset, first and last timestamp, bytes."""
        return await self.log.state()

    async def offset_for_time(self, timestamp: int) -> int:
        """The first offset whose timestamp (epoch ms) is at or after ``timestamp``; the
        end of the log when there is none."""
        return await self.log.offset_for_time(timestamp)

    async def topics(self, topic_filter: str | None = None) -> list[TopicInfo]:
        """Topics with stored events (matching ``topic_filter``) and their counts."""
        return await self.log.topics(topic_filter)

    async def count(self, topic_filter: str | None, start: int, end: int | None = None) -> int:
        """How many stored events from ``start`` (below ``end``, default the head) match
        ``topic_filter``. Without a filter this is arithmetic; with one it pages through
        the log's topic index, so it costs time in proportion to the matching events."""
        state = await self.log.state()
        start = max(start, state.first_offset)
        stop = self.end_offset if end is None else min(end, self.end_offset)
        if topic_filter is None or start >= stop:
            return max(0, stop - start)
        total = 0
        while start < stop:
            result = await self.log.read(start, topic_filter, limit=COUNT_PAGE_EVENTS, end=stop)
            total += len(result.events)
            if result.next_offset <= start:
                break
            start = result.next_offset
        return total

    async def published_by(self, client_id: str, start: int, end: int) -> list[Event]:
        """The events from ``start`` to ``end`` (exclusive) whose provenance names
        ``client_id`` as their publisher, in offset order. Reads every event of the
        range (there is no index by publisher): callers keep the range small. The MQTT
        adapter rebuilds a session's inbound QoS 2 state with it after a crash."""
        found: list[Event] = []
        start = max(start, (await self.log.state()).first_offset)
        while start < end:
            result = await self.log.read(start, None, limit=COUNT_PAGE_EVENTS, end=end)
            found += [
                event
                for event in result.events
                if event.provenance is not None and event.provenance.client_id == client_id
            ]
            if result.next_offset <= start:
                break
            start = result.next_offset
        return found

    def open_feed(
        self,
        *,
        start: int | None = None,
        on_ready: Callable[[], None] | None = None,
        name: str = "",
    ) -> Feed:
        """A feed for a protocol adapter: live from now, or catching up from ``start``.
        Close it with :meth:`Feed.close`."""
        return self.fanout.open_feed(
            start=start,
            max_events=self.options.feed_max_events,
            max_bytes=self.options.feed_max_bytes,
            on_ready=on_ready,
            name=name,
        )

    def join_shared(self, group: str, topic_filter: str, *, durable: bool = False) -> Feed:
        """The feed of shared subscription ``$share/<group>/<filter>``, created live on the
        first join. Every member receives from the same feed, so each event goes to
        exactly one member; call :meth:`leave_shared` when a member goes. ``durable``:
        the member is a persistent session (on a shared log, see :class:`ClusterShares`;
        on others the durable group is :meth:`share_group`)."""
        key = (group, topic_filter)
        entry = self._shared.get(key)
        if entry is None:
            feed = self.open_feed(name=f"$share/{group}/{topic_filter}")
            feed.subscribe(topic_filter)
            entry = self._shared[key] = (feed, [0])
        if self.log.shared:  # the group spans the nodes: this node delivers its share
            self.shares.joined(key, entry[0], durable=durable)
        entry[1][0] += 1
        return entry[0]

    def leave_shared(self, group: str, topic_filter: str) -> None:
        key = (group, topic_filter)
        entry = self._shared.get(key)
        if entry is None:
            return
        entry[1][0] -= 1
        if entry[1][0] <= 0:
            del self._shared[key]
            entry[0].close()
            if self.log.shared:
                self.shares.left(key, entry[0])

    async def share_group(
        self, group: str, topic_filter: str, *, create: bool
    ) -> ConsumerGroup | None:
        """The consumer group of the durable shared subscription ``$share/<group>/<filter>``
        (its cursor ``share:<group>:<filter>``, in the anonymous namespace), created
        at ``latest`` when ``create`` (a persistent session joins), else None when there
        is none (the group is live only). The first use in this process ends the leases
        its MQTT members (``mqtt:<client id>``) stored in an earlier one: their
        connections are gone (other members' leases run to their end).

        On a shared log (``kafka://``) this is always None: a group's pending map is
        one node's, so the nodes' live shares (:class:`ClusterShares`) serve the group.

        Raises CursorExistsError (another filter has the name), AckPolicyError (the
        cursor was changed to another ack policy) or InvalidCursorNameError (too long)."""
        if self.log.shared:
            return None
        name = share_cursor_name(group, topic_filter)
        try:
            cursor = await self.cursor(name)
        except CursorNotFoundError:
            if not create:
                return None
            cursor = await self.create_cursor(name, topic_filter, options=share_options(group))
        if cursor.topic_filter != topic_filter:
            raise CursorExistsError(
                f"cursor {name!r} exists with filter {cursor.topic_filter!r}, not {topic_filter!r}"
            )
        consumer = await cursor.group()
        if cursor.key not in self._adopted_shares:
            self._adopted_shares.add(cursor.key)
            # only MQTT's members: their connections did not survive the restart (REST,
            # WebSocket and webhook members keep their leases until they end)
            consumer.release_all(prefix="mqtt:")
        return consumer

    @contextlib.asynccontextmanager
    async def subscribe(
        self,
        topic_filter: str,
        *,
        start: PositionLike = LATEST,
        retained: bool = True,
    ) -> AsyncIterator[Subscriber]:
        """Subscribe to a filter: yields an async iterator of events.

        ``start`` in the past delivers history first, then live events, with no
        gap and no duplicate at the handoff. With ``start="latest"`` and
        ``retained``, the matching retained messages come first (as in MQTT).
        ``$share/<group>/<filter>`` joins a shared subscription (live only).
        """
        group, inner = parse_shared(topic_filter)
        if group is not None:
            feed = self.join_shared(group, inner)
            try:
                yield Subscriber(feed)
            finally:
                self.leave_shared(group, inner)
            return
        position = parse_position(start)
        if position == LATEST:
            feed = self.open_feed(name=topic_filter)
            feed.subscribe(inner)
            if retained:
                feed.requeue([(e, ()) for e in self.retained.matching(inner)])
        else:
            offset = await self.resolve(position)
            feed = self.open_feed(start=offset, name=topic_filter)
            feed.subscribe(inner, since=offset)
        try:
            yield Subscriber(feed)
        finally:
            feed.close()

    async def read(
        self,
        start: int,
        topic_filter: str | None = None,
        *,
        limit: int = 1000,
        max_bytes: int | None = DEFAULT_READ_MAX_BYTES,
        end: int | None = None,
        wait: float | None = None,
    ) -> ReadResult:
        """One page of history from ``start`` (below ``end``), long-polling up to ``wait``
        seconds for a first matching event when there is none yet.

        A filtered read may examine records without returning any (the log bounds
        each scan); this goes on from ``result.next_offset`` until it finds events or
        reaches the head (or ``end``), and only then waits. Cursors, REST and the
        other adapters page through the log with this.
        """
        deadline = trio.current_time() + (wait or 0)
        while True:
            result = await self.log.read(
                start, topic_filter, limit=limit, max_bytes=max_bytes, end=end
            )
            if result.events:
                return result
            start = result.next_offset
            stop = self.end_offset if end is None else min(end, self.end_offset)
            if start < stop:
                continue  # a filtered read stopped at its scan bound: go on
            if end is not None and start >= end:
                return result
            if wait is None or trio.current_time() >= deadline:
                return result
            self._waiting_reads += 1
            try:
                with trio.move_on_at(deadline):
                    await self.log.wait_for_append(start)
            finally:
                self._waiting_reads -= 1

    async def replay(
        self,
        topic_filter: str | None,
        *,
        start: PositionLike,
        end: PositionLike | None = None,
        batch_size: int = 1000,
    ) -> AsyncIterator[Event]:
        """History only: events matching ``topic_filter`` from ``start`` up to ``end``
        (exclusive; default: the head when the replay began)."""
        if topic_filter is not None:
            validate_topic_filter(topic_filter)
        position = await self.resolve(start)
        stop = self.end_offset if end is None else await self.resolve(end, end=True)
        while position < stop:
            result = await self.log.read(position, topic_filter, limit=batch_size, end=stop)
            for event in result.events:
                yield event
            if result.next_offset <= position:
                break
            position = result.next_offset

    # -- state of adapters (the mesh's identity and link positions, webhooks) --------

    async def load_state(self, namespace: str) -> dict[str, bytes]:
        """Every key of a state namespace kept in the log's metadata (for components
        above the engine that keep small durable state, such as the mesh)."""
        return await self.log.list_state(namespace)

    async def save_state(self, namespace: str, items: dict[str, bytes | None]) -> None:
        """Set (None: delete) keys of a state namespace; returns once durable."""
        await self._state_writer.put(namespace, items)

    # -- cursors ---------------------------------------------------------------------

    async def create_cursor(
        self,
        name: str,
        topic_filter: str | None,
        *,
        start: PositionLike = LATEST,
        owner: str | None = None,
        options: ConsumerOptions | None = None,
    ) -> Cursor:
        """Create a named durable cursor of ``owner`` (default: ``anonymous``, the
        namespace of the embedded API), or return the existing one with that name and
        filter (its position untouched). A different filter raises CursorExistsError;
        a name that is not allowed or does not fit storage InvalidCursorNameError.

        ``options`` (:class:`~tidelog.engine.consumers.ConsumerOptions`) say how it is
        consumed (ack policy, ack wait, backoff, ...); given for an existing cursor,
        they replace its options (InvalidConsumerOptionsError for a dead-letter topic
        its own filter matches)."""
        key = stored_name(owner, name)
        if topic_filter is not None:
            if topic_filter.startswith("$share/"):
                raise InvalidTopicError("a cursor filter cannot be a shared subscription")
            validate_topic_filter(topic_filter)
        if options is not None:
            options.check_for(name, topic_filter)
        existing = await self.log.load_cursor(key)
        if existing is not None:
            if existing.metadata.get("filter") != topic_filter:
                raise CursorExistsError(
                    f"cursor {name!r} exists with filter {existing.metadata.get('filter')!r}"
                )
            cursor = Cursor(self, existing)
            if options is None or options == stored_options(existing):
                return cursor
            position = cursor.position
            if cursor.explicit and options.ack_policy != "explicit":
                self.consumers.forget(key)
            state = CursorState(key, position, {**existing.metadata, "consumer": options.to_dict()})
            group = self.consumers.loaded(key)
            if group is not None:  # its next store must write the new options
                group.metadata, group.options = state.metadata, options
            await self._state_writer.commit_cursor(state)
            return Cursor(self, state)
        metadata: dict[str, Any] = {"filter": topic_filter}
        if options is not None and options != ConsumerOptions():
            metadata["consumer"] = options.to_dict()
        state = CursorState(key, await self.resolve(start), metadata)
        await self._state_writer.commit_cursor(state)
        return Cursor(self, state)

    def check_commit(self, name: str, offset: int) -> None:
        """OffsetOutOfRangeError unless ``offset`` lies between 0 and the end."""
        if offset < 0 or offset > self.end_offset:
            raise OffsetOutOfRangeError(
                f"cursor {split_stored_name(name)[1]!r}: cannot commit offset {offset}; "
                f"the log ends at {self.end_offset}"
            )

    async def commit_cursor(self, name: str, offset: int, metadata: dict[str, Any]) -> None:
        """Move the cursor stored as ``name`` (:attr:`Cursor.key`) to ``offset`` (the
        next event to process), durably and coalesced with other commits; an offset past
        the end raises :class:`~tidelog.errors.OffsetOutOfRangeError`.
        :meth:`Cursor.commit` calls this."""
        self.check_commit(name, offset)
        await self._state_writer.commit_cursor(CursorState(name, offset, metadata))

    async def cursor(self, name: str, *, owner: str | None = None) -> Cursor:
        """A handle on ``owner``'s existing cursor; CursorNotFoundError if there is none
        (a name that could not be stored cannot exist either)."""
        try:
            key = stored_name(owner, name)
        except InvalidCursorNameError:
            key = None
        state = None if key is None else await self.log.load_cursor(key)
        if state is None:
            raise CursorNotFoundError(f"no cursor named {name!r}")
        return Cursor(self, state)

    async def cursors(self, *, owner: str | None = None) -> list[Cursor]:
        """Every cursor, or those of ``owner``."""
        found = [Cursor(self, state) for state in await self.log.list_cursors()]
        if owner is not None:
            found = [cursor for cursor in found if cursor.owner == owner]
        return found

    async def delete_cursor(self, name: str, *, owner: str | None = None) -> bool:
        try:
            key = stored_name(owner, name)
        except InvalidCursorNameError:
            return False
        self.consumers.forget(key)
        self._adopted_shares.discard(key)
        return await self.log.delete_cursor(key)

    # -- wills -----------------------------------------------------------------------

    def set_will(self, key: str, will: NewEvent, delay: float = 0.0) -> None:
        """Publish ``will`` after ``delay`` seconds unless :meth:`cancel_will` comes first.

        The protocol layer calls this on an abnormal disconnect (MQTT will message,
        v5 will delay interval). A newer will for the same key replaces the older.
        A will with a delay is stored, and published after a restart if the broker
        stops before it is due (:mod:`tidelog.engine.wills`).
        """
        self.wills.set(key, will, delay)

    def arm_will(self, client_id: str, will: NewEvent, delay: float = 0.0) -> str:
        """Shared log: a connected client's will, stored so that the node that takes
        over if this node dies publishes it (``delay`` after this node was last seen).
        Returns the will's key for :meth:`disarm_will` when the connection ends here
        (:mod:`tidelog.engine.wills`)."""
        return self.wills.arm(client_id, will, delay)

    def disarm_will(self, key: str) -> None:
        """Drop the armed will stored under ``key`` (only that one: the client may have
        armed a newer one on another node meanwhile)."""
        self.wills.disarm(key)

    def cancel_will(self, key: str) -> bool:
        return self.wills.cancel(key)

    def subscription_filters(self) -> set[str]:
        """The filters someone on this broker wants: live subscriptions and those of
        persistent sessions, connected or not (the mesh advertises them upstream)."""
        return self.fanout.subscription_filters() | self.sessions.subscription_filters()

    # -- statistics ------------------------------------------------------------------

    def statistics(self) -> BrokerStatistics:
        feeds = self.fanout.feeds
        return BrokerStatistics(
            published=self._writer.statistics().events,
            deliveries=self.fanout.deliveries,
            delivered_bytes=self.fanout.delivered_bytes,
            catch_ups=self.fanout.catch_ups,
            feeds=len(feeds),
            feeds_catching_up=sum(1 for f in feeds if not f.live),
            waiting_reads=self._waiting_reads,
            subscriptions=self.fanout.subscription_count,
            retained=len(self.retained),
            sessions=len(self.sessions),
            end_offset=self.end_offset,
            topic_counts=dict(self._topic_counts),
            writer=self._writer.statistics(),
            log=self.log.statistics(),
        )


_BROKER_OPTION_NAMES = {field.name for field in attrs.fields(BrokerOptions)}


@contextlib.asynccontextmanager
async def open_broker(url: str = DEFAULT_URL, **options: Any) -> AsyncIterator[Broker]:
    """Open the log at ``url`` and run a broker on it until the block exits.

    Keyword options are :class:`BrokerOptions` fields or storage options
    (:class:`tidelog.storage.LogOptions`); the storage option ``clock`` is the
    broker's clock too (:attr:`Broker.clock`). On exit, everything already
    submitted is committed and the state is flushed before the log closes.
    """
    broker_options = BrokerOptions(
        **{k: v for k, v in options.items() if k in _BROKER_OPTION_NAMES}
    )
    log_options = {k: v for k, v in options.items() if k not in _BROKER_OPTION_NAMES}
    async with open_log(url, **log_options) as event_log, background_nursery() as nursery:
        clock = log_options.get("clock", wall_clock_ms)
        broker = Broker(event_log, nursery, broker_options, clock)
        await broker._start()
        periodic = await nursery.start(broker._run_periodic)
        try:
            yield broker
        finally:
            with trio.CancelScope(shield=True):
                await broker._shutdown(periodic)
