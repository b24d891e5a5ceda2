"""Group commit for the broker's small durable state: cursor positions and key-value state.

Many consumers commit cursor positions and sessions save their state, often
many times a second. Each caller waits until its write is durable, but writes
that arrive while one transaction is in progress are merged (the last value
of a key wins) into the next one, the same way the event writer batches
appends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from tidelog.errors import StorageError
from tidelog.storage import CursorState, EventLog

log = logging.getLogger(__name__)

Snapshot = Callable[[], tuple[CursorState, str, dict[str, bytes | None]]]
"""Returns a cursor position, a state namespace and its keys to store (see
:meth:`StateWriter.commit_latest`)."""

UNREADABLE = (ValueError, TypeError, KeyError, IndexError, StorageError)
"""What decoding a stored state entry can raise when the entry is damaged or from an
incompatible version (JSON, struct, attrs and record decoding errors)."""


def report_unreadable(
    log_url: object, namespace: str, key: str, exc: BaseException, what: str
) -> None:
    """Log a stored state entry that cannot be loaded; the caller then sets it aside.

    One damaged entry must never stop the broker from serving everything else, nor
    make every restart fail: it is skipped (and left in storage, where ``tidelog
    dump`` still shows it) with a line that says where it is and what to do."""
    log.error(
        "%s: %s entry %r cannot be loaded (%s: %s); it is skipped and left in storage. %s",
        log_url,
        namespace,
        key[:200],
        type(exc).__name__,
        exc,
        what,
    )


class _Batch:
    """One transaction's waiters: ``done`` is set when it is durable or failed."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: BaseException | None = None


class StateWriter:
    """Coalesces cursor commits and state puts. Run :meth:`run` in a nursery."""

    def __init__(self, log: EventLog) -> None:
        self._log = log
        self._cursors: dict[str, CursorState] = {}
        self._state: dict[str, dict[str, bytes | None]] = {}
        self._snapshots: dict[str, Snapshot] = {}
        self._batch = _Batch()  # the transaction being gathered
        self._work = trio.lowlevel.ParkingLot()
        self._closing = False
        self.transactions = 0

    async def commit_cursor(self, cursor: CursorState) -> None:
        """Store a cursor position; returns once durable."""
        self._cursors[cursor.name] = cursor
        await self._wait_durable()

    async def commit(
        self, cursor: CursorState, namespace: str, items: dict[str, bytes | None]
    ) -> None:
        """Store a cursor position and state keys in the same batch; returns once
        durable (a consumer group's floor and its pending map)."""
        self._cursors[cursor.name] = cursor
        self._state.setdefault(namespace, {}).update(items)
        await self._wait_durable()

    def commit_nowait(
        self, cursor: CursorState, namespace: str, items: dict[str, bytes | None]
    ) -> None:
        """Like :meth:`commit`, stored by the next batch without waiting."""
        self._cursors[cursor.name] = cursor
        self._state.setdefault(namespace, {}).update(items)
        self._work.unpark_all()

    async def commit_latest(self, key: str, snapshot: Snapshot) -> None:
        """Store what ``snapshot()`` returns (a cursor position and state keys) when the
        next batch is written, and wait until that is durable. Callers that change
        something many times between batches (a consumer group on every lease and
        ack) pay for one snapshot per batch instead of one per change."""
        self._snapshots[key] = snapshot
        await self._wait_durable()

    def commit_latest_nowait(self, key: str, snapshot: Snapshot) -> None:
        """:meth:`commit_latest` without waiting."""
        self._snapshots[key] = snapshot
        self._work.unpark_all()

    def discard_cursor(self, name: str) -> None:
        """Drop a cursor write not yet stored (the cursor is being deleted)."""
        self._cursors.pop(name, None)
        self._snapshots.pop(name, None)

    async def put(self, namespace: str, items: dict[str, bytes | None]) -> None:
        """Set (None: delete) keys of a state namespace; returns once durable."""
        self._state.setdefault(namespace, {}).update(items)
        await self._wait_durable()

    def put_nowait(self, namespace: str, items: dict[str, bytes | None]) -> None:
        """Like :meth:`put`, for callers that cannot wait: the next transaction stores
        it (an error there is logged by nobody's waiter; the next put retries nothing)."""
        self._state.setdefault(namespace, {}).update(items)
        self._work.unpark_all()

    async def _wait_durable(self) -> None:
        batch = self._batch
        self._work.unpark_all()
        await batch.done.wait()
        if batch.error is not None:
            raise batch.error

    def close(self) -> None:
        self._closing = True
        self._work.unpark_all()

    async def run(self) -> None:
        while True:
            if not self._cursors and not self._state and not self._snapshots:
                if self._closing:
                    return
                await self._work.park()
                continue
            snapshots, self._snapshots = self._snapshots, {}
            for snapshot in snapshots.values():  # taken now: the latest of each
                cursor, namespace, items = snapshot()
                self._cursors[cursor.name] = cursor
                self._state.setdefault(namespace, {}).update(items)
            cursors, self._cursors = self._cursors, {}
            state, self._state = self._state, {}
            batch, self._batch = self._batch, _Batch()
            try:
                await self._log.commit_cursors_and_state(list(cursors.values()), state)
                self.transactions += 1
            except Exception as exc:  # the waiters of this batch get the error
                batch.error = exc
            batch.done.set()
