"""The events a link source takes from memory on a live tail instead of the log.

A source that has sent everything reads the next events as they are committed:
:meth:`LiveTail.committed` (a broker commit hook) keeps the events of each commit,
in offset order, and :meth:`take` hands them out from the source's position, so a
live link neither reads back nor decodes again what this node just stored (the
log's decode of a forwarded record with provenance costs several times a local
one). What the tail does not hold (the source was behind, or the tail was full
and dropped what it had) the source reads from the log as before; the events are
the same objects the log's subscribers got.

A tail covers a contiguous range of offsets (from the source's position to the
end of the last commit it saw). A tail with a topic test (``accept``: a link with
one filter narrower than ``#``) keeps only the events it accepts, and counts what
it saw and kept: a link that matches a small share of what the node commits is
:attr:`~LiveTail.sparse` (its source reads the log's topic index instead, so a
core with many narrow links does not look at every event it commits once per
link for long).

Memory is bounded: at most ``max_events`` events and ``max_bytes`` (payloads,
topics and a fixed cost per event: :func:`held_bytes`) are kept; a commit that
would pass either empties the tail (the source, behind by then, reads the log
until it reaches what the tail holds again).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from operator import attrgetter

import trio

from tidelog.storage import records
from tidelog.storage.records import Event

EVENT_BYTES = 200
"""What an event held costs beyond its payload and topic (the ``Event``, its
provenance, the deque's slot), roughly."""
SPARSE_AFTER = 2_000
"""Events a filtered tail sees before it may call itself :attr:`~LiveTail.sparse`."""
SPARSE_SHARE = 0.5
"""A filtered tail that keeps less than this share of what it sees is sparse."""
SEEN_WINDOW = 100_000
"""The seen and kept counts are halved past this (recent commits weigh most)."""


def held_bytes(event: Event) -> int:
    """What holding ``event`` costs, for the tail's bound and its batches."""
    return len(event.payload) + len(event.topic) + EVENT_BYTES


_TOPIC = attrgetter("topic")
_PAYLOAD = attrgetter("payload")


def _held_total(events: list[Event]) -> int:
    """:func:`held_bytes` of all ``events`` (a commit's: no Python call per event; in
    one pass in C when the records extension is built, ``records.held_bytes``: the two
    passes here were most of the tail's commit hook, 0.12-0.16 ms per commit of about
    490 events at a live link's origin)."""
    if records.held_bytes is not None and type(events) is list:
        total = records.held_bytes(events, EVENT_BYTES)
        if total is not None:
            return total
    return (
        sum(map(len, map(_PAYLOAD, events)))
        + sum(map(len, map(_TOPIC, events)))
        + EVENT_BYTES * len(events)
    )


class LiveTail:
    """Committed events of a contiguous range of offsets, bounded (see the module docs)."""

    def __init__(
        self, max_events: int, max_bytes: int, accept: Callable[[str], bool] | None = None
    ) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.accept = accept
        """Which topics the tail keeps (None: every event)."""
        self._events: deque[Event] = deque()
        self._bytes = 0
        self._start: int | None = None
        """The first offset covered (None: nothing); the events held lie at or above it."""
        self._end = 0
        """The offset after the last commit covered."""
        self.seen = self.kept = 0
        """Events of the commits seen and of those kept (filtered tails; decayed)."""
        self._wake = trio.Event()
        self._next_commit: trio.Event | None = None
        """Set by the next commit, whatever the tail keeps of it (:meth:`wait_commit`)."""

    def __len__(self) -> int:
        return len(self._events)

    @property
    def sparse(self) -> bool:
        """A filtered tail that keeps few of the events it sees (module docs)."""
        return self.seen >= SPARSE_AFTER and self.kept < SPARSE_SHARE * self.seen

    def committed(self, events: list[Event]) -> None:
        """A commit hook: keep ``events`` (those of one commit, in offset order)."""
        if not events:
            return
        if self._next_commit is not None:  # its waiter runs once this has returned
            self._next_commit.set()
            self._next_commit = None
        first, end = events[0].offset, events[-1].offset + 1
        accept = self.accept
        if accept is not None:
            self.seen += len(events)
            topics = set(map(_TOPIC, events))  # a commit repeats a few topics: one test each
            refused = {topic for topic in topics if not accept(topic)}
            if refused:
                events = [] if refused == topics else [e for e in events if e.topic not in refused]
            self.kept += len(events)
            if self.seen > SEEN_WINDOW:
                self.seen //= 2
                self.kept //= 2
        size = _held_total(events)
        held = self._events
        if (
            self._start is None
            or len(held) + len(events) > self.max_events
            or self._bytes + size > self.max_bytes
            or self._end != first
        ):
            held.clear()  # the source is behind: it reads the log until it gets here
            self._bytes = 0
            self._start = first
            if len(events) > self.max_events or size > self.max_bytes:
                self._start = None
                self._wake.set()
                return
        held.extend(events)
        self._bytes += size
        self._end = end
        if events:  # a commit the filter kept nothing of wakes nobody
            self._wake.set()

    def take(self, position: int, limit: int, max_bytes: int) -> tuple[list[Event], int] | None:
        """Up to ``limit`` events from ``position`` on, at most ``max_bytes`` by
        :func:`held_bytes` (at least one event), and the offset after them (what the
        source reads next), if the tail covers ``position`` and a commit since (what
        lies below it is dropped); None if the source must read the log (or wait).
        A filtered tail may hand out no events and an offset past ``position``."""
        start = self._start
        if start is None or not start <= position < self._end:
            return None
        held = self._events
        while held and held[0].offset < position:
            self._bytes -= held_bytes(held.popleft())
        if len(held) <= limit and self._bytes <= max_bytes:
            out = list(held)  # the usual case on a live tail: everything since the last
            held.clear()
            self._bytes = 0
            self._start = self._end
            return out, self._end
        out = []
        size = 0
        while held and len(out) < limit:
            cost = held_bytes(held[0])
            if out and size + cost > max_bytes:
                break
            size += cost
            out.append(held.popleft())
        self._bytes -= size
        self._start = out[-1].offset + 1
        return out, self._start

    def arm(self) -> None:
        """Start watching for the next commit (before looking at the log: a commit in
        between then ends :meth:`wait` at once)."""
        if self._wake.is_set():
            self._wake = trio.Event()

    async def wait(self, timeout: float) -> None:
        """Until a commit since :meth:`arm`, or ``timeout`` seconds."""
        with trio.move_on_after(timeout):
            await self._wake.wait()

    async def wait_commit(self, timeout: float) -> None:
        """Until the node's next commit, even one this tail keeps nothing of (a filtered
        tail's :meth:`wait` ends only at one it keeps something of), or ``timeout``
        seconds: a source coalescing two commits into a batch waits for this."""
        self._next_commit = commit = trio.Event()
        with trio.move_on_after(timeout):
            await commit.wait()
        self._next_commit = None
