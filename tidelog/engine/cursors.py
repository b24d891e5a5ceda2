"""Named durable cursors: a filter and a position in the log that survive restarts.

A cursor does not move by itself: :meth:`Cursor.fetch` reads from its position
without moving it, and :meth:`Cursor.commit` moves it (durably, coalesced with
other commits). A consumer that crashes between the two sees the same events
again: at-least-once, and exactly-once for consumers that commit atomically
with their own effects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tidelog.errors import OffsetOutOfRangeError
from tidelog.storage import CursorState, ReadResult

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
        """Events lost to retention the last time the cursor had fallen behind the log start."""

    def __repr__(self) -> str:
        return f"Cursor({self.name!r}, filter={self.topic_filter!r}, position={self.position})"

    @property
    def lag(self) -> int:
        """Offsets between the cursor and the head of the log (all topics counted)."""
        return max(0, self._broker.end_offset - self.position)

    async def fetch(self, limit: int = 100, wait: float | None = None) -> ReadResult:
        """Events from the position on (at most ``limit``), without moving the cursor.

        With ``wait`` (seconds), waits up to that long for a matching event when
        none is there yet. ``result.next_offset`` is what to commit after
        processing the events (it may lie past skipped, non-matching events).
        """
        start = self.position
        first = (await self._broker.log.state()).first_offset
        if start < first:
            self.skipped = first - start
            start = first
        return await self._broker.read(start, self.topic_filter, limit=limit, wait=wait)

    async def commit(self, offset: int) -> None:
        """Move the cursor to ``offset`` (the next event to process); durable on return."""
        if offset < 0 or offset > self._broker.end_offset:
            raise OffsetOutOfRangeError(
                f"cursor {self.name!r}: cannot commit offset {offset}; "
                f"the log ends at {self._broker.end_offset}"
            )
        await self._broker._state_writer.commit_cursor(
            CursorState(self.name, offset, self.metadata)
        )
        self.position = offset
