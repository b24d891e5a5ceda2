"""``lmdb:///path``: the segmented LMDB log, tidelog's default storage.

See :class:`LmdbLog` for the on-disk layout and what happens after a crash,
:mod:`tidelog.storage.lmdb_segment` for one segment's format,
:mod:`tidelog.storage.lmdb_meta` for the meta environment, and
:mod:`tidelog.storage.lmdb_check` for ``verify`` and ``reindex``.
"""

from __future__ import annotations

import bisect
import gc
import heapq
import logging
import operator
import os
import shutil
import sys
import time
from array import array
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import attrs
import lmdb
import trio

from tidelog.concurrency import held
from tidelog.errors import CorruptLogError, InvalidStorageURLError, StorageFullError
from tidelog.storage.base import (
    DEFAULT_READ_LIMIT,
    DEFAULT_READ_MAX_BYTES,
    AppendNotifier,
    CursorState,
    EventLog,
    FsyncPolicy,
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
    encode_batch,
)
from tidelog.storage.lmdb_check import ReindexReport, VerifyReport, reindex, verify
from tidelog.storage.lmdb_env import fsync_dir, lmdb_errors, lock_directory, translate
from tidelog.storage.lmdb_meta import MetaStore
from tidelog.storage.lmdb_segment import (
    MAX_SEGMENT_EVENTS,
    LruCache,
    NotSealedError,
    Segment,
    TopicIndex,
    TopicMatch,
    iter_segment_dirs,
    segment_name,
)
from tidelog.storage.records import CorruptRecordError, Event, NewEvent, stored_events
from tidelog.storage.writer_thread import Mailbox, WriterThread
from tidelog.topics import compile_filter

__all__ = ["LmdbLog", "ReindexReport", "VerifyReport", "reindex", "verify"]

logger = logging.getLogger(__name__)
_TOPIC = operator.attrgetter("topic")
T = TypeVar("T")

MIN_MAP_BYTES = 64 * 1024 * 1024
"""The smallest map of an active segment (maps are address space, not disk)."""
INDEX_FRACTION = 0.25
"""A filtered read uses the topic index of a segment when the matching events are
at most this fraction of the segment, and scans the segment otherwise (measured:
see docs/benchmarks.md)."""
SCAN_BUDGET = 32_768
"""A filtered read examines at most this many records that the topic index does
not rule out, then returns (``next_offset`` says where to continue). Reads run
inline on the trio thread, and a scan costs about 0.5 us per record on the
2-core CI machine: this keeps one read under about 20 ms. Lower than the shared
``MAX_SCAN_PER_READ`` (200,000), which bounds unfiltered reads here."""
MAX_MERGED_TOPICS = 64
"""A filter matching more topics than this in a segment scans it rather than
merging that many offset lists (a Python heap merge of k lists costs about
log2(k) comparisons per event)."""
INLINE_MAX_EVENTS = 8
"""Batches of at most this many events may commit on the trio thread (fsync
``always``; see :meth:`LmdbLog._commit_overlapped`). 16 (a burst of ten inline)
was measured again and not kept: docs/mesh.md, "Inline bursts of ten"."""
INLINE_MAX_BYTES = 64 * 1024
"""... and of at most this many bytes of records: the commit's pages are written on
the loop's thread, and a few large events must not stall it for long (a guard)."""
INLINE_MAX_EVENTS_UNSYNCED = 64
"""Batches of at most this many events commit on the trio thread under fsync
``interval`` and ``never`` (no fsync in the commit; see :meth:`LmdbLog._write`)."""
INLINE_MAX_SECONDS = 0.001
"""... when the previous commit took less than this (the loop's worst stall when
fsync is fast)."""
OVERLAP_MIN_EVENTS = 64
"""Batches of at least this many events build their acknowledgement while the commit
syncs (see :meth:`LmdbLog._commit_overlapped`); smaller ones build it first."""
_MAP_FILL = 0.9
"""Roll (or grow the map) before a batch would fill the map beyond this fraction."""


def _map_need(count: int, batch_bytes: int) -> int:
    """A generous estimate of the map a batch takes (B-tree overhead, overflow pages)."""
    return 2 * batch_bytes + 64 * count + 256 * 1024


@attrs.define
class _Stats:
    appends: int = 0
    appended_events: int = 0
    appended_bytes: int = 0
    reads: int = 0
    read_events: int = 0


class LmdbLog(EventLog):
    """An :class:`EventLog` stored as a directory of LMDB environments, one per segment.

    Layout of the data directory::

        LOCK                      flock()ed while a log has the directory open
        meta/                     LMDB env: schema version, cursors, state, topic dictionary
        segments/<base offset>/   one LMDB env per segment, 20-digit base offset names
        segments/.tmp-<offset>/   a segment being created (removed on open)
        segments/.del-<offset>/   a segment being deleted by retention (removed on open)

    The segments hold consecutive offset ranges; the last one is *active* (takes
    appends), the others are *sealed* (read-only, with a persisted topic index).
    The active segment rolls before an append once it holds ``segment_bytes``,
    once its first event is ``segment_ms`` old, or when the batch would not fit
    its map: it is sealed (topic index, counts and summary written, synced), then
    the next segment is created under ``.tmp-`` and renamed into place.

    **Writes.** One LMDB write transaction per batch, in the log's writer thread
    (small batches inline while commits are fast, see :meth:`_commit_overlapped`),
    one at a time (a :class:`trio.Lock`); under ``fsync=always`` LMDB syncs data and meta
    page before the commit returns. Everything else about the batch (the active
    topic index, counters, waking readers) is updated on the trio thread after
    the commit, with no checkpoint in between, so readers see a batch whole or
    not at all. Reads run inline on the trio thread: a read is bounded by
    ``limit``, ``max_bytes``, ``MAX_SCAN_PER_READ`` and :data:`SCAN_BUDGET`.

    **After a crash.** LMDB commits are atomic: each segment holds exactly the
    batches whose commits completed (under ``always``, every acknowledged batch;
    under ``interval``/``never`` an OS crash may lose the unsynced tail, a
    process crash loses nothing). Opening the log then removes ``.tmp-*`` and
    ``.del-*`` leftovers; checks each segment's format, name and that its events
    are exactly ``base .. base + count - 1``; checks that each segment starts
    where the previous one ends (a gap raises :class:`CorruptLogError` naming the
    segment); re-seals a sealed-in-the-middle-of-being-sealed segment if the
    crash left one unsealed before the last; creates a fresh active segment if
    the last one is sealed; rebuilds the active segment's topic index by scanning
    its events; and rebuilds the topic dictionary in ``meta`` if it does not
    cover exactly the sealed segments. Truncated or garbage files raise
    :class:`CorruptLogError` (never SIGBUS, never a silently empty log).
    """

    backend_name = "lmdb"

    def __repr__(self) -> str:
        return f"lmdb://{self._root}"

    def __init__(
        self,
        root: Path,
        options: LogOptions,
        lock_fd: int,
        meta: MetaStore,
        segments: list[Segment],
        sealed_counts: dict[str, int],
    ) -> None:
        self._root = root
        self._segments_dir = root / "segments"
        self._options = options
        self._fsync = options.fsync
        self._lock_fd: int | None = lock_fd
        self._meta = meta
        self._segments = segments
        self._bases = [segment.base for segment in segments]
        self._sealed_counts = sealed_counts
        self._sealed_last: dict[str, int] = {}  # newest sealed offset per topic, filled lazily
        active = segments[-1]
        self._next = active.end
        self._last_ts = max(
            [active.prev_ts] + [s.last_ts for s in segments if s.last_ts is not None]
        )
        self._bytes = sum(segment.bytes for segment in segments)
        self._min_map = max(2 * options.segment_bytes, MIN_MAP_BYTES)
        self._write_lock = trio.Lock()
        self._writer = WriterThread(f"tidelog-writer-{root.name}")
        self._last_commit = 0.0
        self._notifier = AppendNotifier(self._next)
        self._closed = False
        self._dirty = True  # a crash before this open may have left unsynced pages: sync first
        self._matches: LruCache[tuple[int, str], TopicMatch] = LruCache(4096)
        self._offsets: LruCache[tuple[int, bytes], array[int]] = LruCache(8 * 1024 * 1024)
        self._stats = _Stats()
        self.index_fraction = INDEX_FRACTION
        """Use a segment's topic index when at most this fraction of it matches a filter
        (0 always scans: bench/storage.py compares both paths with it)."""
        self.flushes = 0
        self._synced = 0  # fsync interval/never: every event below this offset is on disk
        self._synced_as_of: float | None = None  # time.monotonic() when that sync began
        """How many times :meth:`sync` flushed appends to disk (``interval``/``never``)."""

    # -- opening -------------------------------------------------------------------------

    @classmethod
    async def open(cls, path: str | None, options: LogOptions) -> LmdbLog:
        """Open (creating if needed) the log in directory ``path`` and recover it."""
        if not path:
            raise InvalidStorageURLError("the lmdb backend needs a directory path")
        root = Path(path)
        return await trio.to_thread.run_sync(cls._open_sync, root, options)

    @classmethod
    def _open_sync(cls, root: Path, options: LogOptions) -> LmdbLog:
        if root.exists() and not root.is_dir():
            raise InvalidStorageURLError(f"{root} exists and is not a directory")
        with lmdb_errors(root):
            root.mkdir(parents=True, exist_ok=True)
        lock_fd = lock_directory(root)
        segments: list[Segment] = []
        meta = None
        try:
            meta_dir, segments_dir = root / "meta", root / "segments"
            new_log = not meta_dir.exists() and not segments_dir.exists()
            if not new_log and not meta_dir.exists():
                raise CorruptLogError(f"{meta_dir} is missing (cursors and state are lost)")
            meta = MetaStore.open(meta_dir, options.fsync, create=new_log)
            with lmdb_errors(segments_dir):
                segments_dir.mkdir(exist_ok=True)
                if new_log:
                    fsync_dir(root)
            _remove_leftovers(segments_dir)
            min_map = max(2 * options.segment_bytes, MIN_MAP_BYTES)
            segments = _open_segments(segments_dir, options.fsync, min_map)
            covered, counts = meta.load_topics()
            if segments and covered is not None and covered[1] > segments[-1].base:
                # meta saw a segment after the last one here: it is gone (a crash
                # never leaves that; see _roll for the order of the steps)
                raise CorruptLogError(
                    f"the segment at offset {covered[1]} is missing from {segments_dir} "
                    f"(the last one present is {segment_name(segments[-1].base)})"
                )
            if not segments:
                if covered is not None and covered[1] > 0:
                    raise CorruptLogError(
                        f"{segments_dir} holds no segments, but the log had reached "
                        f"offset {covered[1]}"
                    )
                segments.append(Segment.create(segments_dir, 0, 0, min_map, options.fsync))
            elif segments[-1].sealed:
                last = segments[-1]
                prev_ts = max(last.last_ts or 0, last.prev_ts)
                segments.append(
                    Segment.create(segments_dir, last.end, prev_ts, min_map, options.fsync)
                )
            expected = (segments[0].base, segments[-1].base)
            if covered != expected:
                counts = {}
                for segment in segments[:-1]:
                    for topic, count in segment.sealed_counts().items():
                        counts[topic] = counts.get(topic, 0) + count
                meta.replace_topics_sync(counts, expected)
            return cls(root, options, lock_fd, meta, segments, counts)
        except BaseException:
            for segment in segments:
                segment.close()
            if meta is not None:
                meta.close()
            os.close(lock_fd)
            raise

    # -- appending -------------------------------------------------------------------------

    @property
    def _active(self) -> Segment:
        return self._segments[-1]

    async def append(self, events: Sequence[NewEvent]) -> list[Event]:
        check_open(self._closed)
        if not events:
            return []
        # no round of the event loop for a free lock (every commit): the commit in the
        # writer thread yields anyway, and an inline commit yields once after it. A
        # cancelled caller that finds the lock free appends (shielded, as before).
        async with held(self._write_lock):
            check_open(self._closed)
            timestamp = max(self._options.clock(), self._last_ts)
            records = encode_batch(events, timestamp, self._options.max_record_bytes)
            count = len(records)
            batch_bytes = sum(map(len, records))
            need = _map_need(count, batch_bytes)
            first = self._next

            def acknowledgement() -> tuple[list[Event], dict[str, list[int]]]:
                stored = stored_events(events, first, timestamp)
                return stored, TopicIndex.group(map(_TOPIC, events), first - self._active.base)

            # Shielded: once the batch goes to disk, memory must follow whatever happens.
            with trio.CancelScope(shield=True):
                if self._should_roll(timestamp, count, need):
                    await self._roll(need)
                active, (stored, grouped) = await self._write(
                    first, records, timestamp, need, acknowledgement
                )
            # The batch is committed. Publish it with no checkpoint in between.
            active.count += count
            active.bytes += batch_bytes
            if active.first_ts is None:
                active.first_ts = timestamp
            active.last_ts = timestamp
            assert active.index is not None
            active.index.merge(grouped)
            self._next = first + count
            self._last_ts = timestamp
            self._bytes += batch_bytes
            self._dirty = self._fsync.mode != "always"
            stats = self._stats
            stats.appends += 1
            stats.appended_events += count
            stats.appended_bytes += batch_bytes
            self._notifier.notify(self._next)
        return stored

    def _should_roll(self, timestamp: int, count: int, need: int) -> bool:
        active = self._active
        if active.sealed:  # sealed on disk, but the next segment could not be created
            return True
        if not active.count:
            return False
        options = self._options
        return (
            active.bytes >= options.segment_bytes
            or (
                options.segment_ms is not None
                and active.first_ts is not None
                and timestamp - active.first_ts >= options.segment_ms
            )
            or active.used + need + 8 * active.count > _MAP_FILL * active.map_size
            or active.count + count > MAX_SEGMENT_EVENTS
        )

    async def _write(
        self,
        first: int,
        records: list[bytes],
        timestamp: int,
        need: int,
        prepare: Callable[[], T],
    ) -> tuple[Segment, T]:
        """Commit the batch to the active segment, growing or rolling on a full map.

        Returns the segment written and what ``prepare()`` returned: it builds
        the acknowledgement (the stored events), overlapped with the commit's
        fsync under ``fsync=always``.
        """
        for _ in range(8):
            active = self._active
            if not active.count and active.used + need > _MAP_FILL * active.map_size:
                active.grow_map(max(2 * active.map_size, active.used + 2 * need))
            try:
                if self._fsync.mode == "always":
                    prepared = await self._commit_overlapped(
                        active, first, records, timestamp, prepare
                    )
                elif (
                    len(records) <= INLINE_MAX_EVENTS_UNSYNCED
                    and self._last_commit < INLINE_MAX_SECONDS
                ):
                    # No fsync in this commit: writing a few pages into the page cache
                    # costs less than the two thread wake-ups of a hand-off.
                    prepared = await self._commit_here(active, first, records, timestamp, prepare)
                else:
                    started = time.perf_counter()
                    try:
                        active.used = await self._writer.run_sync(
                            active.write_batch, first, records, timestamp
                        )
                    finally:
                        self._last_commit = time.perf_counter() - started
                    prepared = prepare()
                return active, prepared
            except lmdb.MapFullError:
                # The transaction was aborted; no other one is open (writes hold the
                # lock, reads run on this thread), so the map may change now.
                if active.count:
                    await self._roll(need)
                else:
                    active.grow_map(2 * active.map_size)
            except lmdb.Error as exc:
                raise translate(exc, active.path) from exc
        raise StorageFullError(f"{self._active.path}: the batch does not fit in a segment map")

    async def _commit_here(
        self,
        active: Segment,
        first: int,
        records: list[bytes],
        timestamp: int,
        prepare: Callable[[], T],
    ) -> T:
        """:meth:`_commit_inline`, then one checkpoint: ``append`` takes its lock without
        one when free, and a loop of commits made here must still let the event loop
        poll for I/O (a commit in the writer thread yields while it waits)."""
        prepared = self._commit_inline(active, first, records, timestamp, prepare)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return prepared

    async def _commit_overlapped(
        self,
        active: Segment,
        first: int,
        records: list[bytes],
        timestamp: int,
        prepare: Callable[[], T],
    ) -> T:
        """Commit in the writer thread; run ``prepare()`` here while the commit syncs.

        A small batch (at most :data:`INLINE_MAX_EVENTS` and
        :data:`INLINE_MAX_BYTES`) commits right here,
        blocking the trio thread, when no other task is ready to run and the
        previous commit took less than :data:`INLINE_MAX_SECONDS`: handing it
        to the thread and back costs more CPU than the commit (two wake-ups of
        a cold thread per event under light load; see "Where the time goes" in
        docs/benchmarks.md). A slow commit (a busy disk) sends the next ones to
        the thread again, so the loop never waits for two slow commits in a row.

        The worker holds the GIL while it copies the records into the
        transaction and releases it while LMDB writes and fsyncs the pages; for
        a large batch it signals this thread just before committing, so the
        acknowledgement is built in what would otherwise be idle time (about a
        third of an append's CPU time at batch 1000, see docs/benchmarks.md).
        A small batch's acknowledgement costs less than that extra wake-up of
        this thread, so it is built first. The caller shields this.
        """
        if (
            len(records) <= INLINE_MAX_EVENTS
            and self._last_commit < INLINE_MAX_SECONDS
            and not trio.lowlevel.current_statistics().tasks_runnable
            and sum(map(len, records)) <= INLINE_MAX_BYTES
        ):
            return await self._commit_here(active, first, records, timestamp, prepare)
        started = time.perf_counter()
        mailbox = Mailbox()
        if len(records) < OVERLAP_MIN_EVENTS:
            prepared = prepare()
            self._writer.submit(mailbox, active.write_batch, first, records, timestamp)
        else:
            self._writer.submit(
                mailbox, active.write_batch, first, records, timestamp, mailbox.signal
            )
            try:
                await mailbox.get()  # the commit's fsync has started (or the write failed)
            finally:
                prepared = prepare()
        try:
            active.used = await mailbox.get()
        finally:
            self._last_commit = time.perf_counter() - started
        return prepared

    def _commit_inline(
        self,
        active: Segment,
        first: int,
        records: list[bytes],
        timestamp: int,
        prepare: Callable[[], T],
    ) -> T:
        """Commit on the trio thread (blocking it for the commit); time it for the next
        batch's choice between inline and the writer thread."""
        prepared = prepare()
        started = time.perf_counter()
        try:
            active.used = active.write_batch(first, records, timestamp)
        finally:
            self._last_commit = time.perf_counter() - started
        return prepared

    async def _roll(self, need: int = 0) -> None:
        """Seal the active segment and start the next one (holding the write lock)."""
        old = self._active
        while True:
            try:
                await trio.to_thread.run_sync(old.seal)
                break
            except lmdb.MapFullError:
                old.grow_map(2 * old.map_size)
            except lmdb.Error as exc:
                raise translate(exc, old.path) from exc
        old.sealed = True  # from now on nothing may be appended to it, even if creating fails
        map_size = max(self._min_map, 2 * need)
        new = await trio.to_thread.run_sync(
            Segment.create, self._segments_dir, self._next, self._last_ts, map_size, self._fsync
        )
        assert old.index is not None
        counts = old.index.counts()
        for topic, offsets in old.index.offsets.items():
            if offsets:
                self._sealed_last[topic] = old.base + offsets[-1]
        old.index = None
        self._segments.append(new)
        self._bases.append(new.base)
        for topic, count in counts.items():
            self._sealed_counts[topic] = self._sealed_counts.get(topic, 0) + count
        await self._meta.adjust_topics(counts, (self._bases[0], new.base))

    # -- reading ---------------------------------------------------------------------------

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
        await trio.lowlevel.checkpoint()
        check_open(self._closed)
        start = check_start(start, self._bases[0], self._next)
        stop = self._next if end is None else max(start, min(end, self._next))
        out: list[Event] = []
        position = start
        if limit > 0 and position < stop:
            # Decoding creates one object per event and nothing cyclic; cyclic GC
            # passes in the middle of a read only cost time (10-30% of a replay).
            paused = gc.isenabled()
            if paused:
                gc.disable()
            try:
                position = self._read(position, stop, topic_filter, limit, max_bytes, out)
            finally:
                if paused:
                    gc.enable()
        self._stats.reads += 1
        self._stats.read_events += len(out)
        return ReadResult(out, position)

    def _read(
        self,
        position: int,
        stop: int,
        topic_filter: str | None,
        limit: int,
        max_bytes: int | None,
        out: list[Event],
    ) -> int:
        budget = MAX_SCAN_PER_READ if topic_filter is None else SCAN_BUDGET
        total = 0
        segments = self._segments
        index = bisect.bisect_right(self._bases, position) - 1
        while position < stop and budget > 0 and index < len(segments):
            segment = segments[index]
            segment_stop = min(stop, segment.end)
            if position < segment_stop:
                try:
                    with lmdb_errors(segment.path), segment.env.begin() as txn:
                        if topic_filter is None:
                            count = min(segment_stop - position, limit - len(out), budget)
                            position, total, full = segment.read_all(
                                txn, position, count, out, max_bytes, total
                            )
                            budget -= count
                        else:
                            position, total, full, examined = self._read_filtered(
                                segment, txn, topic_filter, position, segment_stop,
                                limit, max_bytes, out, total, budget,
                            )  # fmt: skip
                            budget -= examined
                except CorruptRecordError as exc:
                    raise exc.located(f"segment {segment.path}") from exc
                if full or len(out) >= limit:
                    break
            index += 1
        return position

    def _read_filtered(
        self,
        segment: Segment,
        txn: lmdb.Transaction[bytes],
        topic_filter: str,
        position: int,
        stop: int,
        limit: int,
        max_bytes: int | None,
        out: list[Event],
        total: int,
        budget: int,
    ) -> tuple[int, int, bool, int]:
        """One segment of a filtered read: by index, by scan, or skipped.

        Returns ``(next offset, total bytes, full, records examined)``.
        """
        base = segment.base
        arrays: list[array[int]] = []
        if segment.index is not None:
            active = segment.index.matching(topic_filter)
            if not active.topics:
                return stop, total, False, 0
            if len(active.topics) == len(segment.index.offsets):
                return self._read_every(
                    segment, txn, position, stop, limit, max_bytes, out, total, budget
                )
            wanted = active.raw
            use_index = len(active.topics) <= MAX_MERGED_TOPICS
            if use_index:
                arrays = [segment.index.offsets[topic] for topic in active.topics]
                matching = sum(map(len, arrays))
                use_index = matching <= self.index_fraction * segment.count
        else:
            key = (base, topic_filter)
            sealed = self._matches.get(key)
            if sealed is None:
                sealed = segment.sealed_match(txn, topic_filter)
                self._matches.put(key, sealed)
            if not sealed.topics:
                return stop, total, False, 0
            if sealed.total == segment.count:
                return self._read_every(
                    segment, txn, position, stop, limit, max_bytes, out, total, budget
                )
            wanted = sealed.topic_set
            use_index = (
                len(sealed.topics) <= MAX_MERGED_TOPICS
                and sealed.total <= self.index_fraction * segment.count
            )
            if use_index:
                arrays = [self._sealed_offsets(segment, txn, raw) for raw in sealed.topics]
        if use_index:
            low, high, room = position - base, stop - base, limit - len(out)
            runs = []
            for offsets_of_topic in arrays:  # at most ``room`` from each: enough to merge
                first = bisect.bisect_left(offsets_of_topic, low)
                last = min(bisect.bisect_left(offsets_of_topic, high), first + room)
                if first < last:
                    runs.append(offsets_of_topic[first:last])
            if not runs:
                return stop, total, False, 0
            merged: Iterable[int] = runs[0] if len(runs) == 1 else heapq.merge(*runs)
            offsets = map(base.__add__, merged)
            after, total, full = segment.fetch(txn, offsets, limit, out, max_bytes, total)
            return (after if full and after is not None else stop), total, full, 0
        count = min(stop - position, budget)
        position, total, full = segment.scan(
            txn, position, count, wanted, limit, out, max_bytes, total
        )
        return position, total, full, count

    @staticmethod
    def _read_every(
        segment: Segment,
        txn: lmdb.Transaction[bytes],
        position: int,
        stop: int,
        limit: int,
        max_bytes: int | None,
        out: list[Event],
        total: int,
        budget: int,
    ) -> tuple[int, int, bool, int]:
        """A filtered read of a segment whose every topic the filter matches: read it all.

        No per-record topic check (a filter such as ``#`` or ``sensors/#`` often
        matches a whole segment). Returns what :meth:`_read_filtered` returns.
        """
        count = min(stop - position, limit - len(out), budget)
        position, total, full = segment.read_all(txn, position, count, out, max_bytes, total)
        return position, total, full, count

    def _sealed_offsets(
        self, segment: Segment, txn: lmdb.Transaction[bytes], topic: bytes
    ) -> array[int]:
        key = (segment.base, topic)
        offsets = self._offsets.get(key)
        if offsets is None:
            offsets = segment.sealed_offsets(txn, topic)
            self._offsets.put(key, offsets, len(offsets))
        return offsets

    async def offset_for_time(self, timestamp: int) -> int:
        check_open(self._closed)
        segments = self._segments
        index = bisect.bisect_left(
            segments,
            timestamp,
            key=lambda s: s.last_ts if s.count and s.last_ts is not None else sys.maxsize,
        )
        if index == len(segments) or not segments[index].count:
            return self._next
        segment = segments[index]
        with lmdb_errors(segment.path), segment.env.begin() as txn:
            offset = segment.offset_for_time(txn, timestamp)
        if offset is None or not segment.base <= offset < segment.end:
            raise CorruptLogError(
                f"segment {segment.path}: time index has no entry at or after {timestamp}"
            )
        return offset

    async def state(self) -> LogState:
        check_open(self._closed)
        first = self._bases[0]
        if first == self._next:
            first_ts = last_ts = None
        else:
            first_ts = next(s.first_ts for s in self._segments if s.count)
            last_ts = self._last_ts
        return LogState(
            first_offset=first,
            next_offset=self._next,
            first_timestamp=first_ts,
            last_timestamp=last_ts,
            bytes=self._bytes,
        )

    async def topics(self, topic_filter: str | None = None) -> list[TopicInfo]:
        check_open(self._closed)
        counts = dict(self._sealed_counts)
        index = self._active.index
        if index is not None:
            for topic, offsets in index.offsets.items():
                counts[topic] = counts.get(topic, 0) + len(offsets)
        match = compile_filter(check_filter(topic_filter) or "#") if topic_filter else None
        listed = [
            (topic, count)
            for topic, count in sorted(counts.items())
            if count and (match is None or match(topic))
        ]
        return [TopicInfo(topic, count, self._last_offset(topic)) for topic, count in listed]

    def _last_offset(self, topic: str) -> int:
        """The newest offset of a topic with stored events: from the active segment's
        index, else the newest sealed segment holding it (looked up once, then kept)."""
        index = self._active.index
        offsets = index.offsets.get(topic) if index is not None else None
        if offsets:
            return self._active.base + offsets[-1]
        if topic not in self._sealed_last:
            raw = topic.encode("utf-8")
            for segment in reversed(self._segments[:-1]):
                with lmdb_errors(segment.path), segment.env.begin() as txn:
                    found = segment.sealed_last_offset(txn, raw)
                if found is not None:
                    self._sealed_last[topic] = found
                    break
            else:
                raise CorruptLogError(f"lmdb log {self._root}: no segment holds topic {topic!r}")
        return self._sealed_last[topic]

    async def wait_for_append(self, offset: int) -> int:
        check_open(self._closed)
        return await self._notifier.wait(offset)

    def statistics(self) -> LogStatistics:
        return LogStatistics(
            backend=self.backend_name,
            appends=self._stats.appends,
            appended_events=self._stats.appended_events,
            appended_bytes=self._stats.appended_bytes,
            reads=self._stats.reads,
            read_events=self._stats.read_events,
            first_offset=self._bases[0],
            next_offset=self._next,
            bytes=self._bytes,
            segments=len(self._segments),
            durable_offset=self._next if self._fsync.mode == "always" else self._synced,
            durable_as_of=self._synced_as_of,
        )

    # -- cursors and state -----------------------------------------------------------------

    async def load_cursor(self, name: str) -> CursorState | None:
        check_open(self._closed)
        return self._meta.load_cursor(name)

    async def commit_cursors(self, cursors: Sequence[CursorState]) -> None:
        check_open(self._closed)
        await self._meta.commit_cursors(cursors)

    async def delete_cursor(self, name: str) -> bool:
        check_open(self._closed)
        return await self._meta.delete_cursor(name)

    async def list_cursors(self) -> list[CursorState]:
        check_open(self._closed)
        return self._meta.list_cursors()

    async def get_state(self, namespace: str, key: str) -> bytes | None:
        check_open(self._closed)
        return self._meta.get_state(namespace, key)

    async def put_state(self, namespace: str, items: Mapping[str, bytes | None]) -> None:
        check_open(self._closed)
        await self._meta.put_state(namespace, items)

    async def commit_cursors_and_state(
        self, cursors: Sequence[CursorState], state: Mapping[str, Mapping[str, bytes | None]]
    ) -> None:
        check_open(self._closed)
        await self._meta.commit_cursors_and_state(cursors, state)

    async def list_state(self, namespace: str) -> dict[str, bytes]:
        check_open(self._closed)
        return self._meta.list_state(namespace)

    # -- retention -------------------------------------------------------------------------

    async def apply_retention(
        self, *, max_age_ms: int | None = None, max_bytes: int | None = None
    ) -> RetentionResult:
        """Drop whole sealed segments from the front: by age (a segment goes when its
        last event is older than ``max_age_ms``), then by size (oldest first while the
        log is larger than ``max_bytes``). The active segment always stays."""
        check_open(self._closed)
        if max_age_ms is None and max_bytes is None:
            max_age_ms, max_bytes = self._options.retention_ms, self._options.retention_bytes
        async with self._write_lock:
            check_open(self._closed)
            sealed = self._segments[:-1]
            drop = 0
            if max_age_ms is not None:
                horizon = self._options.clock() - max_age_ms
                while drop < len(sealed) and (
                    not sealed[drop].count or (sealed[drop].last_ts or 0) < horizon
                ):
                    drop += 1
            if max_bytes is not None:
                remaining = self._bytes - sum(s.bytes for s in sealed[:drop])
                while drop < len(sealed) and remaining > max_bytes:
                    remaining -= sealed[drop].bytes
                    drop += 1
            if not drop:
                return RetentionResult(0, 0, self._bases[0])
            dropped = sealed[:drop]
            counts: dict[str, int] = {}
            for segment in dropped:
                for topic, count in (await trio.to_thread.run_sync(segment.sealed_counts)).items():
                    counts[topic] = counts.get(topic, 0) - count
            # Publish, then delete: no read can reach a dropped segment from here on.
            del self._segments[:drop], self._bases[:drop]
            removed_events = sum(s.count for s in dropped)
            removed_bytes = sum(s.bytes for s in dropped)
            self._bytes -= removed_bytes
            for topic, delta in counts.items():
                left = self._sealed_counts.get(topic, 0) + delta
                if left > 0:
                    self._sealed_counts[topic] = left
                else:
                    self._sealed_counts.pop(topic, None)
                    self._sealed_last.pop(topic, None)
            gone = {s.base for s in dropped}
            self._matches.discard_where(lambda key: key[0] in gone)
            self._offsets.discard_where(lambda key: key[0] in gone)
            await trio.to_thread.run_sync(_delete_segments, self._segments_dir, dropped)
            await self._meta.adjust_topics(counts, (self._bases[0], self._active.base))
        return RetentionResult(removed_events, removed_bytes, self._bases[0])

    # -- lifecycle -------------------------------------------------------------------------

    def background_tasks(self) -> list[Callable[[], Awaitable[None]]]:
        if self._fsync.mode == "interval":
            return [self._sync_timer]
        return []

    async def _sync_timer(self) -> None:
        """``fsync=interval:<ms>``: flush what was appended since the last flush."""
        while True:
            await trio.sleep(self._fsync.interval_ms / 1000)
            await self.sync()

    async def sync(self) -> None:
        """Flush appends and cursor/state commits to disk now (for ``interval`` and ``never``)."""
        async with self._write_lock:
            if self._closed:
                return
            if self._dirty:
                self._dirty = False
                began = time.monotonic()
                active, end = self._active, self._next  # appends wait for the lock
                with lmdb_errors(active.path):
                    await trio.to_thread.run_sync(active.env.sync, True)
                self._synced, self._synced_as_of = end, began  # sealed ones synced at seal
                self.flushes += 1
        await self._meta.sync()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._notifier.close()
        with trio.CancelScope(shield=True):
            # Wait for an append, retention or flush in progress, and for a
            # cursor or state commit: their threads use the environments.
            async with self._write_lock, self._meta.lock:
                await self._writer.stop()
                await trio.to_thread.run_sync(self._close_sync)

    def _close_sync(self) -> None:
        try:
            if self._fsync.mode != "always":
                with lmdb_errors(self._active.path):
                    self._active.env.sync(True)
                self._meta.sync_now()
        finally:
            for segment in self._segments:
                segment.close()
            self._meta.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None


def _remove_leftovers(segments_dir: Path) -> None:
    """Remove segments half created (``.tmp-*``) or half deleted (``.del-*``) by a crash."""
    removed = False
    for path in segments_dir.iterdir():
        if path.name.startswith((".tmp-", ".del-")):
            logger.warning("removing %s, left over by an interrupted run", path)
            with lmdb_errors(path):
                shutil.rmtree(path)
            removed = True
    if removed:
        with lmdb_errors(segments_dir):
            fsync_dir(segments_dir)


def _open_segments(segments_dir: Path, policy: FsyncPolicy, min_map: int) -> list[Segment]:
    """Open every segment in order, checking they are contiguous; blocking."""
    segments: list[Segment] = []
    try:
        with lmdb_errors(segments_dir):
            paths = list(iter_segment_dirs(segments_dir))
        for number, path in enumerate(paths):
            last = number == len(paths) - 1
            try:
                segment = Segment.open(path, writable=last, policy=policy, map_size=min_map)
            except NotSealedError:
                segment = _reseal(path, policy)
            if segments and segment.base != segments[-1].end:
                previous = segments[-1]
                segment.close()
                raise CorruptLogError(
                    f"segment {path} starts at offset {segment.base}, but the segment before "
                    f"it ({segment_name(previous.base)}) ends at {previous.end}: "
                    f"events {previous.end}..{segment.base - 1} are missing"
                )
            segments.append(segment)
    except BaseException:
        for segment in segments:
            segment.close()
        raise
    return segments


def _reseal(path: Path, policy: FsyncPolicy) -> Segment:
    """Seal an unsealed segment found before the last one (rebuilding its index)."""
    logger.warning("segment %s was not sealed; sealing it now", path)
    segment = Segment.open(path, writable=True, policy=policy)
    try:
        with lmdb_errors(path):
            segment.seal()
    finally:
        segment.close()
    return Segment.open(path, writable=False, policy=policy)


def _delete_segments(segments_dir: Path, segments: Sequence[Segment]) -> None:
    """Close and delete dropped segments: rename each to ``.del-*`` (atomic), then remove it."""
    with lmdb_errors(segments_dir):
        doomed = []
        for segment in segments:
            segment.close()
            target = segments_dir / f".del-{segment_name(segment.base)}"
            segment.path.rename(target)
            doomed.append(target)
        fsync_dir(segments_dir)
        for target in doomed:
            shutil.rmtree(target)
