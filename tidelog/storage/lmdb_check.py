"""``verify`` and ``reindex`` for the LMDB log: indexes are derived data.

Both work on a closed data directory (they take its lock, so they refuse a
directory a running log holds) and read every event once.

* :func:`verify` checks that every record decodes, that offsets are contiguous
  within and across segments, that timestamps never decrease, that the time
  index points at the first event of every run of equal timestamps and only at
  events with its timestamp, that each sealed segment's topic index, counts and
  summary match its events, and that the topic dictionary in ``meta`` matches
  the sealed segments. It reports problems instead of raising.
* :func:`reindex` rebuilds the time index of every segment, and the topic index,
  counts and summary of every sealed segment (sealing an unsealed segment that is
  not the last), then the topic dictionary, from the events alone. It raises
  :class:`~tidelog.errors.CorruptLogError` if the events themselves are damaged:
  no index can bring those back.

The rebuilt time index has one entry per run of equal timestamps rather than
one per batch (batch boundaries are not recorded in the events); lookups give
the same answers.
"""

from __future__ import annotations

import os
from array import array
from pathlib import Path
from typing import Any

import attrs
import lmdb

from tidelog.errors import StorageError
from tidelog.storage.base import FsyncPolicy
from tidelog.storage.lmdb_env import TIME_KEY, U64, lmdb_errors, lock_directory, open_env
from tidelog.storage.lmdb_meta import MetaStore
from tidelog.storage.lmdb_segment import (
    MAX_DBS,
    SEGMENT_FORMAT,
    SegmentSummary,
    iter_segment_dirs,
    pack_offsets,
    read_info,
    unpack_offsets,
    write_summary,
)
from tidelog.storage.records import decode_record

_DB_NAMES = (b"events", b"times", b"info", b"topics", b"counts")


@attrs.frozen
class VerifyReport:
    """What :func:`verify` found."""

    path: Path
    segments: int
    events: int
    topics: int
    """Distinct topics in the stored events."""
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


@attrs.frozen
class ReindexReport:
    """What :func:`reindex` rebuilt."""

    path: Path
    segments: int
    events: int
    sealed: tuple[str, ...]
    """Segments that were not sealed (and not last) and are sealed now."""


@attrs.define
class _Scan:
    """One segment's events, read back: what its indexes should say."""

    count: int = 0
    size: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    runs: list[tuple[int, int]] = attrs.field(factory=list)
    """(timestamp, offset) of the first event of each run of equal timestamps."""
    topics: dict[bytes, array[int]] = attrs.field(factory=dict)


def _scan(
    txn: lmdb.Transaction[bytes], events: Any, base: int, problems: list[str] | None
) -> _Scan:
    """Decode every event; report (or, without ``problems``, raise) what is wrong."""
    scan = _Scan()
    expected = base
    for key, data in txn.cursor(events):
        offset = U64.unpack(key)[0] if len(key) == 8 else -1
        if offset != expected:
            message = f"event key {key.hex()} where offset {expected} was expected"
            if problems is None:
                raise StorageError(message)
            problems.append(message)
            return scan
        expected += 1
        try:
            event = decode_record(offset, data)
        except StorageError as exc:
            if problems is None:
                raise
            problems.append(str(exc))
            continue
        if scan.last_ts is not None and event.timestamp < scan.last_ts:
            message = f"event {offset}: timestamp {event.timestamp} < {scan.last_ts} before it"
            if problems is None:
                raise StorageError(message)
            problems.append(message)
        if scan.last_ts is None or event.timestamp != scan.last_ts:
            scan.runs.append((event.timestamp, offset))
        if scan.first_ts is None:
            scan.first_ts = event.timestamp
        scan.last_ts = event.timestamp
        scan.count += 1
        scan.size += len(data)
        raw = event.topic.encode("utf-8")
        entry = scan.topics.get(raw)
        if entry is None:
            entry = scan.topics[raw] = array("I")
        entry.append(offset - base)
    return scan


def verify(path: str | os.PathLike[str]) -> VerifyReport:
    """Check a closed LMDB log's events and indexes; see the module docstring."""
    root = Path(path)
    lock_fd = lock_directory(root)
    try:
        return _verify(root)
    finally:
        os.close(lock_fd)


def _verify(root: Path) -> VerifyReport:
    problems: list[str] = []
    segments_dir = root / "segments"
    paths = list(iter_segment_dirs(segments_dir)) if segments_dir.is_dir() else []
    if not paths:
        problems.append(f"{segments_dir}: no segments")
    previous_end: int | None = None
    previous_ts: int | None = None
    total_events = 0
    sealed_counts: dict[bytes, int] = {}
    all_topics: set[bytes] = set()
    sealed_range: tuple[int, int] | None = None
    for number, path in enumerate(paths):
        local: list[str] = []
        base = int(path.name)
        try:
            env = open_env(path, readonly=True, max_dbs=MAX_DBS)
        except StorageError as exc:
            problems.append(f"segment {path.name}: {exc}")
            previous_end = None
            continue
        try:
            with lmdb_errors(path):
                info = read_info(env, path)
                if info.get(b"format") != SEGMENT_FORMAT:
                    local.append(f"unknown format {info.get(b'format')}")
                if info.get(b"base") != base:
                    local.append(f"info says base {info.get(b'base')}")
                dbs = {name: env.open_db(name, create=False) for name in _DB_NAMES}
                with env.begin() as txn:
                    scan = _scan(txn, dbs[b"events"], base, local)
                    _check_times(txn, dbs, base, scan, local)
                    sealed = info.get(b"sealed") == 1
                    if sealed:
                        _check_sealed(txn, dbs, info, scan, local)
                        for raw, offsets in scan.topics.items():
                            sealed_counts[raw] = sealed_counts.get(raw, 0) + len(offsets)
                        first = sealed_range[0] if sealed_range else base
                        sealed_range = (first, base + scan.count)
                    elif number != len(paths) - 1:
                        local.append("not sealed, but not the last segment")
            if previous_end is not None and base != previous_end:
                local.append(f"starts at {base}, the segment before ends at {previous_end}")
            first_ts = scan.first_ts
            if previous_ts is not None and first_ts is not None and first_ts < previous_ts:
                local.append(f"first timestamp {first_ts} < {previous_ts} before it")
            previous_end = base + scan.count
            previous_ts = scan.last_ts if scan.last_ts is not None else previous_ts
            total_events += scan.count
            all_topics.update(scan.topics)
        except StorageError as exc:
            local.append(str(exc))
            previous_end = None
        finally:
            env.close()
        problems.extend(f"segment {path.name}: {problem}" for problem in local)
    problems.extend(_check_meta(root / "meta", sealed_counts, sealed_range, paths))
    return VerifyReport(root, len(paths), total_events, len(all_topics), tuple(problems))


def _check_times(
    txn: lmdb.Transaction[bytes],
    dbs: dict[bytes, Any],
    base: int,
    scan: _Scan,
    problems: list[str],
) -> None:
    entries = set()
    events = txn.cursor(dbs[b"events"])
    for key, _ in txn.cursor(dbs[b"times"]):
        if len(key) != TIME_KEY.size:
            problems.append(f"time index: malformed key {key.hex()}")
            continue
        timestamp, offset = TIME_KEY.unpack(key)
        entries.add((timestamp, offset))
        if not base <= offset < base + scan.count:
            problems.append(f"time index: entry ({timestamp}, {offset}) outside the segment")
            continue
        data = events.get(U64.pack(offset))
        if data is None or len(data) < 10 or U64.unpack(data[2:10])[0] != timestamp:
            problems.append(f"time index: entry ({timestamp}, {offset}) names another timestamp")
    missing = [run for run in scan.runs if run not in entries]
    if missing:
        timestamp, offset = missing[0]
        problems.append(
            f"time index: {len(missing)} runs of timestamps not indexed "
            f"(first: {timestamp} at offset {offset})"
        )


def _check_sealed(
    txn: lmdb.Transaction[bytes],
    dbs: dict[bytes, Any],
    info: dict[bytes, int],
    scan: _Scan,
    problems: list[str],
) -> None:
    want = {
        b"count": scan.count,
        b"bytes": scan.size,
        b"first_ts": scan.first_ts or 0,
        b"last_ts": scan.last_ts or 0,
    }
    for key, value in want.items():
        if info.get(key) != value:
            problems.append(f"summary: {key.decode()} is {info.get(key)}, the events say {value}")
    indexed: dict[bytes, bytes] = dict(txn.cursor(dbs[b"topics"]))
    counted: dict[bytes, bytes] = dict(txn.cursor(dbs[b"counts"]))
    for raw in sorted(set(indexed) | set(counted) | set(scan.topics)):
        offsets = scan.topics.get(raw, array("I"))
        stored = indexed.get(raw)
        try:
            same = stored is not None and unpack_offsets(stored) == offsets
        except StorageError:
            same = False
        if not same:
            problems.append(f"topic index: entry for {raw!r} does not match the events")
        count = counted.get(raw)
        if count is None or len(count) != 8 or U64.unpack(count)[0] != len(offsets):
            problems.append(f"topic counts: {raw!r} is not {len(offsets)}")


def _check_meta(
    meta_dir: Path,
    sealed_counts: dict[bytes, int],
    sealed_range: tuple[int, int] | None,
    paths: list[Path],
) -> list[str]:
    try:
        env = open_env(meta_dir, readonly=True, max_dbs=8)
    except StorageError as exc:
        return [f"meta: {exc}"]
    try:
        with lmdb_errors(meta_dir):
            info = env.open_db(b"info", create=False)
            topics = env.open_db(b"topics", create=False)
        with lmdb_errors(meta_dir), env.begin() as txn:
            schema = txn.get(b"schema", db=info)
            problems = []
            if schema is None:
                problems.append("meta: no schema version")
            raw = txn.get(b"topics_range", db=info)
            stored = {key: U64.unpack(value)[0] for key, value in txn.cursor(topics)}
        first = int(paths[0].name) if paths else 0
        end = sealed_range[1] if sealed_range else (int(paths[-1].name) if paths else 0)
        if raw is None or U64.unpack(raw[:8])[0] != first or U64.unpack(raw[8:])[0] != end:
            problems.append("meta: the topic dictionary covers other segments (stale)")
        elif stored != {k: v for k, v in sealed_counts.items() if v}:
            problems.append("meta: the topic dictionary does not match the sealed segments")
        return problems
    except StorageError as exc:
        return [f"meta: {exc}"]
    finally:
        env.close()


def reindex(path: str | os.PathLike[str]) -> ReindexReport:
    """Rebuild every index of a closed LMDB log from its events; see the module docstring."""
    root = Path(path)
    lock_fd = lock_directory(root)
    try:
        return _reindex(root)
    finally:
        os.close(lock_fd)


def _reindex(root: Path) -> ReindexReport:
    segments_dir = root / "segments"
    paths = list(iter_segment_dirs(segments_dir)) if segments_dir.is_dir() else []
    total = 0
    newly_sealed = []
    counts: dict[str, int] = {}
    sealed_end = int(paths[0].name) if paths else 0
    for number, path in enumerate(paths):
        base = int(path.name)
        env = open_env(path, readonly=False, max_dbs=MAX_DBS)
        try:
            with lmdb_errors(path):
                info = read_info(env, path)
                last = number == len(paths) - 1
                seal = not last or info.get(b"sealed") == 1
                dbs = {name: env.open_db(name) for name in _DB_NAMES}
                with env.begin(write=True) as txn:
                    scan = _scan(txn, dbs[b"events"], base, None)
                    txn.drop(dbs[b"times"], delete=False)
                    for timestamp, offset in scan.runs:
                        txn.put(TIME_KEY.pack(timestamp, offset), b"", db=dbs[b"times"])
                    if seal:
                        txn.drop(dbs[b"topics"], delete=False)
                        txn.drop(dbs[b"counts"], delete=False)
                        for raw in sorted(scan.topics):
                            offsets = scan.topics[raw]
                            txn.put(raw, pack_offsets(offsets), db=dbs[b"topics"])
                            txn.put(raw, U64.pack(len(offsets)), db=dbs[b"counts"])
                            topic = raw.decode("utf-8")
                            counts[topic] = counts.get(topic, 0) + len(offsets)
                        write_summary(
                            txn,
                            dbs[b"info"],
                            SegmentSummary(scan.count, scan.size, scan.first_ts, scan.last_ts),
                        )
                        if info.get(b"sealed") != 1:
                            newly_sealed.append(path.name)
                        sealed_end = base + scan.count
                env.sync(True)
        finally:
            env.close()
        total += scan.count
    meta_dir = root / "meta"
    if meta_dir.is_dir():
        meta = MetaStore.open(meta_dir, FsyncPolicy("always"), create=False)
        try:
            first = int(paths[0].name) if paths else 0
            meta.replace_topics_sync(counts, (first, sealed_end))
        finally:
            meta.close()
    return ReindexReport(root, len(paths), total, tuple(newly_sealed))
