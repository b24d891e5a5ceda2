"""One segment of the LMDB log: an LMDB environment holding a contiguous run of events.

A segment lives in ``segments/<base offset, 20 digits>/`` (``data.mdb`` and, while
it is written, ``lock.mdb``) and has five named databases:

``events``
    8-byte big-endian offset -> record (:mod:`tidelog.storage.records`).
    Offsets are dense: ``base .. base + count - 1``.
``times``
    16-byte key (8-byte big-endian timestamp, 8-byte big-endian offset) -> empty,
    one entry per appended batch (every event of a batch has the batch's
    timestamp), so the first key ``>= (T, 0)`` names the first offset whose
    timestamp is ``>= T``. Written in the same transaction as the events.
``info``
    ``format`` (1), ``base``, ``prev_ts`` (the log's last timestamp when the
    segment was created); once sealed also ``sealed`` (1), ``count``, ``bytes``,
    ``first_ts`` and ``last_ts``. All values 8-byte big-endian.
``topics``
    Written when the segment is sealed: topic (UTF-8) -> the offsets of its events
    relative to ``base``, packed as little-endian unsigned 32-bit integers, ascending.
``counts``
    Written when the segment is sealed: topic (UTF-8) -> number of events (8 bytes).
    Topics longer than LMDB's key limit use the stand-in keys of :mod:`lmdb_keys`
    in both databases (and carry the topic after the count here).

The active (last, unsealed) segment keeps its topic index in memory
(:class:`TopicIndex`) instead of writing one index entry per event: an index
entry per record in the fsynced transaction dirties a page per distinct topic
per commit (0.26x ingest with 100 topics, 0.11x with 100k, measured in issue 2).
The index is written once, by :meth:`Segment.seal`, and rebuilt from the events
when the log reopens (:meth:`Segment.open` scans the active segment).

This module does no locking and starts no threads; :mod:`tidelog.storage.lmdb_log`
decides what runs where. Methods documented as *blocking* run in a worker thread.
"""

from __future__ import annotations

import itertools
import operator
import shutil
import sys
from array import array
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Generic, TypeVar

import attrs
import lmdb

from tidelog.errors import CorruptLogError
from tidelog.storage.base import FsyncPolicy
from tidelog.storage.lmdb_env import (
    TIME_KEY,
    U64,
    fsync_dir,
    lmdb_errors,
    open_env,
    used_bytes,
)
from tidelog.storage.lmdb_keys import (
    iter_long_topics,
    pack_count,
    topic_key,
    unpack_count,
)
from tidelog.storage.records import (
    HEADER_SIZE,
    CorruptRecordError,
    Event,
    decode_run,
    record_timestamp,
)
from tidelog.topics import compile_filter, has_wildcards, literal_prefix

SEGMENT_FORMAT = 1
MAX_DBS = 6  # events, times, info, topics, counts, and one spare for later formats
MAX_SEGMENT_EVENTS = 0xFFFF_FFFF
"""Relative offsets are unsigned 32-bit: a segment holds at most this many events."""
_DB_NAMES = (b"events", b"times", b"info", b"topics", b"counts")

if array("I").itemsize != 4:  # pragma: no cover - every platform CPython supports today
    raise ImportError("tidelog's LMDB index needs a 4-byte array('I')")
_SWAP = sys.byteorder != "little"
_SECOND = operator.itemgetter(1)


def segment_name(base: int) -> str:
    """The directory name of the segment starting at ``base``: 20 digits, Kafka style."""
    return f"{base:020d}"


def pack_offsets(offsets: array[int]) -> bytes:
    """Relative offsets as stored in ``topics``: little-endian u32."""
    if _SWAP:  # pragma: no cover - big-endian hosts
        offsets = array("I", offsets)
        offsets.byteswap()
    return offsets.tobytes()


def unpack_offsets(raw: bytes) -> array[int]:
    """Inverse of :func:`pack_offsets`."""
    if len(raw) % 4:
        raise CorruptLogError("topic index entry is not a whole number of offsets")
    offsets = array("I", raw)
    if _SWAP:  # pragma: no cover - big-endian hosts
        offsets.byteswap()
    return offsets


class NotSealedError(CorruptLogError):
    """A segment that should be sealed (it is not the last one) is not."""


K = TypeVar("K")
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """A small LRU map bounded by a total weight (entries, or index offsets)."""

    def __init__(self, max_weight: int) -> None:
        self.max_weight = max_weight
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._weight = 0

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: K, value: V, weight: int = 1) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self._weight -= old[1]
        if weight > self.max_weight:
            return
        self._items[key] = (value, weight)
        self._weight += weight
        while self._weight > self.max_weight:
            _, (_, dropped) = self._items.popitem(last=False)
            self._weight -= dropped

    def discard_where(self, predicate: object) -> None:
        """Drop every entry whose key satisfies ``predicate`` (a callable)."""
        assert callable(predicate)
        for key in [k for k in self._items if predicate(k)]:
            self._weight -= self._items.pop(key)[1]


class TopicMatch:
    """The topics of one sealed segment that a filter matches, and their event counts."""

    __slots__ = ("counts", "topic_set", "topics", "total")

    def __init__(self, topics: tuple[bytes, ...], counts: tuple[int, ...]) -> None:
        self.topics = topics
        self.counts = counts
        self.total = sum(counts)
        self.topic_set = frozenset(topics)


@attrs.frozen
class ActiveMatch:
    """The topics of the active segment a filter matched, as of ``checked`` topics seen."""

    checked: int
    topics: tuple[str, ...]
    raw: frozenset[bytes]


def _new_offsets() -> array[int]:
    return array("I")


class TopicIndex:
    """The active segment's topic index, in memory: topic -> ascending relative offsets.

    Updated on the trio thread after each commit (so readers, which run on the
    same thread, always see the index and the log's next offset agree); persisted
    by :meth:`Segment.seal`; rebuilt by :meth:`Segment.open` after a restart.
    Remembers, per filter, which topics matched so far, and only matches topics
    that appeared since (the dict keeps topics in the order they appeared).
    """

    def __init__(self) -> None:
        self.offsets: defaultdict[str, array[int]] = defaultdict(_new_offsets)
        self._matches: dict[str, ActiveMatch] = {}

    @classmethod
    def from_offsets(cls, offsets: dict[bytes, array[int]]) -> TopicIndex:
        """An index of raw topics and their offsets (as rebuilt from the events)."""
        index = cls()
        for raw, entry in sorted(offsets.items(), key=lambda item: item[1][0]):
            index.offsets[raw.decode("utf-8")] = entry
        return index

    def add(self, topics: Iterable[str], first: int) -> None:
        """Index events with these topics at relative offsets ``first, first + 1, ...``."""
        self.merge(self.group(topics, first))

    @staticmethod
    def group(topics: Iterable[str], first: int) -> dict[str, list[int]]:
        """The relative offsets ``first, first + 1, ...`` of a batch, grouped by topic.

        Pure computation, so the log can do it while the batch's commit syncs;
        :meth:`merge` then publishes it with one ``extend`` per topic. A batch of one
        topic (a publisher's, a link's from one) takes no loop here.
        """
        topics = list(topics)
        if topics and topics[-1] == topics[0] and topics.count(topics[0]) == len(topics):
            return {topics[0]: list(range(first, first + len(topics)))}
        groups: defaultdict[str, list[int]] = defaultdict(list)
        for topic, relative in zip(topics, itertools.count(first)):
            groups[topic].append(relative)
        return groups

    def merge(self, groups: dict[str, list[int]]) -> None:
        """Add a batch grouped by :meth:`group` (its offsets after every indexed one)."""
        offsets = self.offsets
        for topic, relatives in groups.items():
            offsets[topic].extend(relatives)

    def counts(self) -> dict[str, int]:
        return {topic: len(offsets) for topic, offsets in self.offsets.items()}

    def matching(self, topic_filter: str) -> ActiveMatch:
        """The topics indexed so far that ``topic_filter`` matches."""
        seen = len(self.offsets)
        found = self._matches.get(topic_filter)
        if found is not None and found.checked == seen:
            return found
        if not has_wildcards(topic_filter):
            topics: tuple[str, ...] = (topic_filter,) if topic_filter in self.offsets else ()
            raw = frozenset(t.encode("utf-8") for t in topics)
        else:
            checked, topics, raw = (
                (found.checked, found.topics, found.raw) if found else (0, (), frozenset())
            )
            match = compile_filter(topic_filter)
            new = tuple(t for t in itertools.islice(self.offsets, checked, None) if match(t))
            topics += new
            raw |= frozenset(t.encode("utf-8") for t in new)
        if len(self._matches) >= 256:
            self._matches.clear()
        found = self._matches[topic_filter] = ActiveMatch(seen, topics, raw)
        return found


@attrs.define
class SegmentSummary:
    """What a segment holds; read from ``info`` (sealed) or from the events (active)."""

    count: int = 0
    bytes: int = 0
    first_ts: int | None = None
    last_ts: int | None = None


class Segment:
    """One LMDB environment of the log (see the module docstring for its format).

    A sealed segment is read-only: it was opened with ``readonly=True`` after a
    restart, or it is the former active segment, which is never written again.
    """

    def __init__(
        self,
        path: Path,
        base: int,
        env: lmdb.Environment,
        *,
        sealed: bool,
        summary: SegmentSummary,
        prev_ts: int,
        map_size: int,
        index: TopicIndex | None,
    ) -> None:
        self.path = path
        self.base = base
        self.env = env
        self.sealed = sealed
        self.count = summary.count
        self.bytes = summary.bytes
        self.first_ts = summary.first_ts
        self.last_ts = summary.last_ts
        self.prev_ts = prev_ts
        self.map_size = map_size
        self.index = index
        # Opened outside any transaction of ours: py-lmdb then opens each handle in a
        # transaction it commits (a write one unless the env is read-only), and the
        # handle stays valid for later transactions.
        with lmdb_errors(path):
            self.page_size: int = env.stat()["psize"]
            self.used = used_bytes(env, self.page_size)
            dbs = [env.open_db(name, create=False) for name in _DB_NAMES]
        self.events_db, self.times_db, self.info_db, self.topics_db, self.counts_db = dbs

    @property
    def end(self) -> int:
        """The offset after this segment's last event."""
        return self.base + self.count

    def __repr__(self) -> str:
        state = "sealed" if self.sealed else "active"
        return f"<Segment {segment_name(self.base)} {state} {self.count} events>"

    # -- creating and opening (blocking) ----------------------------------------------

    @classmethod
    def create(
        cls, segments_dir: Path, base: int, prev_ts: int, map_size: int, policy: FsyncPolicy
    ) -> Segment:
        """Create an empty active segment at ``base``; blocking.

        Built in ``.tmp-<name>`` and renamed into place, so a crash leaves either
        no segment or a complete empty one (recovery removes ``.tmp-*``).
        """
        name = segment_name(base)
        tmp = segments_dir / f".tmp-{name}"
        final = segments_dir / name
        if final.exists():  # an earlier attempt got as far as the rename
            segment = cls.open(final, writable=True, policy=policy, map_size=map_size)
            if segment.count or segment.sealed:
                segment.close()
                raise CorruptLogError(f"segment {final} already exists and is not empty")
            return segment
        with lmdb_errors(tmp):
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
            env = open_env(tmp, readonly=False, max_dbs=MAX_DBS, map_size=map_size, create=True)
            try:
                with env.begin(write=True) as txn:
                    dbs = {n: env.open_db(n, txn=txn, create=True) for n in _DB_NAMES}
                    info = dbs[b"info"]
                    txn.put(b"format", U64.pack(SEGMENT_FORMAT), db=info)
                    txn.put(b"base", U64.pack(base), db=info)
                    txn.put(b"prev_ts", U64.pack(prev_ts), db=info)
                env.sync(True)
            finally:
                env.close()
            tmp.rename(final)
            fsync_dir(segments_dir)
        return cls.open(final, writable=True, policy=policy, map_size=map_size)

    @classmethod
    def open(cls, path: Path, *, writable: bool, policy: FsyncPolicy, map_size: int = 0) -> Segment:
        """Open the segment in ``path``; blocking.

        Checks the format, that the directory name is the base offset, and that
        the events are exactly ``base .. base + count - 1``. A sealed segment's
        summary comes from ``info``; an unsealed one is scanned to rebuild its
        topic index and summary (``writable`` must then be true).
        Raises :class:`CorruptLogError` naming the segment.
        """
        try:
            base = int(path.name)
        except ValueError:
            raise CorruptLogError(f"{path} is not named by a base offset") from None
        env = open_env(
            path,
            readonly=not writable,
            max_dbs=MAX_DBS,
            map_size=map_size or 10 * 1024 * 1024,
            policy=policy,
        )
        try:
            with lmdb_errors(path):
                if writable:
                    map_size = max(map_size, 2 * used_bytes(env))
                    env.set_mapsize(map_size)
                info = read_info(env, path)
                if info.get(b"format") != SEGMENT_FORMAT:
                    raise CorruptLogError(f"segment {path}: unknown format {info.get(b'format')!r}")
                if info.get(b"base") != base:
                    raise CorruptLogError(
                        f"segment {path}: info says base {info.get(b'base')}, the name says {base}"
                    )
                count = check_offsets(env, path, base)
                sealed = info.get(b"sealed") == 1
                if sealed:
                    summary = SegmentSummary(
                        count=info.get(b"count", -1),
                        bytes=info.get(b"bytes", 0),
                        first_ts=info.get(b"first_ts") if count else None,
                        last_ts=info.get(b"last_ts") if count else None,
                    )
                    if summary.count != count:
                        raise CorruptLogError(
                            f"segment {path}: sealed with {summary.count} events, holds {count}"
                        )
                    index = None
                else:
                    if not writable:
                        raise NotSealedError(f"segment {path} is not sealed")
                    summary, index = scan_events(env, path, base)
            return cls(
                path,
                base,
                env,
                sealed=sealed,
                summary=summary,
                prev_ts=info.get(b"prev_ts", 0),
                map_size=map_size,
                index=index,
            )
        except BaseException:
            env.close()
            raise

    def close(self) -> None:
        self.env.close()

    # -- writing (blocking; the log serializes writers) ---------------------------------

    def write_batch(
        self,
        first: int,
        records: Sequence[bytes],
        timestamp: int,
        committing: Callable[[], object] | None = None,
    ) -> int:
        """Append ``records`` at ``first, first + 1, ...`` in one transaction; blocking.

        Calls ``committing()`` (if given) when only the commit is left to do.
        Returns the bytes of the map now in use. Raises py-lmdb errors as they are
        (the log grows the map on ``MapFullError`` and translates the rest).
        """
        count = len(records)
        with self.env.begin(write=True) as txn:
            keys = map(U64.pack, range(first, first + count))
            _, added = txn.cursor(self.events_db).putmulti(
                zip(keys, records, strict=True), append=True
            )
            if added != count:
                raise CorruptLogError(
                    f"segment {self.path}: offsets from {first} already exist on disk"
                )
            txn.put(TIME_KEY.pack(timestamp, first), b"", append=True, db=self.times_db)
            if committing is not None:
                committing()
        return used_bytes(self.env, self.page_size)

    def seal(self) -> None:
        """Write the topic index, counts and summary; mark the segment sealed; sync. Blocking."""
        index = self.index or TopicIndex()
        with self.env.begin(write=True) as txn:
            for topic, offsets in index.offsets.items():
                raw = topic.encode("utf-8")
                key = topic_key(raw)
                txn.put(key, pack_offsets(offsets), db=self.topics_db)
                txn.put(key, pack_count(raw, len(offsets)), db=self.counts_db)
            write_summary(
                txn,
                self.info_db,
                SegmentSummary(self.count, self.bytes, self.first_ts, self.last_ts),
            )
        self.env.sync(True)

    def grow_map(self, map_size: int) -> None:
        """Enlarge the map; only while no transaction on this environment is open."""
        with lmdb_errors(self.path):
            self.env.set_mapsize(map_size)
        self.map_size = map_size

    # -- reading (inline on the trio thread: short and bounded) ---------------------------

    def read_all(
        self,
        txn: lmdb.Transaction[bytes],
        start: int,
        count: int,
        out: list[Event],
        max_bytes: int | None,
        total: int,
    ) -> tuple[int, int, bool]:
        """Decode ``count`` events from ``start`` (see :func:`decode_run`).

        Returns ``(next offset, total bytes, full)``.
        """
        cursor = txn.cursor(self.events_db)
        if not cursor.set_key(U64.pack(start)):
            raise CorruptLogError(f"segment {self.path}: event {start} is missing")
        records = list(itertools.islice(cursor.iternext(keys=False), count))
        if len(records) < count:
            raise CorruptLogError(
                f"segment {self.path}: events from {start + len(records)} are missing"
            )
        done, total, full = decode_run(records, range(start, start + count), out, max_bytes, total)
        return start + done, total, full

    def scan(
        self,
        txn: lmdb.Transaction[bytes],
        start: int,
        count: int,
        wanted: frozenset[bytes],
        limit: int,
        out: list[Event],
        max_bytes: int | None,
        total: int,
    ) -> tuple[int, int, bool]:
        """Examine ``count`` events from ``start``, keeping those whose topic is in ``wanted``.

        Only the topic bytes of each record are looked at; the matches are
        decoded together by :func:`decode_run`. Returns ``(next offset, total
        bytes, full)``; ``full`` means ``limit`` or ``max_bytes`` stopped the scan.
        """
        cursor = txn.cursor(self.events_db)
        if not cursor.set_key(U64.pack(start)):
            raise CorruptLogError(f"segment {self.path}: event {start} is missing")
        room = limit - len(out)
        offsets: list[int] = []
        records: list[bytes] = []
        position = start - 1
        try:
            values = cursor.iternext(keys=False)
            for position, data in zip(range(start, start + count), values, strict=False):
                if data[HEADER_SIZE : HEADER_SIZE + ((data[10] << 8) | data[11])] in wanted:
                    offsets.append(position)
                    records.append(data)
                    if len(records) >= room:
                        break
        except IndexError:
            raise CorruptLogError(f"segment {self.path}: record {position} is truncated") from None
        if len(records) < room and position < start + count - 1:
            raise CorruptLogError(f"segment {self.path}: events from {position + 1} are missing")
        done, total, full = decode_run(records, offsets, out, max_bytes, total)
        if full:
            return offsets[done], total, True
        if len(records) >= room:
            return position + 1, total, True
        return start + count, total, False

    def fetch(
        self,
        txn: lmdb.Transaction[bytes],
        offsets: Iterator[int],
        limit: int,
        out: list[Event],
        max_bytes: int | None,
        total: int,
    ) -> tuple[int | None, int, bool]:
        """Decode the events at ``offsets`` (absolute, ascending) until ``limit`` or ``max_bytes``.

        Returns ``(offset after the last one examined, or None; total; full)``.
        """
        wanted = list(itertools.islice(offsets, limit - len(out)))
        if not wanted:
            return None, total, False
        pairs = txn.cursor(self.events_db).getmulti(map(U64.pack, wanted))
        if len(pairs) != len(wanted):
            found = {U64.unpack(key)[0] for key, _ in pairs}
            missing = next(offset for offset in wanted if offset not in found)
            raise CorruptLogError(f"segment {self.path}: indexed event {missing} is missing")
        records = list(map(_SECOND, pairs))
        done, total, full = decode_run(records, wanted, out, max_bytes, total)
        if full:
            return wanted[done], total, True
        return wanted[-1] + 1, total, len(out) >= limit

    def offset_for_time(self, txn: lmdb.Transaction[bytes], timestamp: int) -> int | None:
        """The first offset of this segment with a timestamp ``>= timestamp``, or None."""
        cursor = txn.cursor(self.times_db)
        if not cursor.set_range(U64.pack(timestamp)):
            return None
        _, offset = TIME_KEY.unpack(cursor.key())
        return int(offset)

    # -- the sealed topic index ---------------------------------------------------------

    def sealed_match(self, txn: lmdb.Transaction[bytes], topic_filter: str) -> TopicMatch:
        """The topics of this sealed segment that ``topic_filter`` matches, from ``counts``."""
        topics: list[bytes] = []
        counts: list[int] = []
        if not has_wildcards(topic_filter):
            raw = topic_filter.encode("utf-8")
            key = topic_key(raw)
            value = txn.get(key, db=self.counts_db)
            if value is not None:
                topic, count = self._count_entry(key, value)
                if topic == raw:
                    topics.append(raw)
                    counts.append(count)
            return TopicMatch(tuple(topics), tuple(counts))
        match = compile_filter(topic_filter)
        prefix = literal_prefix(topic_filter).encode("utf-8")
        cursor = txn.cursor(self.counts_db)
        for key, value in iter_long_topics(cursor):
            topic, count = self._count_entry(key, value)
            if topic.startswith(prefix) and match(topic.decode("utf-8")):
                topics.append(topic)
                counts.append(count)
        if cursor.set_range(prefix or b"\x01"):  # past the stand-in keys (zero byte first)
            for raw, value in cursor:
                if not raw.startswith(prefix):
                    break
                if match(raw.decode("utf-8")):
                    topics.append(raw)
                    counts.append(U64.unpack(value)[0])
        return TopicMatch(tuple(topics), tuple(counts))

    def _count_entry(self, key: bytes, value: bytes) -> tuple[bytes, int]:
        try:
            return unpack_count(key, value)
        except ValueError as exc:
            raise CorruptLogError(f"segment {self.path}: {exc}") from None

    def sealed_offsets(self, txn: lmdb.Transaction[bytes], topic: bytes) -> array[int]:
        """The relative offsets of ``topic`` in this sealed segment."""
        raw = txn.get(topic_key(topic), db=self.topics_db)
        if raw is None:
            raise CorruptLogError(f"segment {self.path}: topic index lacks {topic[:80]!r}")
        return unpack_offsets(raw)

    def sealed_last_offset(self, txn: lmdb.Transaction[bytes], topic: bytes) -> int | None:
        """The newest offset of ``topic`` in this sealed segment (``None``: not in it);
        decodes only the last entry of the topic's offsets."""
        raw = txn.get(topic_key(topic), db=self.topics_db)
        if raw is None:
            return None
        if not raw or len(raw) % 4:
            raise CorruptLogError(f"segment {self.path}: bad topic index entry {topic[:80]!r}")
        return self.base + unpack_offsets(raw[-4:])[0]

    def sealed_counts(self) -> dict[str, int]:
        """Events per topic in this sealed segment."""
        with lmdb_errors(self.path), self.env.begin() as txn:
            entries = (self._count_entry(k, v) for k, v in txn.cursor(self.counts_db))
            return {topic.decode("utf-8"): count for topic, count in entries}

    def topic_counts(self) -> dict[str, int]:
        """Events per topic, from the in-memory index (active) or ``counts`` (sealed)."""
        if self.index is not None:
            return self.index.counts()
        return self.sealed_counts()


def read_info(env: lmdb.Environment, path: Path) -> dict[bytes, int]:
    """The ``info`` database as a dict (every value is an 8-byte integer)."""
    try:
        info_db = env.open_db(b"info", create=False)
    except lmdb.NotFoundError:
        raise CorruptLogError(f"segment {path} has no info database") from None
    out: dict[bytes, int] = {}
    with env.begin() as txn:
        for key, value in txn.cursor(info_db):
            if len(value) != 8:
                raise CorruptLogError(f"segment {path}: malformed info entry {key!r}")
            out[key] = U64.unpack(value)[0]
    return out


def write_summary(
    txn: lmdb.Transaction[bytes], info_db: lmdb._Database, summary: SegmentSummary
) -> None:
    """Store a sealed segment's summary and its sealed flag in ``info``."""
    for key, value in (
        (b"count", summary.count),
        (b"bytes", summary.bytes),
        (b"first_ts", summary.first_ts or 0),
        (b"last_ts", summary.last_ts or 0),
        (b"sealed", 1),
    ):
        txn.put(key, U64.pack(value), db=info_db)


def check_offsets(env: lmdb.Environment, path: Path, base: int) -> int:
    """Check the events are keyed ``base .. base + n - 1``; return ``n``."""
    try:
        events = env.open_db(b"events", create=False)
    except lmdb.NotFoundError:
        raise CorruptLogError(f"segment {path} has no events database") from None
    with env.begin() as txn:
        count = txn.stat(events)["entries"]
        if not count:
            return 0
        cursor = txn.cursor(events)
        cursor.first()
        first_key = cursor.key()
        cursor.last()
        last_key = cursor.key()
    if len(first_key) != 8 or len(last_key) != 8:
        raise CorruptLogError(f"segment {path}: malformed event keys")
    first = U64.unpack(first_key)[0]
    last = U64.unpack(last_key)[0]
    if first != base or last != base + count - 1:
        raise CorruptLogError(
            f"segment {path}: holds {count} events keyed {first}..{last}, "
            f"expected {base}..{base + count - 1}"
        )
    return int(count)


def scan_events(env: lmdb.Environment, path: Path, base: int) -> tuple[SegmentSummary, TopicIndex]:
    """Rebuild an active segment's summary and topic index by reading its events."""
    events = env.open_db(b"events", create=False)
    by_raw: dict[bytes, array[int]] = {}
    summary = SegmentSummary()
    relative = 0
    data = b""
    with env.begin() as txn:
        cursor = txn.cursor(events)
        try:
            for relative, data in enumerate(cursor.iternext(keys=False)):
                raw = data[HEADER_SIZE : HEADER_SIZE + ((data[10] << 8) | data[11])]
                entry = by_raw.get(raw)
                if entry is None:
                    entry = by_raw[raw] = array("I")
                entry.append(relative)
                summary.bytes += len(data)
                if relative == 0:
                    summary.first_ts = record_timestamp(data)
        except IndexError:
            raise CorruptLogError(
                f"segment {path}: record {base + relative} is truncated"
            ) from None
        if by_raw:
            summary.count = relative + 1
            summary.last_ts = record_timestamp(data)
    try:
        index = TopicIndex.from_offsets(by_raw)
    except UnicodeDecodeError as exc:
        offset = base + min(by_raw[raw][0] for raw in by_raw if not _is_utf8(raw))
        problem = f"the topic is not UTF-8 ({exc.reason})"
        raise CorruptRecordError(offset, problem).located(f"segment {path}") from None
    return summary, index


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def iter_segment_dirs(segments_dir: Path) -> Iterator[Path]:
    """Segment directories (20-digit names) in offset order."""
    names = sorted(p.name for p in segments_dir.iterdir() if p.name.isdigit() and len(p.name) == 20)
    for name in names:
        yield segments_dir / name
