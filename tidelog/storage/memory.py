"""``memory://``: the log in RAM. Same semantics as the durable backends, no durability.

For tests, benchmarks of the layers above storage, and ephemeral brokers.
Events are kept as decoded :class:`Event` objects beside their encoded sizes
(so byte accounting matches the other backends).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Mapping, Sequence

from tidelog.storage.base import (
    DEFAULT_READ_LIMIT,
    DEFAULT_READ_MAX_BYTES,
    AppendNotifier,
    CursorState,
    EventLog,
    LogOptions,
    LogState,
    LogStatistics,
    ReadResult,
    RetentionResult,
    TopicInfo,
)
from tidelog.storage.common import (
    MAX_SCAN_PER_READ,
    check_filter,
    check_open,
    check_start,
    dump_metadata,
    encode_batch,
    load_metadata,
)
from tidelog.storage.records import Event, NewEvent, stored_events
from tidelog.topics import compile_filter


class MemoryLog(EventLog):
    """An :class:`EventLog` held in lists and dicts."""

    backend_name = "memory"

    def __repr__(self) -> str:
        return "memory://"

    def __init__(self, options: LogOptions) -> None:
        self._options = options
        self._events: list[Event] = []
        self._sizes: list[int] = []
        self._timestamps: list[int] = []
        self._first = 0  # offset of self._events[0]
        self._bytes = 0
        self._topic_counts: Counter[str] = Counter()
        self._topic_last: dict[str, int] = {}  # a topic's newest offset (stale once count is 0)
        self._cursors: dict[str, bytes] = {}
        self._cursor_positions: dict[str, int] = {}
        self._state: dict[str, dict[str, bytes]] = {}
        self._last_timestamp = 0
        self._notifier = AppendNotifier(0)
        self._closed = False
        self._stats = {
            "appends": 0,
            "appended_events": 0,
            "appended_bytes": 0,
            "reads": 0,
            "read_events": 0,
        }

    @classmethod
    async def open(cls, path: str | None, options: LogOptions) -> MemoryLog:
        return cls(options)

    @property
    def _next(self) -> int:
        return self._first + len(self._events)

    async def append(self, events: Sequence[NewEvent]) -> list[Event]:
        check_open(self._closed)
        if not events:
            return []
        timestamp = max(self._options.clock(), self._last_timestamp)
        records = encode_batch(events, timestamp, self._options.max_record_bytes)
        offset = self._next
        stored = stored_events(events, offset, timestamp)
        sizes = [len(r) for r in records]
        self._last_timestamp = timestamp
        self._events.extend(stored)
        self._sizes.extend(sizes)
        self._timestamps.extend([timestamp] * len(stored))
        self._topic_counts.update(e.topic for e in stored)
        self._topic_last.update((e.topic, e.offset) for e in stored)
        batch_bytes = sum(sizes)
        self._bytes += batch_bytes
        self._stats["appends"] += 1
        self._stats["appended_events"] += len(stored)
        self._stats["appended_bytes"] += batch_bytes
        self._notifier.notify(self._next)
        return stored

    async def read(
        self,
        start: int,
        topic_filter: str | None = None,
        *,
        limit: int = DEFAULT_READ_LIMIT,
        max_bytes: int | None = DEFAULT_READ_MAX_BYTES,
        end: int | None = None,
    ) -> ReadResult:
        check_open(self._closed)
        topic_filter = check_filter(topic_filter)
        start = check_start(start, self._first, self._next)
        stop = self._next if end is None else max(start, min(end, self._next))
        match = compile_filter(topic_filter) if topic_filter is not None else None
        out: list[Event] = []
        total = 0
        index = start - self._first
        last_index = stop - self._first
        scan_end = min(last_index, index + MAX_SCAN_PER_READ)
        while index < scan_end and len(out) < limit:
            event = self._events[index]
            if match is None or match(event.topic):
                size = self._sizes[index]
                if out and max_bytes is not None and total + size > max_bytes:
                    break
                total += size
                out.append(event)
            index += 1
        self._stats["reads"] += 1
        self._stats["read_events"] += len(out)
        return ReadResult(out, index + self._first)

    async def offset_for_time(self, timestamp: int) -> int:
        check_open(self._closed)
        return self._first + bisect.bisect_left(self._timestamps, timestamp)

    async def state(self) -> LogState:
        check_open(self._closed)
        return LogState(
            first_offset=self._first,
            next_offset=self._next,
            first_timestamp=self._timestamps[0] if self._timestamps else None,
            last_timestamp=self._timestamps[-1] if self._timestamps else None,
            bytes=self._bytes,
        )

    async def topics(self, topic_filter: str | None = None) -> list[TopicInfo]:
        check_open(self._closed)
        match = compile_filter(check_filter(topic_filter) or "#") if topic_filter else None
        return [
            TopicInfo(topic, count, self._topic_last[topic])
            for topic, count in sorted(self._topic_counts.items())
            if count and (match is None or match(topic))
        ]

    async def wait_for_append(self, offset: int) -> int:
        check_open(self._closed)
        return await self._notifier.wait(offset)

    def statistics(self) -> LogStatistics:
        return LogStatistics(
            backend=self.backend_name,
            first_offset=self._first,
            next_offset=self._next,
            bytes=self._bytes,
            **self._stats,
        )

    async def load_cursor(self, name: str) -> CursorState | None:
        check_open(self._closed)
        if name not in self._cursors:
            return None
        return CursorState(name, self._cursor_positions[name], load_metadata(self._cursors[name]))

    async def commit_cursors(self, cursors: Sequence[CursorState]) -> None:
        check_open(self._closed)
        encoded = [(c, dump_metadata(c.metadata)) for c in cursors]  # validate all first
        for cursor, metadata in encoded:
            self._cursors[cursor.name] = metadata
            self._cursor_positions[cursor.name] = cursor.position

    async def delete_cursor(self, name: str) -> bool:
        check_open(self._closed)
        self._cursor_positions.pop(name, None)
        return self._cursors.pop(name, None) is not None

    async def list_cursors(self) -> list[CursorState]:
        check_open(self._closed)
        return [
            CursorState(name, self._cursor_positions[name], load_metadata(self._cursors[name]))
            for name in sorted(self._cursors)
        ]

    async def get_state(self, namespace: str, key: str) -> bytes | None:
        check_open(self._closed)
        return self._state.get(namespace, {}).get(key)

    async def put_state(self, namespace: str, items: Mapping[str, bytes | None]) -> None:
        check_open(self._closed)
        space = self._state.setdefault(namespace, {})
        for key, value in items.items():
            if value is None:
                space.pop(key, None)
            else:
                space[key] = bytes(value)

    async def list_state(self, namespace: str) -> dict[str, bytes]:
        check_open(self._closed)
        return dict(self._state.get(namespace, {}))

    async def apply_retention(
        self, *, max_age_ms: int | None = None, max_bytes: int | None = None
    ) -> RetentionResult:
        check_open(self._closed)
        if max_age_ms is None and max_bytes is None:
            max_age_ms, max_bytes = self._options.retention_ms, self._options.retention_bytes
        drop = 0
        if max_age_ms is not None:
            drop = bisect.bisect_left(self._timestamps, self._options.clock() - max_age_ms)
        removed_bytes = sum(self._sizes[:drop])
        if max_bytes is not None:
            remaining = self._bytes - removed_bytes
            while drop < len(self._sizes) and remaining > max_bytes:
                remaining -= self._sizes[drop]
                removed_bytes += self._sizes[drop]
                drop += 1
        if drop:
            self._topic_counts.subtract(e.topic for e in self._events[:drop])
            del self._events[:drop], self._sizes[:drop], self._timestamps[:drop]
            self._first += drop
            self._bytes -= removed_bytes
        return RetentionResult(drop, removed_bytes, self._first)

    async def aclose(self) -> None:
        self._closed = True
        self._notifier.close()
