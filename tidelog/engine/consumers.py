"""Consumer groups: a durable cursor read by many members, with per-event acknowledgement.

A cursor's *ack policy* (``ConsumerOptions.ack_policy``) says how it moves:

* ``"cumulative"`` (the default, a cursor's original behaviour): one position,
  moved by commits; everything below it is acknowledged.
* ``"none"``: a fetch moves the cursor past what it returned.
* ``"explicit"``: a :class:`ConsumerGroup`. Each fetch *leases* the events it
  returns to one member; events are settled one by one (ack, nak with an
  optional delay, progress to extend a lease).

Theory of operation (the model is JetStream's ack floor and pending map)
-----------------------------------------------------------------------
A group is three things: the *floor* (the cursor's committed position: every
matching event below it is acknowledged), the *high* mark (the offset past the
last event ever handed out), and the *pending* map, offset -> :class:`Entry`,
of the events in ``[floor, high)`` handed out and not yet acknowledged. Every
matching event in ``[floor, high)`` that is not pending is acknowledged, so
acknowledgements above the floor cost no memory: the state is bounded by
``max_leased``, which caps the pending map (back-pressure: a fetch hands out
no new events while it is full; redeliveries still flow).

An entry is leased to a member until ``lease_until`` and free again from
``due`` (``lease_until`` plus the backoff for its delivery count), both on the
broker's clock. A fetch takes due entries first (redeliveries, in offset
order), dead-lettering those already delivered ``max_deliver`` times, then new
events from ``high`` on. An ack removes the entry; the floor becomes the
lowest pending offset (or ``high``). New entries are added in increasing
offset order, so the pending dict's order is offset order and its first key is
the floor.

Durability: the pending map, ``high`` and the counters are stored as one JSON
value in the log's ``consumers`` state namespace (key: the cursor's stored
name), written with the cursor's floor in one state-writer batch. Acks, naks
and commits wait until that write is durable (except acks made with
``durable=False`` and MQTT's, which are written by the next batch without
waiting: a member then goes straight on to its next fetch instead of waiting for
one transaction per ack); leases are written by the next batch without
waiting (a crash before it only makes the lease's events come again sooner).
After a kill -9 the group resumes with the stored leases and their deadlines,
so only events that were not acknowledged come again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import trio

from tidelog.errors import InvalidConsumerOptionsError
from tidelog.storage import CursorState, Event, NewEvent, Properties, ReadResult
from tidelog.storage.base import DEFAULT_READ_MAX_BYTES
from tidelog.topics import topic_matches, validate_topic_name

if TYPE_CHECKING:
    from tidelog.engine.broker import Broker
    from tidelog.engine.state_writer import StateWriter

NAMESPACE = "consumers"
"""The log state namespace holding each explicit group's pending map."""
ACK_POLICIES = ("cumulative", "explicit", "none")
DEFAULT_ACK_WAIT = 30.0
DEFAULT_MAX_LEASED = 1000
MAX_MAX_LEASED = 100_000
DEAD_LETTER_PREFIX = "$DLQ/"
SHARE_ACK_WAIT = 3600.0
REFUSED_DELAY = 2.0
"""Seconds before a member that could not take an event (:meth:`ConsumerGroup.give_back`)
may lease it again; any other member may take it at once."""
REFUSED_TRIES = 5
"""Deliveries after which an event every member gave back is discarded (when the
cursor has no ``max_deliver``; with one it is dead-lettered by the next fetch)."""
SHARE_MEMBER_SHARE = 4
"""A durable MQTT shared subscription's member leases at most ``max_leased`` over this
(``max_leased_per_member``): one member that never acknowledges (its leases last
``SHARE_ACK_WAIT``) holds a part of the group's allowance, never all of it."""
"""The ack wait of a durable MQTT shared subscription's cursor: a connected member holds
what it was sent until it acknowledges it or goes (MQTT has no lease timeout); the
leases of members lost in a crash end when the group is first used after the restart."""


def _number(value: Any, what: str, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidConsumerOptionsError(f"{what} must be a number of seconds")
    if value < minimum:
        raise InvalidConsumerOptionsError(f"{what} must be at least {minimum}")
    return float(value)


@attrs.frozen
class ConsumerOptions:
    """How a cursor is consumed; stored in its metadata under ``consumer``.

    The names are the REST contract (``PUT /v1/cursors/{name}``)."""

    ack_policy: str = "cumulative"
    ack_wait: float = DEFAULT_ACK_WAIT
    """Seconds a fetched event stays leased before it is redelivered."""
    backoff: tuple[float, ...] = ()
    """Seconds an event waits before redelivery after its n-th delivery's lease ends
    (the last value repeats); none: redelivered as soon as the lease ends."""
    max_deliver: int | None = None
    """Deliveries after which an unacknowledged event goes to the dead-letter topic
    (None: no limit)."""
    dead_letter_topic: str | None = None
    """Where dead letters go; None: ``$DLQ/<cursor name>``."""
    max_leased: int = DEFAULT_MAX_LEASED
    """The most events handed out and not yet acknowledged at once (per cursor)."""
    max_leased_per_member: int | None = None
    """The most events one member holds leased at once (None: only ``max_leased``):
    back-pressure per member, so one fast fetcher cannot take the whole group's share."""

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ConsumerOptions:
        """Validate options given as JSON (unknown keys and bad values raise
        :class:`InvalidConsumerOptionsError`); missing keys take the defaults."""
        if not data:
            return cls()
        known = {field.name for field in attrs.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InvalidConsumerOptionsError(f"unknown consumer options: {sorted(unknown)}")
        policy = data.get("ack_policy", "cumulative")
        if policy not in ACK_POLICIES:
            raise InvalidConsumerOptionsError(f"ack_policy must be one of {ACK_POLICIES}")
        ack_wait = _number(data.get("ack_wait", DEFAULT_ACK_WAIT), "ack_wait", minimum=0.001)
        backoff_in = data.get("backoff") or ()
        if not isinstance(backoff_in, list | tuple) or len(backoff_in) > 100:
            raise InvalidConsumerOptionsError("backoff must be a list of at most 100 seconds")
        backoff = tuple(_number(b, "backoff") for b in backoff_in)
        max_deliver = data.get("max_deliver")
        if max_deliver is not None and (
            isinstance(max_deliver, bool) or not isinstance(max_deliver, int) or max_deliver < 1
        ):
            raise InvalidConsumerOptionsError("max_deliver must be a positive integer or null")
        dead_letter = data.get("dead_letter_topic")
        if dead_letter is not None:
            if not isinstance(dead_letter, str):
                raise InvalidConsumerOptionsError("dead_letter_topic must be a topic name")
            try:
                validate_topic_name(dead_letter)
            except ValueError as exc:
                raise InvalidConsumerOptionsError(f"dead_letter_topic: {exc}") from None
        max_leased = data.get("max_leased", DEFAULT_MAX_LEASED)
        if (
            isinstance(max_leased, bool)
            or not isinstance(max_leased, int)
            or not 1 <= max_leased <= MAX_MAX_LEASED
        ):
            raise InvalidConsumerOptionsError(f"max_leased must be 1 to {MAX_MAX_LEASED}")
        per_member = data.get("max_leased_per_member")
        if per_member is not None and (
            isinstance(per_member, bool)
            or not isinstance(per_member, int)
            or not 1 <= per_member <= MAX_MAX_LEASED
        ):
            raise InvalidConsumerOptionsError(
                f"max_leased_per_member must be 1 to {MAX_MAX_LEASED} or null"
            )
        return cls(policy, ack_wait, backoff, max_deliver, dead_letter, max_leased, per_member)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ack_policy": self.ack_policy,
            "ack_wait": self.ack_wait,
            "backoff": list(self.backoff),
            "max_deliver": self.max_deliver,
            "dead_letter_topic": self.dead_letter_topic,
            "max_leased": self.max_leased,
            "max_leased_per_member": self.max_leased_per_member,
        }

    def dead_letters_to(self, cursor_name: str) -> str:
        """The dead-letter topic of the cursor named ``cursor_name``."""
        return self.dead_letter_topic or f"{DEAD_LETTER_PREFIX}{cursor_name}"

    def check_for(self, cursor_name: str, topic_filter: str | None) -> None:
        """Refuse a dead-letter topic the cursor's own filter matches (a consumer must
        not read its own dead letters)."""
        if self.ack_policy != "explicit":
            return
        topic = self.dead_letters_to(cursor_name)
        try:
            validate_topic_name(topic)
        except ValueError as exc:
            raise InvalidConsumerOptionsError(
                f"the dead-letter topic {topic!r} is not a topic name ({exc}); "
                "give dead_letter_topic"
            ) from None
        if topic_matches(topic_filter or "#", topic):
            raise InvalidConsumerOptionsError(
                f"the cursor's filter {topic_filter or '#'!r} matches its dead-letter topic "
                f"{topic!r}: a consumer must not read its own dead letters"
            )

    def backoff_ms(self, deliveries: int) -> int:
        """How long an event waits after the lease of its ``deliveries``-th delivery."""
        if not self.backoff:
            return 0
        return int(self.backoff[min(deliveries, len(self.backoff)) - 1] * 1000)


@attrs.define(slots=True)
class Entry:
    """One pending event: who holds it, until when, and how often it was delivered."""

    member: str | None
    lease_until: int
    """Broker-clock ms; the member holds the event until then."""
    due: int
    """Broker-clock ms from which the event may be handed out again."""
    deliveries: int


@attrs.frozen
class GroupStatistics:
    pending: int
    """Events handed out and not acknowledged (leased or waiting for redelivery)."""
    leased: int
    redelivered: int
    dead_lettered: int
    high: int


class ConsumerGroup:
    """The shared state of one explicit cursor (one per cursor per broker; see the
    module docs). Members are names chosen by the adapters (a REST caller, a ``/v1/ws``
    subscription, a webhook)."""

    def __init__(
        self,
        broker: Broker,
        writer: StateWriter,
        state: CursorState,
        name: str,
        options: ConsumerOptions,
        stored: dict[str, Any] | None,
    ) -> None:
        self._broker = broker
        self._writer = writer
        self.key = state.name
        self.name = name
        self.metadata = state.metadata
        self.topic_filter: str | None = state.metadata.get("filter")
        self.options = options
        self.high = state.position
        self.pending: dict[int, Entry] = {}
        self.redelivered = 0
        self.dead_lettered = 0
        self.refused: dict[int, str] = {}
        """Offset -> the member that gave it back (:meth:`give_back`): the others may
        take it before it is due (in memory only)."""
        self.lock = trio.Lock()
        self._changed = trio.Event()
        if stored:
            self.high = max(self.high, int(stored.get("high", 0)))
            for offset, member, lease_until, due, deliveries in sorted(stored.get("pending", ())):
                if offset >= state.position:
                    self.pending[offset] = Entry(member, lease_until, due, deliveries)
            self.redelivered = int(stored.get("redelivered", 0))
            self.dead_lettered = int(stored.get("dead_lettered", 0))
        self.floor = self._lowest()

    # -- views -----------------------------------------------------------------------

    def _lowest(self) -> int:
        return next(iter(self.pending), self.high)

    def statistics(self) -> GroupStatistics:
        now = self._broker.clock()
        leased = sum(1 for e in self.pending.values() if e.lease_until > now)
        return GroupStatistics(
            len(self.pending), leased, self.redelivered, self.dead_lettered, self.high
        )

    async def count_pending(self) -> int:
        """Matching events not yet acknowledged: the pending map plus what lies past
        ``high``."""
        return len(self.pending) + await self._broker.count(self.topic_filter, self.high)

    # -- fetching --------------------------------------------------------------------

    async def fetch(
        self,
        member: str,
        limit: int = 100,
        wait: float | None = None,
        *,
        max_bytes: int | None = DEFAULT_READ_MAX_BYTES,
    ) -> ReadResult:
        """Lease up to ``limit`` events to ``member``: due redeliveries first, then new
        events. With ``wait`` (seconds), waits up to that long while there is nothing
        to hand out (for an append, a settlement, or a redelivery falling due)."""
        deadline = trio.current_time() + (wait or 0.0)
        while True:
            async with self.lock:
                events = await self._fetch_once(member, limit, max_bytes)
            if events or wait is None or trio.current_time() >= deadline:
                return ReadResult(events, self.high)
            await self._wait_for_work(deadline, member if self.member_room(member) <= 0 else None)

    def held_by(self, member: str) -> int:
        """Events ``member`` holds leased now."""
        now = self._broker.clock()
        return sum(1 for e in self.pending.values() if e.member == member and e.lease_until > now)

    def member_room(self, member: str) -> int:
        """How many more events ``member`` may lease now (``max_leased_per_member``)."""
        cap = self.options.max_leased_per_member
        return MAX_MAX_LEASED if cap is None else cap - self.held_by(member)

    async def _wait_for_work(self, deadline: float, full: str | None = None) -> None:
        """Wait for something to hand out: an append, a settlement, a redelivery falling
        due; for a member that holds all it may (``full``), a settlement or the end of
        one of its own leases."""
        now = self._broker.clock()
        member_full = full is not None
        if member_full:
            next_due = min(
                (e.lease_until for e in self.pending.values() if e.member == full), default=None
            )
        else:
            next_due = min((e.due for e in self.pending.values()), default=None)
        if next_due is not None:
            deadline = min(deadline, trio.current_time() + max(0, next_due - now) / 1000)
        changed = self._changed
        with trio.move_on_at(deadline):
            async with trio.open_nursery() as nursery:

                async def appended() -> None:
                    if not member_full and len(self.pending) < self.options.max_leased:
                        await self._broker.log.wait_for_append(self.high)
                    else:
                        await trio.sleep_forever()
                    nursery.cancel_scope.cancel()

                async def settled() -> None:
                    await changed.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(appended)
                nursery.start_soon(settled)

    async def _fetch_once(self, member: str, limit: int, max_bytes: int | None) -> list[Event]:
        options = self.options
        now = self._broker.clock()
        limit = min(limit, self.member_room(member))
        if limit <= 0:
            return []
        refused = self.refused
        due = [
            offset
            for offset, e in self.pending.items()
            if e.due <= now or refused.get(offset, member) != member
        ][:limit]
        out: list[Event] = []
        dead: list[tuple[Event, int]] = []
        for offset in due:
            event = await self._event_at(offset)
            entry = self.pending.get(offset)
            if entry is None or (
                entry.due > self._broker.clock() and refused.get(offset, member) == member
            ):
                continue  # settled while we read
            if event is None:  # retention removed it: nothing left to deliver
                del self.pending[offset]
                continue
            if options.max_deliver is not None and entry.deliveries >= options.max_deliver:
                dead.append((event, entry.deliveries))
                continue
            self._lease(entry, member, now)
            refused.pop(offset, None)
            self.redelivered += 1
            out.append(event)
        if dead:
            await self._dead_letter(dead, "max_deliver")
        room = min(limit - len(out), options.max_leased - len(self.pending))
        if room > 0:
            start = max(self.high, (await self._broker.log.state()).first_offset)
            result = await self._broker.read(
                start, self.topic_filter, limit=room, max_bytes=max_bytes
            )
            lease_until = now + int(options.ack_wait * 1000)
            free_at = lease_until + options.backoff_ms(1)
            pending = self.pending
            for event in result.events:  # first deliveries: _lease, inlined
                pending[event.offset] = Entry(member, lease_until, free_at, 1)
            out += result.events
            self.high = max(self.high, result.next_offset)
        if out or dead:
            self._store_nowait()
        elif self._lowest() != self.floor:  # skipped non-matching events
            await self._store()
        return out

    def _lease(self, entry: Entry, member: str, now: int) -> None:
        entry.member = member
        entry.deliveries += 1
        entry.lease_until = now + int(self.options.ack_wait * 1000)
        entry.due = entry.lease_until + self.options.backoff_ms(entry.deliveries)

    async def _event_at(self, offset: int) -> Event | None:
        result = await self._broker.read(offset, None, limit=1, end=offset + 1)
        return result.events[0] if result.events else None

    # -- settling --------------------------------------------------------------------

    async def ack(self, offsets: Iterable[int]) -> int:
        """Acknowledge events: they are never delivered again. Returns how many were
        pending (offsets already acknowledged or never handed out are ignored)."""
        done = 0
        for offset in offsets:
            if self.pending.pop(offset, None) is not None:
                self.refused.pop(offset, None)
                done += 1
        if done:
            await self._store()
        return done

    def ack_nowait(self, offsets: Iterable[int]) -> int:
        """:meth:`ack` without waiting for the write (for members whose own protocol
        is at-least-once, such as MQTT's PUBACK, and Python callers that pass
        ``durable=False``: a crash before the next state-writer batch only delivers
        these events again). The events leave the pending map at once, so no fetch
        hands them out again while the process lives."""
        done = 0
        for offset in offsets:
            if self.pending.pop(offset, None) is not None:
                self.refused.pop(offset, None)
                done += 1
        if done:
            self._store_nowait()
        return done

    def give_back(self, member: str, offsets: Iterable[int]) -> int:
        """``member`` cannot take these events (an MQTT client whose Maximum Packet Size
        is smaller): any other member may lease them at once, ``member`` itself only
        after ``REFUSED_DELAY``. Bounded: with ``max_deliver`` the next fetch
        dead-letters an event delivered that often; without, an event given back after
        ``REFUSED_TRIES`` deliveries is discarded (acknowledged), as MQTT 5 discards
        a message too large for its client (§3.1.2.11.4)."""
        now = self._broker.clock()
        done = 0
        for offset in offsets:
            entry = self.pending.get(offset)
            if entry is None or entry.member != member:
                continue
            done += 1
            if self.options.max_deliver is None and entry.deliveries >= REFUSED_TRIES:
                del self.pending[offset]
                self.refused.pop(offset, None)
                continue
            entry.lease_until = now
            entry.due = now + int(REFUSED_DELAY * 1000)
            self.refused[offset] = member
        if done:
            self._store_nowait()
        return done

    async def nak(self, offsets: Iterable[int], delay: float | None = None) -> int:
        """Give events back: due again after ``delay`` seconds (None: the backoff of their
        delivery count). Returns how many were pending."""
        now = self._broker.clock()
        done = 0
        for offset in offsets:
            entry = self.pending.get(offset)
            if entry is None:
                continue
            entry.lease_until = now
            wait_ms = (
                self.options.backoff_ms(entry.deliveries) if delay is None else int(delay * 1000)
            )
            entry.due = now + wait_ms
            done += 1
        if done:
            await self._store()
        return done

    async def progress(self, offsets: Iterable[int]) -> int:
        """Extend the leases of events still being worked on by another ``ack_wait``."""
        now = self._broker.clock()
        done = 0
        for offset in offsets:
            entry = self.pending.get(offset)
            if entry is None:
                continue
            entry.lease_until = now + int(self.options.ack_wait * 1000)
            entry.due = max(entry.due, entry.lease_until)
            done += 1
        if done:
            self._store_nowait()
        return done

    def release(self, member: str) -> int:
        """A member went away: its leases end now and its events are due at once."""
        now = self._broker.clock()
        done = 0
        for entry in self.pending.values():
            if entry.member == member and entry.lease_until > now:
                entry.lease_until = entry.due = now
                done += 1
        if done:
            self._store_nowait()
        return done

    def release_all(self, prefix: str = "") -> int:
        """Every lease of a member whose name starts with ``prefix`` ends now (a process
        that starts after a crash: the members that held them are gone); their events
        are due at once."""
        now = self._broker.clock()
        done = 0
        for entry in self.pending.values():
            member = entry.member
            if entry.lease_until > now and member is not None and member.startswith(prefix):
                entry.lease_until = entry.due = now
                done += 1
        if done:
            self._store_nowait()
        return done

    async def commit(self, offset: int) -> None:
        """Cumulative acknowledgement: everything below ``offset`` is acknowledged."""
        for pending_offset in [o for o in self.pending if o < offset]:
            del self.pending[pending_offset]
        self.high = max(self.high, offset)
        await self._store()

    async def reject(self, offsets: Sequence[int], reason: str) -> int:
        """Send pending events to the dead-letter topic now (a consumer that knows they
        cannot be processed, e.g. a webhook answered 400)."""
        async with self.lock:
            found: list[tuple[Event, int]] = []
            for offset in offsets:
                entry = self.pending.get(offset)
                event = None if entry is None else await self._event_at(offset)
                if entry is not None and event is not None:
                    found.append((event, entry.deliveries))
            if found:
                await self._dead_letter(found, reason)
            return len(found)

    async def _dead_letter(self, dead: list[tuple[Event, int]], reason: str) -> None:
        topic = self.options.dead_letters_to(self.name)
        letters = [_dead_letter(topic, event, deliveries, reason) for event, deliveries in dead]
        await self._broker.publish_many(letters)
        for event, _ in dead:
            self.pending.pop(event.offset, None)
            self.refused.pop(event.offset, None)
        self.dead_lettered += len(dead)
        await self._store()

    # -- storing ---------------------------------------------------------------------

    def _changed_now(self) -> None:
        """After any change: the floor moves, waiting fetches look again."""
        self.floor = self._lowest()
        self._changed.set()
        self._changed = trio.Event()

    def _snapshot(self) -> tuple[CursorState, str, dict[str, bytes | None]]:
        """What the state writer stores, taken when it writes its next batch."""
        value = {
            "high": self.high,
            "pending": [
                [offset, e.member, e.lease_until, e.due, e.deliveries]
                for offset, e in self.pending.items()
            ],
            "redelivered": self.redelivered,
            "dead_lettered": self.dead_lettered,
        }
        blob = json.dumps(value, separators=(",", ":")).encode()
        floor = self._lowest()
        return CursorState(self.key, floor, self.metadata), NAMESPACE, {self.key: blob}

    async def _store(self) -> None:
        self._changed_now()
        await self._writer.commit_latest(self.key, self._snapshot)

    def _store_nowait(self) -> None:
        self._changed_now()
        self._writer.commit_latest_nowait(self.key, self._snapshot)


def _dead_letter(topic: str, event: Event, deliveries: int, reason: str) -> NewEvent:
    """The dead letter of ``event``: its payload and properties, plus user properties
    saying why, how often it was delivered, and where it came from."""
    base = event.properties or Properties()
    extra = (
        ("dead_letter_reason", reason),
        ("dead_letter_deliveries", str(deliveries)),
        ("dead_letter_offset", str(event.offset)),
        ("dead_letter_topic", event.topic),
    )
    properties = attrs.evolve(base, user_properties=(*base.user_properties, *extra))
    return NewEvent(topic, event.payload, event.qos, False, properties)


class ConsumerGroups:
    """The broker's explicit groups by cursor key, loaded from the log on first use."""

    def __init__(self, broker: Broker, writer: StateWriter) -> None:
        self._broker = broker
        self._writer = writer
        self._groups: dict[str, ConsumerGroup] = {}
        self._loading = trio.Lock()

    async def get(self, state: CursorState, name: str, options: ConsumerOptions) -> ConsumerGroup:
        """The group of the cursor stored as ``state.name`` (``name``: its owner's name
        for it), loading its pending map from the log the first time."""
        group = self._groups.get(state.name)
        if group is not None:  # it has the latest options (Broker.create_cursor sets them)
            return group
        async with self._loading:
            group = self._groups.get(state.name)
            if group is None:
                raw = await self._broker.log.get_state(NAMESPACE, state.name)
                stored = json.loads(raw) if raw else None
                group = ConsumerGroup(self._broker, self._writer, state, name, options, stored)
                self._groups[state.name] = group
        return group

    def loaded(self, key: str) -> ConsumerGroup | None:
        return self._groups.get(key)

    def forget(self, key: str) -> None:
        self._groups.pop(key, None)
        self._writer.discard_cursor(key)
        self._writer.put_nowait(NAMESPACE, {key: None})

    def each(self) -> list[ConsumerGroup]:
        return list(self._groups.values())


def share_cursor_name(group: str, topic_filter: str) -> str:
    """The cursor of the durable shared subscription ``$share/<group>/<filter>``:
    ``share:<group>:<filter with / written ~>`` (a name REST paths can carry)."""
    return f"share:{group}:{topic_filter.replace('/', '~')}"


def share_options(group: str) -> ConsumerOptions:
    """The options a durable shared subscription's cursor is created with (the
    operator may change them with ``PUT /v1/cursors/{name}``)."""
    return ConsumerOptions(
        ack_policy="explicit",
        ack_wait=SHARE_ACK_WAIT,
        dead_letter_topic=f"{DEAD_LETTER_PREFIX}share/{group}",
        max_leased_per_member=max(1, DEFAULT_MAX_LEASED // SHARE_MEMBER_SHARE),
    )
