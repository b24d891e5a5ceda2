"""Named durable cursors: a filter and a position in the log that survive restarts.

A cursor does not move by itself: :meth:`Cursor.fetch` reads from its position
without moving it, and :meth:`Cursor.commit` moves it (durably, coalesced with
other commits). A consumer that crashes between the two sees the same events
again: at-least-once, and exactly-once for consumers that commit atomically
with their own effects.

Cursors belong to users: each user has a namespace of cursor names. The stored
name (the storage key) of a cursor owned by :data:`DEFAULT_OWNER` (anonymous
clients, the embedded API, and every cursor stored before owners existed) is its
name; any other owner's is ``<owner> U+001F <name>`` (:func:`stored_name`).
Names cannot contain control characters, so the last U+001F splits a stored
name unambiguously (:func:`split_stored_name`). A stored name is at most
:data:`MAX_STORED_NAME_BYTES`, within every backend's key limit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from tidelog.engine.consumers import ConsumerGroup, ConsumerOptions, GroupStatistics
from tidelog.errors import AckPolicyError, InvalidConsumerOptionsError, InvalidCursorNameError
from tidelog.storage import CursorState, ReadResult
from tidelog.storage.base import DEFAULT_READ_MAX_BYTES

if TYPE_CHECKING:
    from tidelog.engine.broker import Broker


DEFAULT_OWNER = "anonymous"
"""The owner whose cursors are stored under their bare name."""
OWNER_SEPARATOR = "\x1f"
MAX_STORED_NAME_BYTES = 480
"""Longest stored cursor name in UTF-8 bytes: below LMDB's 511-byte keys with room to
spare for a backend's key prefix."""


def _has_control(text: str) -> bool:
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text)


def stored_name(owner: str | None, name: str) -> str:
    """The storage key of ``owner``'s cursor ``name``; InvalidCursorNameError if the
    name is not allowed or the key would not fit storage."""
    if not name:
        raise InvalidCursorNameError("a cursor needs a name")
    if _has_control(name):
        raise InvalidCursorNameError("a cursor name cannot contain control characters")
    owner = owner or DEFAULT_OWNER
    key = name if owner == DEFAULT_OWNER else f"{owner}{OWNER_SEPARATOR}{name}"
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > MAX_STORED_NAME_BYTES:
        raise InvalidCursorNameError(
            f"cursor name too long: with its owner's name it takes {size} bytes of "
            f"storage; the most is {MAX_STORED_NAME_BYTES}"
        )
    return key


def split_stored_name(key: str) -> tuple[str, str]:
    """``(owner, name)`` of a stored cursor name."""
    owner, sep, name = key.rpartition(OWNER_SEPARATOR)
    return (owner, name) if sep else (DEFAULT_OWNER, key)


class Cursor:
    """A handle on a named cursor (cheap; many handles may share one name).

    ``name`` is the name its owner gave it, ``owner`` the user it belongs to and
    ``key`` the name it is stored under (see the module docs)."""

    def __init__(self, broker: Broker, state: CursorState) -> None:
        self._broker = broker
        self.key = state.name
        self.owner, self.name = split_stored_name(state.name)
        self.topic_filter: str | None = state.metadata.get("filter")
        self._state = state
        self._position = state.position
        self.metadata = state.metadata
        self.options = stored_options(state)
        """How the cursor is consumed (:class:`~tidelog.engine.consumers.ConsumerOptions`)."""
        self.skipped = 0
        """Offsets the last :meth:`fetch` jumped over because retention had removed them."""

    @property
    def position(self) -> int:
        """The committed position: every matching event below it is acknowledged (for an
        explicit cursor, the floor of its group)."""
        group = self._loaded_group()
        return self._position if group is None else group.floor

    @property
    def explicit(self) -> bool:
        return self.options.ack_policy == "explicit"

    def _loaded_group(self) -> ConsumerGroup | None:
        if not self.explicit:
            return None
        return self._broker.consumers.loaded(self.key)

    async def group(self) -> ConsumerGroup:
        """The consumer group of an explicit cursor; AckPolicyError for other policies."""
        if not self.explicit:
            raise AckPolicyError(
                f"cursor {self.name!r} has ack_policy {self.options.ack_policy!r}; "
                'per-event settlement needs "explicit"'
            )
        return await self._broker.consumers.get(self._state, self.name, self.options)

    async def statistics(self) -> GroupStatistics | None:
        """Leases, redeliveries and dead letters of an explicit cursor (None otherwise)."""
        return (await self.group()).statistics() if self.explicit else None

    def __repr__(self) -> str:
        owner = "" if self.owner == DEFAULT_OWNER else f", owner={self.owner!r}"
        return (
            f"Cursor({self.name!r}{owner}, filter={self.topic_filter!r}, position={self.position})"
        )

    @property
    def lag(self) -> int:
        """Offsets between the cursor and the head of the log (all topics counted)."""
        return max(0, self._broker.end_offset - self.position)

    async def pending(self) -> int:
        """Events matching the cursor's filter that are not yet acknowledged (from the
        position to the head). Unlike :attr:`lag` it skips other topics' events, at the
        cost of counting them (see :meth:`Broker.count`)."""
        if self.explicit:
            return await (await self.group()).count_pending()
        return await self._broker.count(self.topic_filter, self.position)

    async def fetch(
        self,
        limit: int = 100,
        wait: float | None = None,
        *,
        max_bytes: int | None = DEFAULT_READ_MAX_BYTES,
        member: str = "default",
    ) -> ReadResult:
        """Events from the position on (at most ``limit``, stopping before ``max_bytes``
        of payload), without moving the cursor (``cumulative``).

        Under ``ack_policy="explicit"`` the events are leased to ``member`` (the group
        hands out each event to one member at a time; ``next_offset`` is the group's
        high mark); under ``"none"`` the cursor moves past them before they return.

        With ``wait`` (seconds), waits up to that long for a matching event when
        none is there yet. ``result.next_offset`` is what to commit after
        processing the events (it may lie past skipped, non-matching events).
        When retention removed events the cursor had not reached, the read starts
        at the log's start and :attr:`skipped` says how many offsets were lost.
        """
        self.skipped = 0
        if self.explicit:
            group = await self.group()
            return await group.fetch(member, limit, wait, max_bytes=max_bytes)
        start = self.position
        first = (await self._broker.log_state()).first_offset
        if start < first:
            self.skipped = first - start
            start = first
        result = await self._broker.read(
            start, self.topic_filter, limit=limit, max_bytes=max_bytes, wait=wait
        )
        if self.options.ack_policy == "none" and result.next_offset != self.position:
            await self.commit(result.next_offset)
        return result

    async def commit(self, offset: int) -> None:
        """Move the cursor to ``offset`` (the next event to process); durable on return.
        For an explicit cursor: everything below ``offset`` is acknowledged."""
        if self.explicit:
            self._broker.check_commit(self.key, offset)
            await (await self.group()).commit(offset)
            return
        await self._broker.commit_cursor(self.key, offset, self.metadata)
        self._position = offset

    async def ack(self, offsets: Iterable[int], *, durable: bool = True) -> int:
        """Acknowledge events of an explicit cursor; how many were pending. Durable on
        return; with ``durable=False`` applied at once and written by the group's next
        state batch without waiting for it (at-least-once: a kill -9 before that batch
        delivers these events again; see docs/consumers.md)."""
        group = await self.group()
        if not durable:
            return group.ack_nowait(offsets)
        return await group.ack(offsets)

    async def nak(self, offsets: Iterable[int], delay: float | None = None) -> int:
        """Give events back for redelivery after ``delay`` seconds (default: the backoff)."""
        return await (await self.group()).nak(offsets, delay)

    async def progress(self, offsets: Iterable[int]) -> int:
        """Still working on these: extend their leases by ``ack_wait``."""
        return await (await self.group()).progress(offsets)

    async def release(self, member: str) -> int:
        """``member`` went away: its leased events are due for redelivery at once."""
        return (await self.group()).release(member)


def stored_options(state: CursorState) -> ConsumerOptions:
    """The consumer options stored with a cursor (defaults for cursors stored before
    options existed)."""
    try:
        return ConsumerOptions.from_dict(state.metadata.get("consumer"))
    except InvalidConsumerOptionsError:
        return ConsumerOptions()
