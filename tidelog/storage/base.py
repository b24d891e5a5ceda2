"""The storage interface every backend implements.

A log is an append-only sequence of :class:`~tidelog.storage.records.Event`
with dense offsets from 0 and non-decreasing timestamps, plus the small durable
state a broker keeps beside it: named cursors and key-value state in
namespaces (retained messages, sessions).

Contract (the conformance suite in ``tests/storage/test_conformance.py`` checks it):

* :meth:`EventLog.append` stores a batch atomically: all of it or none of it.
  When it returns, the batch is durable as far as the fsync policy promises
  (``always``: on disk). Every event of one batch gets the same timestamp,
  ``max(now, last timestamp)``.
* :meth:`EventLog.read` returns events in offset order from ``start`` on,
  optionally filtered by an MQTT topic filter, bounded by ``limit`` and
  ``max_bytes``, and says where the next read continues. A start before the
  first retained offset is clamped to it; a start past the end raises
  :class:`~tidelog.errors.OffsetOutOfRangeError`.
* Retention only ever removes a prefix of the log, never events younger than
  the age bound, and (for segmented backends) never the active segment.
* Errors are :mod:`tidelog.errors` classes; no driver exception escapes.

Backends decide what runs in a worker thread: blocking commits and fsync must
not run on the trio thread; cheap reads may.

Naming follows trio's conventions: methods that never block are sync
(:meth:`statistics`), waits are ``wait_*``.
"""

from __future__ import annotations

import abc
import functools
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

import attrs
import trio

from tidelog.errors import InvalidStorageURLError, LogClosedError
from tidelog.storage.records import Event, NewEvent

Clock = Callable[[], int]
"""Returns the current time in ms since the epoch; injectable for tests."""


def wall_clock_ms() -> int:
    """The real clock: ms since the epoch."""
    return time.time_ns() // 1_000_000


DEFAULT_MAX_RECORD_BYTES = 16 * 1024 * 1024
DEFAULT_READ_LIMIT = 1000
DEFAULT_READ_MAX_BYTES = 4 * 1024 * 1024


@attrs.frozen
class FsyncPolicy:
    """When appends reach the disk.

    ``always``: before :meth:`EventLog.append` returns (the default);
    ``interval:<ms>``: at most ``ms`` after the append returns;
    ``never``: when the operating system decides (a crash may lose recent
    appends; the log stays consistent).
    """

    mode: str
    interval_ms: int = 0

    @classmethod
    def parse(cls, text: str | FsyncPolicy) -> FsyncPolicy:
        if isinstance(text, FsyncPolicy):
            return text
        if text in ("always", "never"):
            return cls(text)
        name, _, value = text.partition(":")
        if name == "interval" and value.isdigit() and int(value) > 0:
            return cls("interval", int(value))
        raise InvalidStorageURLError(
            f"fsync policy {text!r}: expected 'always', 'never' or 'interval:<ms>'"
        )

    def __str__(self) -> str:
        return f"interval:{self.interval_ms}" if self.mode == "interval" else self.mode


def parse_fsync_policy(value: str | FsyncPolicy) -> FsyncPolicy:
    """:meth:`FsyncPolicy.parse` as a plain function: mypy wants one as an attrs converter."""
    return FsyncPolicy.parse(value)


@attrs.frozen
class LogOptions:
    """Options every backend accepts (a backend may ignore those it has no use for).

    Given as keyword arguments to :func:`tidelog.storage.open_log` or as query
    parameters of the URL (``lmdb:///data?fsync=never&segment_bytes=1048576``).
    """

    fsync: FsyncPolicy = attrs.field(default=FsyncPolicy("always"), converter=parse_fsync_policy)
    segment_bytes: int = 256 * 1024 * 1024
    """Roll the active segment once it holds this many bytes (segmented backends)."""
    segment_ms: int | None = None
    """Roll the active segment once its first event is this old (segmented backends)."""
    retention_ms: int | None = None
    """Drop events older than this (whole segments, for segmented backends)."""
    retention_bytes: int | None = None
    """Drop the oldest events while the log is larger than this."""
    retention_check_ms: int = 60_000
    """How often the background retention task runs (when a bound is set)."""
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    clock: Clock = wall_clock_ms
    replication_factor: int | None = None
    """``kafka://``: replicas of the log's topics; default min(3, brokers)."""
    min_insync_replicas: int | None = None
    """``kafka://``: ``min.insync.replicas`` of the log's topics; default max(1, replicas - 1)."""
    cache_bytes: int = 64 * 1024 * 1024
    """``kafka://``: the most recent records each node keeps in memory for reads."""
    timeout_ms: int = 15_000
    """``kafka://``: how long an append or read waits for Kafka before it fails with
    :class:`~tidelog.errors.StorageUnavailableError`."""
    index_checkpoint_events: int = 256 * 1024
    """``kafka://``: offsets per checkpoint of the block index in the state topic (whole
    blocks of 1,024); a node starting reads the checkpoints instead of the partition.
    0: no checkpoints."""

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> LogOptions:
        """Build from keyword arguments or URL query strings (converting numbers)."""
        fields = {field.name: field for field in attrs.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key not in fields:
                raise InvalidStorageURLError(
                    f"unknown storage option {key!r}; known: {', '.join(sorted(fields))}"
                )
            if isinstance(value, str) and key not in ("fsync",):
                if value.lower() in ("", "none", "off"):
                    value = None
                else:
                    try:
                        value = int(value)
                    except ValueError:
                        raise InvalidStorageURLError(
                            f"storage option {key}={value!r}: expected an integer"
                        ) from None
            kwargs[key] = value
        options = cls(**kwargs)
        for key in ("segment_bytes", "max_record_bytes", "retention_check_ms", "timeout_ms"):
            if getattr(options, key) <= 0:
                raise InvalidStorageURLError(f"storage option {key} must be positive")
        return options


@attrs.frozen
class ReadResult:
    """What :meth:`EventLog.read` returns: events, and where to read next.

    ``next_offset`` is past the last event returned and past every record the
    read examined and skipped (a filtered read may return no events yet advance),
    so reading again from ``next_offset`` neither repeats nor misses anything.
    Behaves as a sequence of its events.
    """

    events: list[Event]
    next_offset: int

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    def __getitem__(self, index: int) -> Event:
        return self.events[index]


@attrs.frozen
class LogState:
    """A snapshot of the log's extent."""

    first_offset: int
    """The first offset still stored (0 until retention drops something)."""
    next_offset: int
    """The offset the next appended event gets; ``first == next`` means empty."""
    first_timestamp: int | None
    last_timestamp: int | None
    bytes: int
    """Bytes the stored events take (records, not counting index overhead)."""

    @property
    def event_count(self) -> int:
        return self.next_offset - self.first_offset


@attrs.frozen
class TopicInfo:
    """A topic present in the log, how many stored events it has and the offset of the
    newest of them (so a caller can read a topic's last event with one read)."""

    topic: str
    count: int
    last_offset: int


@attrs.frozen
class CursorState:
    """A named durable cursor: a position plus metadata the caller owns (e.g. its filter)."""

    name: str
    position: int
    metadata: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class RetentionResult:
    """What one retention pass removed."""

    removed_events: int
    removed_bytes: int
    first_offset: int


@attrs.frozen
class LogStatistics:
    """Counters for metrics (cheap to read, never blocks)."""

    backend: str
    appends: int
    appended_events: int
    appended_bytes: int
    reads: int
    read_events: int
    first_offset: int
    next_offset: int
    bytes: int
    segments: int = 1
    durable_offset: int | None = None
    """Every event below this offset is on disk (fsynced): ``next_offset`` under
    ``fsync=always``; under ``interval`` and ``never``, what the last completed
    sync covered. None: not durable (memory)."""
    durable_as_of: float | None = None
    """``interval``/``never``: ``time.monotonic()`` when that sync began; every event
    acknowledged before then is below ``durable_offset``. None if no sync completed."""


class EventLog(abc.ABC):
    """An append-only event log with cursors and key-value state. See the module docstring."""

    backend_name: str = "abstract"
    shared: bool = False
    """True when other processes append to the same log (``kafka://``): the engine then
    routes events from :meth:`read` at the log's head, not from its own appends."""
    append_pipeline: int = 1
    """How many appends a writer may have in flight at once, each begun with
    :meth:`begin_append`. 1 for a local log (a commit is local work: nothing to
    overlap); above 1 for a remote one (``kafka://``), where a batch waits a network
    round trip for its acknowledgement and the next batch can be sent meanwhile."""

    # -- the log -----------------------------------------------------------------

    def begin_append(self, events: Sequence[NewEvent]) -> Callable[[], Awaitable[list[Event]]]:
        """Start appending a batch; await the returned function for the stored events.

        A backend with :attr:`append_pipeline` above 1 checks and orders the batch
        here, at once (raising what :meth:`append` raises for bad input), so batches
        begun one after the other get increasing offsets whenever they are awaited.
        This default defers everything to :meth:`append`, which is enough while one
        append at a time is in flight."""
        return functools.partial(self.append, events)

    @abc.abstractmethod
    async def append(self, events: Sequence[NewEvent]) -> list[Event]:
        """Append a batch atomically; return the stored events with offsets and timestamps.

        Raises :class:`~tidelog.errors.RecordTooLargeError` (nothing stored) when
        any record exceeds ``max_record_bytes``. An empty batch returns ``[]``.
        """

    @abc.abstractmethod
    async def read(
        self,
        start: int,
        topic_filter: str | None = None,
        *,
        limit: int = DEFAULT_READ_LIMIT,
        max_bytes: int | None = DEFAULT_READ_MAX_BYTES,
        end: int | None = None,
    ) -> ReadResult:
        """Events with ``start <= offset < end`` matching ``topic_filter``, in offset order.

        At most ``limit`` events; stops before exceeding ``max_bytes`` (but always
        returns at least one event if one matches). May return fewer events than
        exist (a filtered read bounds how much it scans); continue at
        ``result.next_offset``.
        """

    @abc.abstractmethod
    async def offset_for_time(self, timestamp: int) -> int:
        """The first offset whose timestamp is ``>= timestamp``; the log end if none."""

    @abc.abstractmethod
    async def state(self) -> LogState:
        """The log's current extent."""

    @abc.abstractmethod
    async def topics(self, topic_filter: str | None = None) -> list[TopicInfo]:
        """Topics with stored events (matching ``topic_filter``), sorted by name."""

    @abc.abstractmethod
    async def wait_for_append(self, offset: int) -> int:
        """Wait until the log's next offset is greater than ``offset``; return it.

        Returns at once if it already is. Raises
        :class:`~tidelog.errors.LogClosedError` if the log closes meanwhile.
        """

    @abc.abstractmethod
    def statistics(self) -> LogStatistics:
        """Counters for metrics."""

    # -- cursors -------------------------------------------------------------------

    @abc.abstractmethod
    async def load_cursor(self, name: str) -> CursorState | None:
        """The cursor named ``name``, or None."""

    @abc.abstractmethod
    async def commit_cursors(self, cursors: Sequence[CursorState]) -> None:
        """Create or update several cursors in one durable transaction."""

    async def commit_cursor(
        self, name: str, position: int, metadata: dict[str, Any] | None = None
    ) -> None:
        """Create or update one cursor (see :meth:`commit_cursors`)."""
        await self.commit_cursors([CursorState(name, position, metadata or {})])

    @abc.abstractmethod
    async def delete_cursor(self, name: str) -> bool:
        """Delete a cursor; False if there was none."""

    @abc.abstractmethod
    async def list_cursors(self) -> list[CursorState]:
        """Every cursor, sorted by name."""

    # -- key-value state -------------------------------------------------------------

    @abc.abstractmethod
    async def get_state(self, namespace: str, key: str) -> bytes | None:
        """One value of the engine's durable state, or None."""

    @abc.abstractmethod
    async def put_state(self, namespace: str, items: Mapping[str, bytes | None]) -> None:
        """Set (or, for None, delete) several keys of a namespace in one durable transaction."""

    @abc.abstractmethod
    async def list_state(self, namespace: str) -> dict[str, bytes]:
        """Every key and value of a namespace."""

    async def commit_cursors_and_state(
        self, cursors: Sequence[CursorState], state: Mapping[str, Mapping[str, bytes | None]]
    ) -> None:
        """Cursors and state keys (by namespace) together: one durable transaction where
        the backend can (LMDB), else :meth:`commit_cursors` then :meth:`put_state` per
        namespace. The engine's state writer stores each batch with this."""
        if cursors:
            await self.commit_cursors(cursors)
        for namespace, items in state.items():
            await self.put_state(namespace, items)

    # -- lifecycle -----------------------------------------------------------------

    def background_tasks(self) -> list[Callable[[], Awaitable[None]]]:
        """Tasks :func:`~tidelog.storage.open_log` runs while the log is open (e.g. fsync timer)."""
        return []

    @abc.abstractmethod
    async def apply_retention(
        self, *, max_age_ms: int | None = None, max_bytes: int | None = None
    ) -> RetentionResult:
        """Drop the oldest events by age and/or total size now (the configured bounds if None)."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Flush and close; later calls raise :class:`~tidelog.errors.LogClosedError`."""


class AppendNotifier:
    """Wakes tasks waiting for the log to grow (shared helper for backends).

    A backend calls :meth:`notify` with its new next offset after each append and
    :meth:`close` when it closes; :meth:`wait` implements
    :meth:`EventLog.wait_for_append`.
    """

    def __init__(self, next_offset: int) -> None:
        self.next_offset = next_offset
        self._event = trio.Event()
        self._closed = False

    def notify(self, next_offset: int) -> None:
        self.next_offset = next_offset
        self._event.set()
        self._event = trio.Event()

    def close(self) -> None:
        self._closed = True
        self._event.set()

    async def wait(self, offset: int) -> int:
        while self.next_offset <= offset:
            if self._closed:
                raise LogClosedError("the log was closed while waiting for appends")
            await self._event.wait()
        return self.next_offset
