"""Named durable cursors: a filter and a position in the log that survive restarts.

A cursor does not move by itself: :meth:`Cursor.fetch` reads from its position
without moving it, and :meth:`Cursor.commit` moves it (durably, coalesced with
other commits). A consumer that crashes between the two sees the same events
again: at-least-once, and exactly-once for consumers that commit atomically
with their own effects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tidelog.storage import CursorState, ReadResult
from tidelog.storage.base import DEFAULT_READ_MAX_BYTES

if TYPE_CHECKING:
    from tidelog.engine.broker import Broker


class Cursor:
    """A handle on a named cursor (cheap; many handles may share one name)."""

    def __init__(self, broker: Broker, state: CursorState) -> None:
        self._broker = broker
        self.name = state.name
        self.topic_filter: str | None = state.metadata.get("filter")
        self.position = state.position
        self.metadata = state.metadata
        self.skipped = 0
        """Offsets the last :meth:`fetch` jumped over because retention had removed them."""

    def __repr__(self) -> str:
        return f"Cursor({self.name!r}, filter={self.topic_filter!r}, position={self.position})"

    @property
    def lag(self) -> int:
        """Offsets between the cursor and the head of the log (all topics counted)."""
        return max(0, self._broker.end_offset - self.position)

    async def pending(self) -> int:
        """Events matching the cursor's filter that are not yet acknowledged (from the
        position to the head). Unlike :attr:`lag` it skips other topics' events, at the
        cost of counting them (see :meth:`Broker.count`)."""
        return await self._broker.count(self.topic_filter, self.position)

    async def fetch(
        self,
        limit: int = 100,
        wait: float | None = None,
        *,
        max_bytes: int | None = DEFAULT_READ_MAX_BYTES,
    ) -> ReadResult:
        """Events from the position on (at most ``limit``, stopping before ``max_bytes``
        of payload), without moving the cursor.

        With ``wait`` (seconds), waits up to that long for a matching event when
        none is there yet. ``result.next_offset`` is what to commit after
        processing the events (it may lie past skipped, non-matching events).
        When retention removed events the cursor had not reached, the read starts
        at the log's start and :attr:`skipped` says how many offsets were lost.
        """
        start = self.position
        first = (await self._broker.log_state()).first_offset
        self.skipped = 0
        if start < first:
            self.skipped = first - start
            start = first
        return await self._broker.read(
            start, self.topic_filter, limit=limit, max_bytes=max_bytes, wait=wait
        )

    async def commit(self, offset: int) -> None:
        """Move the cursor to ``offset`` (the next event to process); durable on return."""
        await self._broker.commit_cursor(self.name, offset, self.metadata)
        self.position = offset
