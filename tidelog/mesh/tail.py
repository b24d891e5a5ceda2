"""The events a link source takes from memory on a live tail instead of the log.

A source that has sent everything reads the next events as they are committed:
:meth:`LiveTail.committed` (a broker commit hook) keeps the events of each commit,
in offset order, and :meth:`take` hands them out from the source's position, so a
live link neither reads back nor decodes again what this node just stored (the
log's decode of a forwarded record with provenance costs several times a local
one). What the tail does not hold (the source was behind, or the tail was full
and dropped what it had) the source reads from the log as before; the events are
the same objects the log's subscribers got.

Memory is bounded: at most ``max_events`` events and ``max_bytes`` (payloads,
topics and a fixed cost per event: :func:`held_bytes`) are kept; a commit that
would pass either empties the tail (the source, behind by then, reads the log
until it reaches what the tail holds again). A source uses a tail only where it
would read the log unfiltered anyway (every commit passes through every tail).
"""

from __future__ import annotations

from collections import deque

import trio

from tidelog.storage.records import Event

EVENT_BYTES = 200
"""What an event held costs beyond its payload and topic (the ``Event``, its
provenance, the deque's slot), roughly."""


def held_bytes(event: Event) -> int:
    """What holding ``event`` costs, for the tail's bound and its batches."""
    return len(event.payload) + len(event.topic) + EVENT_BYTES


class LiveTail:
    """Committed events from some offset on, contiguous, bounded (see the module docs)."""

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._events: deque[Event] = deque()
        self._bytes = 0
        self._wake = trio.Event()

    def __len__(self) -> int:
        return len(self._events)

    def committed(self, events: list[Event]) -> None:
        """A commit hook: keep ``events`` (those of one commit, in offset order)."""
        if not events:
            return
        size = sum(map(held_bytes, events))
        held = self._events
        if (
            len(held) + len(events) > self.max_events
            or self._bytes + size > self.max_bytes
            or (held and held[-1].offset + 1 != events[0].offset)
        ):
            held.clear()  # the source is behind: it reads the log until it gets here
            self._bytes = 0
            if len(events) > self.max_events or size > self.max_bytes:
                self._wake.set()
                return
        held.extend(events)
        self._bytes += size
        self._wake.set()

    def take(self, position: int, limit: int, max_bytes: int) -> list[Event] | None:
        """Up to ``limit`` events from ``position`` on, at most ``max_bytes`` by
        :func:`held_bytes` (at least one event), if the tail holds ``position`` (what
        lies below it is dropped); None if the source must read the log."""
        held = self._events
        while held and held[0].offset < position:
            self._bytes -= held_bytes(held.popleft())
        if not held or held[0].offset != position:
            return None
        if len(held) <= limit and self._bytes <= max_bytes:
            out = list(held)  # the usual case on a live tail: everything since the last
            held.clear()
            self._bytes = 0
            return out
        out = []
        size = 0
        while held and len(out) < limit:
            cost = held_bytes(held[0])
            if out and size + cost > max_bytes:
                break
            size += cost
            out.append(held.popleft())
        self._bytes -= size
        return out

    def arm(self) -> None:
        """Start watching for the next commit (before looking at the log: a commit in
        between then ends :meth:`wait` at once)."""
        if self._wake.is_set():
            self._wake = trio.Event()

    async def wait(self, timeout: float) -> None:
        """Until a commit since :meth:`arm`, or ``timeout`` seconds."""
        with trio.move_on_after(timeout):
            await self._wake.wait()
