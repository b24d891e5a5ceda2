"""``sqlite:///path``: the log in one SQLite file (standard library ``sqlite3``, WAL mode).

Same semantics as the other backends, on a database anyone can open with the
``sqlite3`` shell. It proves the interface is not LMDB-shaped; it is not the
fast path (see "Costs" below).

On-disk format, schema version 1 (``PRAGMA application_id`` is ``0x74646c67``,
"tdlg")::

    schema_version (version)                          one row: 1
    log_state (id = 0, first_offset, next_offset,     one row, updated by every
               last_timestamp, bytes)                 append and retention pass
    events (offset INTEGER PRIMARY KEY, timestamp,    the log; ``record`` is the
            topic_id, record BLOB)                    binary record of records.py
    events_by_topic ON events (topic_id)              ordered by (topic_id, offset):
                                                      the rowid is the index's tail
    topics (id INTEGER PRIMARY KEY, topic UNIQUE,     the topic dictionary, with
            count)                                    live event counts
    cursors (name PRIMARY KEY, position, metadata)    metadata is compact JSON
    state (namespace, key, value BLOB)                engine key-value state

There is no timestamp index: timestamps never decrease along offsets and
offsets are dense, so :meth:`SqliteLog.offset_for_time` binary-searches the
primary key (about 20 point reads for a million events). An index on
``timestamp`` cost about 10% of append throughput when measured, for lookups
that are already fast enough.

Durability (``synchronous`` is SQLite's pragma):

* ``always``: ``synchronous=FULL``; every commit fsyncs the WAL, so an append
  or cursor commit is on disk when it returns.
* ``interval:<ms>``: ``synchronous=NORMAL``; commits are not fsynced, but a
  background task runs ``PRAGMA wal_checkpoint(PASSIVE)`` every ``ms`` (when
  something was written), which fsyncs the WAL and then the database. A process
  crash loses nothing that was acknowledged; a power loss or OS crash loses at
  most the last ``ms`` of appends (provided no other process holds a read
  transaction open on the file, which would hold the checkpoint back).
* ``never``: ``synchronous=NORMAL`` without the timer: the WAL is fsynced only
  at SQLite's automatic checkpoints (every ~1000 pages) and on close. A power
  loss may lose recent appends; the file stays consistent. (``synchronous=OFF``
  is not used: after an OS crash it may leave a corrupt database, which the
  ``never`` contract rules out.)

Every append is one ``BEGIN IMMEDIATE`` ... ``COMMIT`` transaction: the events,
new topics, topic counts and ``log_state`` together. After a crash SQLite's WAL
recovery leaves the last committed batch standing; opening checks that
``log_state`` agrees with the first and last rows of ``events``.

Threading: one connection, opened with ``check_same_thread=False``. Every call
into ``sqlite3`` runs in a trio worker thread under a ``CapacityLimiter(1)``,
so exactly one thread uses the connection at a time and waiting callers queue
in trio, not in threads. The log's extent is cached in an immutable snapshot
that the worker replaces after each commit, so :meth:`SqliteLog.state` and
:meth:`SqliteLog.statistics` never touch the database.

A second process opening the same file gets :class:`~tidelog.errors.LogLockedError`:
the log holds an exclusive ``flock`` on ``<path>.lock`` while open.

Costs and limits: the per-record topic index is written in the same fsynced
transaction as the events. Measured with raw sqlite3 (1M events, batches of
1000, ``synchronous=FULL``): 263k events/s without it, 160k with 100 topics,
58k with 10k topics, because every commit dirties one index page per distinct
topic in the batch (``bench/sqlite_log.py`` shows the same through this
backend: 90k vs 25k events/s). A filtered read holds the connection while it
scans up to ``MAX_SCAN_PER_READ`` rows, delaying appends meanwhile. Retention
deletes rows in chunks; freed pages are reused by later appends, the file does
not shrink. Wildcard reads use SQLite's JSON functions (built in since 3.38).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import heapq
import json
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import attrs
import trio

from tidelog.errors import (
    CorruptLogError,
    InvalidStorageURLError,
    LogClosedError,
    LogLockedError,
    StorageError,
    StorageFullError,
)
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
from tidelog.storage.records import (
    CorruptRecordError,
    Event,
    NewEvent,
    decode_record,
    stored_events,
)
from tidelog.topics import compile_filter

T = TypeVar("T")

SCHEMA_VERSION = 1
APPLICATION_ID = 0x74646C67  # "tdlg"

INDEX_MERGE_MAX_TOPICS = 64
"""A filtered read merges per-topic index ranges when the filter matches at most
this many topics holding at most a quarter of the log; otherwise it scans the
offset range (at most ``MAX_SCAN_PER_READ`` rows) and filters in SQL."""

RETENTION_CHUNK = 50_000
"""Retention deletes at most this many events per transaction, so appends
interleave with a large deletion instead of waiting for all of it."""

_SCHEMA = (
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE log_state (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        first_offset INTEGER NOT NULL,
        next_offset INTEGER NOT NULL,
        last_timestamp INTEGER NOT NULL,
        bytes INTEGER NOT NULL
    )""",
    """CREATE TABLE topics (
        id INTEGER PRIMARY KEY,
        topic TEXT NOT NULL UNIQUE,
        count INTEGER NOT NULL
    )""",
    """CREATE TABLE events (
        offset INTEGER PRIMARY KEY,
        timestamp INTEGER NOT NULL,
        topic_id INTEGER NOT NULL,
        record BLOB NOT NULL
    )""",
    "CREATE INDEX events_by_topic ON events (topic_id)",
    """CREATE TABLE cursors (
        name TEXT PRIMARY KEY,
        position INTEGER NOT NULL,
        metadata TEXT NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE state (
        namespace TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (namespace, key)
    ) WITHOUT ROWID""",
)

# SQLite primary result codes (https://sqlite.org/rescode.html).
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_NOTADB = 26


def translate_error(exc: sqlite3.Error, path: str) -> StorageError:
    """The :mod:`tidelog.errors` class for a driver exception (the caller chains it)."""
    code = getattr(exc, "sqlite_errorcode", None)
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    message = f"sqlite log {path}: {exc} ({name})"
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return CorruptLogError(message)
    if primary == _SQLITE_FULL:
        return StorageFullError(message)
    return StorageError(message)


@attrs.define
class _TopicMatch:
    """The live topics a filter matches, cached per filter while the dictionary only grows."""

    seen: int
    """How many topics of the dictionary (in insertion order) were examined."""
    ids: list[int]
    scan_condition: tuple[str, str | None] | None = None
    """For the scan path: an SQL condition on topic_id and its JSON list of ids (built lazily)."""


@attrs.frozen
class _Extent:
    """The log's extent after the last commit, replaced whole (never mutated)."""

    first_offset: int
    next_offset: int
    first_timestamp: int | None
    last_timestamp: int
    bytes: int


class _Store:
    """The synchronous side: owns the connection; every method runs in a worker thread.

    Callers serialize access (one thread at a time). Cached state (the extent,
    the topic dictionary and counts) changes only after a commit succeeds.
    """

    def __init__(self, path: str, conn: sqlite3.Connection, lock_fd: int, options: LogOptions):
        self.path = path
        self._conn: sqlite3.Connection | None = conn
        self._lock_fd = lock_fd
        self._options = options
        self.extent = _Extent(0, 0, None, 0, 0)
        self._topic_ids: dict[str, int] = {}
        self._topic_counts: dict[int, int] = {}
        # a topic's newest offset: set on append, else looked up once (max over the
        # events_by_topic index, which holds the offset: one index seek)
        self._topic_last: dict[int, int] = {}
        self._topic_order: list[tuple[str, int]] = []  # insertion order, for the filter cache
        self._filter_cache: dict[str, _TopicMatch] = {}

    # -- opening and closing -------------------------------------------------------

    @classmethod
    def open(cls, path: str, options: LogOptions) -> _Store:
        _check_path(path)
        lock_fd = _lock(path)
        conn: sqlite3.Connection | None = None
        try:
            try:
                conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            except sqlite3.Error as exc:
                raise translate_error(exc, path) from exc
            store = cls(path, conn, lock_fd, options)
            store.call(store._setup)
            return store
        except BaseException:
            if conn is not None:
                conn.close()
            os.close(lock_fd)
            raise

    def _setup(self) -> None:
        conn = self._connection()
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StorageError(f"sqlite log {self.path}: cannot use WAL mode (got {mode!r})")
        synchronous = "FULL" if self._options.fsync.mode == "always" else "NORMAL"
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA cache_size=-32768")  # KiB: 32 MiB of page cache
        conn.execute("PRAGMA journal_size_limit=67108864")  # truncate a big WAL after use
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        if not tables:
            self._create_schema()
        else:
            self._check_schema(tables)
        self._load()

    def _create_schema(self) -> None:
        with self._transaction() as conn:
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            conn.execute("INSERT INTO log_state VALUES (0, 0, 0, 0, 0)")
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")

    def _check_schema(self, tables: set[str]) -> None:
        conn = self._connection()
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if app_id != APPLICATION_ID or "schema_version" not in tables:
            raise InvalidStorageURLError(
                f"sqlite log {self.path}: the file is an SQLite database but not a tidelog log"
            )
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        if row is None:
            raise CorruptLogError(f"sqlite log {self.path}: the schema version is missing")
        if row[0] != SCHEMA_VERSION:
            raise StorageError(
                f"sqlite log {self.path}: schema version {row[0]}; "
                f"this tidelog reads version {SCHEMA_VERSION}"
            )

    def _load(self) -> None:
        conn = self._connection()
        row = conn.execute(
            "SELECT first_offset, next_offset, last_timestamp, bytes FROM log_state WHERE id = 0"
        ).fetchone()
        if row is None:
            raise CorruptLogError(f"sqlite log {self.path}: the log_state row is missing")
        first, next_offset, last_timestamp, size = row
        lowest = conn.execute("SELECT min(offset) FROM events").fetchone()[0]
        highest = conn.execute("SELECT max(offset) FROM events").fetchone()[0]
        expected = (None, None) if first == next_offset else (first, next_offset - 1)
        if (lowest, highest) != expected:
            raise CorruptLogError(
                f"sqlite log {self.path}: log_state says offsets {first}..{next_offset - 1} "
                f"but the events table holds {lowest}..{highest}"
            )
        for topic_id, topic, count in conn.execute("SELECT id, topic, count FROM topics"):
            self._topic_ids[topic] = topic_id
            self._topic_counts[topic_id] = count
            self._topic_order.append((topic, topic_id))
        first_timestamp = self._timestamp_at(first) if first < next_offset else None
        self.extent = _Extent(first, next_offset, first_timestamp, last_timestamp, size)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.close()  # the last connection checkpoints (with fsync) and removes the WAL
        finally:
            os.close(self._lock_fd)

    # -- plumbing ----------------------------------------------------------------------

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` translating driver errors; refuse if the log is closed."""
        if self._conn is None:
            raise LogClosedError("the log is closed")
        try:
            return fn()
        except sqlite3.Error as exc:
            raise translate_error(exc, self.path) from exc

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LogClosedError("the log is closed")
        return self._conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                # SQLite may already have rolled back (e.g. after SQLITE_FULL); the
                # error worth reporting is the one that got us here.
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    def _timestamp_at(self, offset: int) -> int:
        row = (
            self._connection()
            .execute("SELECT timestamp FROM events WHERE offset = ?", (offset,))
            .fetchone()
        )
        if row is None:
            raise CorruptLogError(f"sqlite log {self.path}: offset {offset} is missing")
        return int(row[0])

    # -- the log -----------------------------------------------------------------------

    def append(self, events: Sequence[NewEvent]) -> tuple[list[Event], int]:
        extent = self.extent
        timestamp = max(self._options.clock(), extent.last_timestamp)
        records = encode_batch(events, timestamp, self._options.max_record_bytes)
        first = extent.next_offset
        new_topics: dict[str, int] = {}
        added: Counter[int] = Counter()
        last: dict[int, int] = {}
        rows = []
        batch_bytes = 0
        with self._transaction() as conn:
            for offset, (event, record) in enumerate(zip(events, records, strict=True), first):
                topic_id = self._topic_ids.get(event.topic)
                if topic_id is None:
                    topic_id = new_topics.get(event.topic)
                if topic_id is None:
                    cursor = conn.execute(
                        "INSERT INTO topics (topic, count) VALUES (?, 0)", (event.topic,)
                    )
                    if cursor.lastrowid is None:
                        raise StorageError(f"sqlite log {self.path}: no id for a new topic")
                    topic_id = new_topics[event.topic] = cursor.lastrowid
                added[topic_id] += 1
                last[topic_id] = offset
                batch_bytes += len(record)
                rows.append((offset, timestamp, topic_id, record))
            conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", rows)
            conn.executemany(
                "UPDATE topics SET count = count + ? WHERE id = ?",
                [(count, topic_id) for topic_id, count in added.items()],
            )
            next_offset = first + len(rows)
            conn.execute(
                "UPDATE log_state SET next_offset = ?, last_timestamp = ?, bytes = ? WHERE id = 0",
                (next_offset, timestamp, extent.bytes + batch_bytes),
            )
        for topic, topic_id in new_topics.items():
            self._topic_ids[topic] = topic_id
            self._topic_order.append((topic, topic_id))
        for topic_id, count in added.items():
            self._topic_counts[topic_id] = self._topic_counts.get(topic_id, 0) + count
        self._topic_last.update(last)
        self.extent = _Extent(
            extent.first_offset,
            next_offset,
            timestamp if extent.first_timestamp is None else extent.first_timestamp,
            timestamp,
            extent.bytes + batch_bytes,
        )
        stored = stored_events(events, first, timestamp)
        return stored, batch_bytes

    def read(
        self,
        start: int,
        topic_filter: str | None,
        limit: int,
        max_bytes: int | None,
        end: int | None,
    ) -> ReadResult:
        extent = self.extent
        start = check_start(start, extent.first_offset, extent.next_offset)
        stop = extent.next_offset if end is None else max(start, min(end, extent.next_offset))
        if start >= stop or limit <= 0:
            return ReadResult([], start)
        conn = self._connection()
        if topic_filter is None:
            rows = conn.execute(
                "SELECT offset, record FROM events WHERE offset >= ? AND offset < ? "
                "ORDER BY offset LIMIT ?",
                (start, stop, limit),
            )
            return self._collect(rows, limit, max_bytes, stop, dense_from=start)
        match = self._match(topic_filter)
        topic_ids = match.ids
        if not topic_ids:
            return ReadResult([], stop)
        if len(topic_ids) == 1 or (
            len(topic_ids) <= INDEX_MERGE_MAX_TOPICS
            and sum(self._topic_counts[topic_id] for topic_id in topic_ids) * 4
            <= extent.next_offset - extent.first_offset
        ):
            # Per-topic index ranges, merged by offset: reads only matching rows.
            ranges = [
                conn.execute(
                    "SELECT offset, record FROM events "
                    "WHERE topic_id = ? AND offset >= ? AND offset < ? ORDER BY offset LIMIT ?",
                    (topic_id, start, stop, limit),
                )
                for topic_id in topic_ids
            ]
            merged: Iterable[tuple[int, bytes]] = (
                ranges[0] if len(ranges) == 1 else heapq.merge(*ranges)
            )
            try:
                return self._collect(merged, limit, max_bytes, stop)
            finally:
                for cursor in ranges:
                    cursor.close()
        # A bounded scan of the offset range, filtered in SQL.
        scan_end = min(stop, start + MAX_SCAN_PER_READ)
        condition, ids_json = self._scan_condition(match)
        rows = conn.execute(
            f"SELECT offset, record FROM events WHERE offset >= ? AND offset < ? {condition} "
            "ORDER BY offset LIMIT ?",
            (start, scan_end, limit) if ids_json is None else (start, scan_end, ids_json, limit),
        )
        return self._collect(rows, limit, max_bytes, scan_end)

    def _collect(
        self,
        rows: Iterable[tuple[int, bytes]],
        limit: int,
        max_bytes: int | None,
        exhausted: int,
        dense_from: int | None = None,
    ) -> ReadResult:
        """Decode rows in offset order up to ``limit`` / ``max_bytes``.

        ``exhausted`` is where the next read continues when the rows run out
        (everything before it was examined). For an unfiltered read,
        ``dense_from`` checks that no offset is missing.
        """
        out: list[Event] = []
        total = 0
        expected = dense_from
        for offset, record in rows:
            if expected is not None:
                if offset != expected:
                    raise CorruptLogError(f"sqlite log {self.path}: offset {expected} is missing")
                expected += 1
            size = len(record)
            if out and max_bytes is not None and total + size > max_bytes:
                return ReadResult(out, offset)
            total += size
            try:
                out.append(decode_record(offset, record))
            except CorruptRecordError as exc:
                raise exc.located(f"sqlite log {self.path}") from exc
            if len(out) >= limit:
                return ReadResult(out, offset + 1)
        if expected is not None and expected != exhausted:
            raise CorruptLogError(f"sqlite log {self.path}: offset {expected} is missing")
        return ReadResult(out, exhausted)

    def _match(self, topic_filter: str) -> _TopicMatch:
        """The live topics ``topic_filter`` matches (cached; new topics examined once)."""
        topic_id = self._topic_ids.get(topic_filter)
        if topic_id is not None:  # a filter without wildcards naming a stored topic
            return _TopicMatch(len(self._topic_order), [topic_id])
        cached = self._filter_cache.get(topic_filter)
        if cached is None:
            if len(self._filter_cache) >= 1024:
                self._filter_cache.clear()
            cached = self._filter_cache[topic_filter] = _TopicMatch(0, [])
        if cached.seen < len(self._topic_order):
            match = compile_filter(topic_filter)
            new = [tid for topic, tid in self._topic_order[cached.seen :] if match(topic)]
            cached.seen = len(self._topic_order)
            cached.ids = cached.ids + new
            cached.scan_condition = None  # it may name the topics that did not match
        return cached

    def _scan_condition(self, match: _TopicMatch) -> tuple[str, str | None]:
        """SQL restricting a scan to ``match``: none, ``IN`` its ids, or ``NOT IN`` the others.

        ``+topic_id`` keeps SQLite from trading the ordered scan for the topic
        index and a sort.
        """
        if match.scan_condition is None:
            if len(match.ids) == len(self._topic_counts):
                match.scan_condition = ("", None)
            elif len(match.ids) * 2 <= len(self._topic_counts):
                match.scan_condition = (
                    "AND +topic_id IN (SELECT value FROM json_each(?))",
                    json.dumps(match.ids),
                )
            else:
                wanted = set(match.ids)
                others = [tid for tid in self._topic_counts if tid not in wanted]
                match.scan_condition = (
                    "AND +topic_id NOT IN (SELECT value FROM json_each(?))",
                    json.dumps(others),
                )
        return match.scan_condition

    def offset_for_time(self, timestamp: int) -> int:
        extent = self.extent
        low, high = extent.first_offset, extent.next_offset
        if extent.first_timestamp is None or timestamp <= extent.first_timestamp:
            return low
        if timestamp > extent.last_timestamp:
            return high
        while low < high:  # timestamps never decrease along dense offsets
            middle = (low + high) // 2
            if self._timestamp_at(middle) < timestamp:
                low = middle + 1
            else:
                high = middle
        return low

    def topics(self, topic_filter: str | None) -> list[TopicInfo]:
        match = compile_filter(topic_filter) if topic_filter is not None else None
        return [
            TopicInfo(topic, self._topic_counts[topic_id], self._last_offset(topic_id))
            for topic, topic_id in sorted(self._topic_ids.items())
            if self._topic_counts[topic_id] > 0 and (match is None or match(topic))
        ]

    def _last_offset(self, topic_id: int) -> int:
        """The newest offset of a topic that has stored events."""
        last = self._topic_last.get(topic_id)
        if last is None:
            (last,) = (
                self._connection()
                .execute("SELECT max(offset) FROM events WHERE topic_id = ?", (topic_id,))
                .fetchone()
            )
            self._topic_last[topic_id] = last
        return last

    def checkpoint(self) -> None:
        """Fsync the WAL and copy it into the database (``interval`` policy)."""
        self._connection().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    # -- retention -------------------------------------------------------------------

    def retention_end(self, max_age_ms: int | None, max_bytes: int | None) -> int:
        """The offset before which retention drops everything."""
        extent = self.extent
        drop_end = extent.first_offset
        if max_age_ms is not None:
            drop_end = self.offset_for_time(self._options.clock() - max_age_ms)
        if max_bytes is not None and extent.bytes > max_bytes:
            conn = self._connection()
            (dropped,) = conn.execute(
                "SELECT coalesce(sum(length(record)), 0) FROM events "
                "WHERE offset >= ? AND offset < ?",
                (extent.first_offset, drop_end),
            ).fetchone()
            remaining = extent.bytes - dropped
            sizes = conn.execute(
                "SELECT offset, length(record) FROM events WHERE offset >= ? ORDER BY offset",
                (drop_end,),
            )
            for offset, size in sizes:
                if remaining <= max_bytes:
                    break
                remaining -= size
                drop_end = offset + 1
            sizes.close()
        return drop_end

    def drop_before(self, drop_end: int) -> tuple[int, int]:
        """Delete up to one chunk of events before ``drop_end``; return (events, bytes)."""
        extent = self.extent
        first = extent.first_offset
        chunk_end = min(drop_end, first + RETENTION_CHUNK, extent.next_offset)
        if chunk_end <= first:
            return 0, 0
        with self._transaction() as conn:
            groups = conn.execute(
                "SELECT topic_id, count(*), sum(length(record)) FROM events "
                "WHERE offset >= ? AND offset < ? GROUP BY topic_id",
                (first, chunk_end),
            ).fetchall()
            removed = sum(count for _, count, _ in groups)
            removed_bytes = sum(size for _, _, size in groups)
            if removed != chunk_end - first:
                raise CorruptLogError(
                    f"sqlite log {self.path}: offsets {first}..{chunk_end - 1} hold "
                    f"{removed} events"
                )
            conn.execute("DELETE FROM events WHERE offset < ?", (chunk_end,))
            conn.executemany(
                "UPDATE topics SET count = count - ? WHERE id = ?",
                [(count, topic_id) for topic_id, count, _ in groups],
            )
            emptied = [
                (topic_id,)
                for topic_id, count, _ in groups
                if self._topic_counts[topic_id] - count <= 0
            ]
            conn.executemany("DELETE FROM topics WHERE id = ?", emptied)
            conn.execute(
                "UPDATE log_state SET first_offset = ?, bytes = ? WHERE id = 0",
                (chunk_end, extent.bytes - removed_bytes),
            )
            first_timestamp = (
                self._timestamp_at(chunk_end) if chunk_end < extent.next_offset else None
            )
        for topic_id, count, _ in groups:
            self._topic_counts[topic_id] -= count
        if emptied:  # the dictionary shrank: rebuild it and forget cached matches
            self._topic_ids = {
                t: i for t, i in self._topic_ids.items() if self._topic_counts[i] > 0
            }
            self._topic_counts = {i: self._topic_counts[i] for i in self._topic_ids.values()}
            self._topic_last = {
                i: o for i, o in self._topic_last.items() if i in self._topic_counts
            }
            self._topic_order = [(t, i) for t, i in self._topic_order if i in self._topic_counts]
            self._filter_cache.clear()
        self.extent = attrs.evolve(
            extent,
            first_offset=chunk_end,
            first_timestamp=first_timestamp,
            bytes=extent.bytes - removed_bytes,
        )
        return removed, removed_bytes

    # -- cursors and key-value state ---------------------------------------------------

    def load_cursor(self, name: str) -> CursorState | None:
        row = (
            self._connection()
            .execute("SELECT position, metadata FROM cursors WHERE name = ?", (name,))
            .fetchone()
        )
        return None if row is None else CursorState(name, row[0], _load_json(row[1]))

    def commit_cursors(self, rows: list[tuple[str, int, str]]) -> None:
        with self._transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO cursors (name, position, metadata) VALUES (?, ?, ?)", rows
            )

    def delete_cursor(self, name: str) -> bool:
        with self._transaction() as conn:
            return conn.execute("DELETE FROM cursors WHERE name = ?", (name,)).rowcount > 0

    def list_cursors(self) -> list[CursorState]:
        rows = self._connection().execute(
            "SELECT name, position, metadata FROM cursors ORDER BY name"
        )
        return [CursorState(name, position, _load_json(meta)) for name, position, meta in rows]

    def get_state(self, namespace: str, key: str) -> bytes | None:
        row = (
            self._connection()
            .execute("SELECT value FROM state WHERE namespace = ? AND key = ?", (namespace, key))
            .fetchone()
        )
        return None if row is None else bytes(row[0])

    def put_state(self, namespace: str, items: list[tuple[str, bytes | None]]) -> None:
        with self._transaction() as conn:
            conn.executemany(
                "DELETE FROM state WHERE namespace = ? AND key = ?",
                [(namespace, key) for key, value in items if value is None],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO state (namespace, key, value) VALUES (?, ?, ?)",
                [(namespace, key, value) for key, value in items if value is not None],
            )

    def list_state(self, namespace: str) -> dict[str, bytes]:
        rows = self._connection().execute(
            "SELECT key, value FROM state WHERE namespace = ?", (namespace,)
        )
        return {key: bytes(value) for key, value in rows}


def _load_json(text: str) -> dict[str, Any]:
    return load_metadata(text.encode())


def _check_path(path: str) -> None:
    """Refuse paths SQLite would treat specially, or that cannot hold the log."""
    if path == ":memory:" or path.startswith("file:"):
        raise InvalidStorageURLError(
            f"sqlite log path {path!r}: give a file path (use memory:// for an in-memory log)"
        )
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise InvalidStorageURLError(f"sqlite log {path}: directory {directory} does not exist")
    if os.path.isdir(path):
        raise InvalidStorageURLError(f"sqlite log {path}: is a directory, expected a file")
    if not os.access(directory, os.W_OK | os.X_OK) or (
        os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK)
    ):
        raise InvalidStorageURLError(f"sqlite log {path}: not readable and writable")


def _lock(path: str) -> int:
    """Hold an exclusive lock on ``<path>.lock`` (released when the fd closes)."""
    lock_path = path + ".lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise InvalidStorageURLError(
            f"sqlite log {path}: cannot open lock file {lock_path}: {exc.strerror}"
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise LogLockedError(
            f"sqlite log {path} is open in another process (it holds {lock_path})"
        ) from exc
    except OSError as exc:
        os.close(fd)
        raise StorageError(f"sqlite log {path}: cannot lock {lock_path}: {exc.strerror}") from exc
    return fd


class SqliteLog(EventLog):
    """An :class:`EventLog` in one SQLite file. See the module docstring."""

    backend_name = "sqlite"

    def __repr__(self) -> str:
        return f"sqlite://{self._store.path}"

    def __init__(self, store: _Store, options: LogOptions) -> None:
        self._store = store
        self._options = options
        self._limiter = trio.CapacityLimiter(1)
        self._notifier = AppendNotifier(store.extent.next_offset)
        self._closed = False
        self._unsynced = True  # committed since the last interval checkpoint (or before a crash)
        self._synced = 0  # fsync interval/never: every event below this offset is on disk
        self._synced_as_of: float | None = None  # time.monotonic() when that sync began
        self._stats = {
            "appends": 0,
            "appended_events": 0,
            "appended_bytes": 0,
            "reads": 0,
            "read_events": 0,
        }

    @classmethod
    async def open(cls, path: str | None, options: LogOptions) -> SqliteLog:
        if not path:
            raise InvalidStorageURLError("sqlite:// needs a file path (sqlite:///path/to/log.db)")
        store = await trio.to_thread.run_sync(_Store.open, path, options)
        return cls(store, options)

    async def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in a worker thread, alone on the connection."""
        check_open(self._closed)
        return await trio.to_thread.run_sync(self._store.call, fn, limiter=self._limiter)

    async def _write(self, fn: Callable[[], T]) -> T:
        """Like :meth:`_call`, for a write the ``interval`` timer must fsync."""
        try:
            return await self._call(fn)
        finally:
            self._unsynced = True

    # -- the log -----------------------------------------------------------------

    async def append(self, events: Sequence[NewEvent]) -> list[Event]:
        check_open(self._closed)
        if not events:
            return []
        batch = list(events)
        stored, batch_bytes = await self._write(functools.partial(self._store.append, batch))
        self._stats["appends"] += 1
        self._stats["appended_events"] += len(stored)
        self._stats["appended_bytes"] += batch_bytes
        self._notifier.notify(max(self._notifier.next_offset, stored[-1].offset + 1))
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
        result = await self._call(
            functools.partial(self._store.read, start, topic_filter, limit, max_bytes, end)
        )
        self._stats["reads"] += 1
        self._stats["read_events"] += len(result.events)
        return result

    async def offset_for_time(self, timestamp: int) -> int:
        check_open(self._closed)
        extent = self._store.extent
        if extent.first_timestamp is None or timestamp <= extent.first_timestamp:
            return extent.first_offset  # "earliest" and "latest" need no thread
        if timestamp > extent.last_timestamp:
            return extent.next_offset
        return await self._call(functools.partial(self._store.offset_for_time, timestamp))

    async def state(self) -> LogState:
        check_open(self._closed)
        extent = self._store.extent
        empty = extent.first_offset == extent.next_offset
        return LogState(
            first_offset=extent.first_offset,
            next_offset=extent.next_offset,
            first_timestamp=extent.first_timestamp,
            last_timestamp=None if empty else extent.last_timestamp,
            bytes=extent.bytes,
        )

    async def topics(self, topic_filter: str | None = None) -> list[TopicInfo]:
        check_open(self._closed)
        topic_filter = check_filter(topic_filter)
        return await self._call(functools.partial(self._store.topics, topic_filter))

    async def wait_for_append(self, offset: int) -> int:
        check_open(self._closed)
        return await self._notifier.wait(offset)

    def statistics(self) -> LogStatistics:
        extent = self._store.extent
        return LogStatistics(
            backend=self.backend_name,
            first_offset=extent.first_offset,
            next_offset=extent.next_offset,
            bytes=extent.bytes,
            durable_offset=(
                extent.next_offset if self._options.fsync.mode == "always" else self._synced
            ),
            durable_as_of=self._synced_as_of,
            **self._stats,
        )

    # -- cursors -------------------------------------------------------------------

    async def load_cursor(self, name: str) -> CursorState | None:
        return await self._call(functools.partial(self._store.load_cursor, name))

    async def commit_cursors(self, cursors: Sequence[CursorState]) -> None:
        check_open(self._closed)
        rows = [(c.name, c.position, dump_metadata(c.metadata).decode()) for c in cursors]
        if rows:
            await self._write(functools.partial(self._store.commit_cursors, rows))

    async def delete_cursor(self, name: str) -> bool:
        return await self._write(functools.partial(self._store.delete_cursor, name))

    async def list_cursors(self) -> list[CursorState]:
        return await self._call(self._store.list_cursors)

    # -- key-value state -------------------------------------------------------------

    async def get_state(self, namespace: str, key: str) -> bytes | None:
        return await self._call(functools.partial(self._store.get_state, namespace, key))

    async def put_state(self, namespace: str, items: Mapping[str, bytes | None]) -> None:
        check_open(self._closed)
        rows = [(key, None if value is None else bytes(value)) for key, value in items.items()]
        if rows:
            await self._write(functools.partial(self._store.put_state, namespace, rows))

    async def list_state(self, namespace: str) -> dict[str, bytes]:
        return await self._call(functools.partial(self._store.list_state, namespace))

    # -- lifecycle -----------------------------------------------------------------

    def background_tasks(self) -> list[Callable[[], Awaitable[None]]]:
        if self._options.fsync.mode == "interval":
            return [self._checkpoint_timer]
        return []

    async def _checkpoint_timer(self) -> None:
        """Bound what a power loss can take under ``interval:<ms>``: fsync every ``ms``.

        A failing checkpoint (disk full, I/O error) raises out of the task, and
        so out of :func:`~tidelog.storage.open_log`: the policy's promise no
        longer holds, and that must not go unnoticed.
        """
        while not self._closed:
            await trio.sleep(self._options.fsync.interval_ms / 1000)
            if self._unsynced:
                self._unsynced = False
                began = time.monotonic()
                end = self._store.extent.next_offset  # at least this much is committed
                try:
                    await self._call(self._store.checkpoint)
                except LogClosedError:
                    return
                self._synced, self._synced_as_of = end, began

    async def apply_retention(
        self, *, max_age_ms: int | None = None, max_bytes: int | None = None
    ) -> RetentionResult:
        check_open(self._closed)
        if max_age_ms is None and max_bytes is None:
            max_age_ms, max_bytes = self._options.retention_ms, self._options.retention_bytes
        drop_end = await self._call(
            functools.partial(self._store.retention_end, max_age_ms, max_bytes)
        )
        removed_events = removed_bytes = 0
        while True:  # one transaction per chunk; appends go on in between
            events, size = await self._write(functools.partial(self._store.drop_before, drop_end))
            if not events:
                break
            removed_events += events
            removed_bytes += size
        return RetentionResult(removed_events, removed_bytes, self._store.extent.first_offset)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._notifier.close()
        # Waits for the operation in flight (if any); later queued ones see the
        # store closed and raise LogClosedError.
        await trio.to_thread.run_sync(self._store.call, self._store.close, limiter=self._limiter)
