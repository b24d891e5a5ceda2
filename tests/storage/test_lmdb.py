"""LMDB-specific behaviour: segments, retention, map growth, locking, corruption, recovery.

The shared semantics are in test_conformance.py; these tests look at the files.
Everything runs on real LMDB files in pytest's tmp_path.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import lmdb
import pytest
import trio

from tests.storage.backends import ManualClock
from tidelog.errors import CorruptLogError, LogLockedError, StorageError
from tidelog.storage import EventLog, NewEvent, open_log
from tidelog.storage.base import LogOptions
from tidelog.storage.lmdb_check import reindex, verify
from tidelog.storage.lmdb_log import (
    INLINE_MAX_BYTES,
    INLINE_MAX_EVENTS,
    INLINE_MAX_SECONDS,
    SCAN_BUDGET,
    LmdbLog,
)
from tidelog.storage.lmdb_segment import Segment
from tidelog.storage.memory import MemoryLog

REPO = Path(__file__).resolve().parents[2]


@asynccontextmanager
async def lmdb_log(path: Path, **options: Any) -> AsyncIterator[LmdbLog]:
    async with open_log(f"lmdb://{path}", **options) as log:
        assert isinstance(log, LmdbLog)
        yield log


def events(topic: str, count: int, size: int = 50, start: int = 0) -> list[NewEvent]:
    return [NewEvent(topic, f"{start + i:0{size}d}".encode()) for i in range(count)]


def segment_dirs(path: Path) -> list[str]:
    return sorted(p.name for p in (path / "segments").iterdir())


async def read_all(log: EventLog, start: int = 0, topic_filter: str | None = None) -> list[Any]:
    out = []
    end = (await log.state()).next_offset
    while start < end:
        result = await log.read(start, topic_filter, limit=700)
        out.extend(result.events)
        start = result.next_offset
    return out


async def fill(log: EventLog, batches: int, per_batch: int = 20, size: int = 50) -> None:
    for number in range(batches):
        await log.append(events(f"t/{number % 3}", per_batch, size, number * per_batch))


# -- segments ----------------------------------------------------------------------------


async def test_segments_roll_at_the_size_bound_and_are_named_by_base_offset(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log"
    async with lmdb_log(path, segment_bytes=4096) as log:
        await fill(log, 40)
        names = segment_dirs(path)
        assert len(names) == log.statistics().segments > 5
        assert all(len(name) == 20 and name.isdigit() for name in names)
        assert names[0] == "0" * 20
        offsets = [e.offset for e in await read_all(log)]
        assert offsets == list(range(800))
    # each segment starts where the one before it ended
    report = verify(path)
    assert report.ok, report.problems
    assert (report.segments, report.events, report.topics) == (len(names), 800, 3)
    bases = [int(name) for name in names]
    assert bases == sorted(bases) and bases[0] == 0
    async with lmdb_log(path, segment_bytes=4096) as log:
        assert log.statistics().segments == len(names)
        assert [e.offset for e in await read_all(log, 0, "t/1")] == [
            o for o in range(800) if (o // 20) % 3 == 1
        ]


async def test_segments_roll_at_the_age_bound(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "log"
    async with lmdb_log(path, segment_ms=60_000, clock=clock) as log:
        await log.append(events("a", 5))
        clock.advance(30_000)
        await log.append(events("a", 5))
        assert log.statistics().segments == 1
        clock.advance(30_000)
        await log.append(events("a", 5))  # the first event is 60 s old: roll first
        assert segment_dirs(path) == ["0" * 20, f"{10:020d}"]


# -- retention -----------------------------------------------------------------------------


async def test_retention_removes_sealed_segment_directories_never_the_active_one(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "log"
    async with lmdb_log(path, segment_bytes=4096, clock=clock) as log:
        await fill(log, 30)
        before = segment_dirs(path)
        active = before[-1]
        clock.advance(3_600_000)
        result = await log.apply_retention(max_age_ms=1)  # everything is old
        assert segment_dirs(path) == [active]
        state = await log.state()
        assert state.first_offset == int(active) == result.first_offset
        assert result.removed_events == int(active)
        assert state.next_offset == 600
        assert [e.offset for e in await read_all(log)] == list(range(int(active), 600))
        again = await log.apply_retention(max_bytes=0)  # the active segment always stays
        assert again.removed_events == 0 and segment_dirs(path) == [active]
        counts = {t.topic: t.count for t in await log.topics()}
        assert sum(counts.values()) == 600 - int(active)
        await log.append(events("after", 3))
    async with lmdb_log(path, segment_bytes=4096) as log:
        assert (await log.state()).first_offset == int(active)
        counts_after = {t.topic: t.count for t in await log.topics()}
        assert counts_after == {**counts, "after": 3}
    assert verify(path).ok


async def test_retention_by_size_drops_the_oldest_segments_first(tmp_path: Path) -> None:
    path = tmp_path / "log"
    async with lmdb_log(path, segment_bytes=8192) as log:
        await fill(log, 40, size=100)
        names = segment_dirs(path)
        total = (await log.state()).bytes
        result = await log.apply_retention(max_bytes=total // 2)
        left = segment_dirs(path)
        assert left == names[len(names) - len(left) :]  # a suffix: oldest went first
        assert (await log.state()).bytes == total - result.removed_bytes <= total // 2
        assert result.first_offset == int(left[0])


# -- map growth ------------------------------------------------------------------------------


async def test_map_growth_across_many_segments(tmp_path: Path) -> None:
    path = tmp_path / "log"
    async with lmdb_log(path, segment_bytes=5000, fsync="never") as log:
        for number in range(150):
            await log.append(events(f"m/{number % 5}", 50, 100, number * 50))
        segments = log.statistics().segments
        assert segments > 100
        # the meta environment grows too: 40 MiB of state in a 16 MiB map
        big = {f"k{i}": bytes([i]) * (1024 * 1024) for i in range(40)}
        await log.put_state("big", big)
    async with lmdb_log(path, segment_bytes=5000, fsync="never") as log:
        assert log.statistics().segments == segments
        assert len(await read_all(log)) == 7500
        assert await log.list_state("big") == big
    assert verify(path).ok


async def test_a_batch_larger_than_a_segment_map(tmp_path: Path) -> None:
    """Batches bigger than the default 64 MiB map: grown in place when the active
    segment is empty, in a new segment sized for the batch otherwise."""
    path = tmp_path / "log"
    payload = b"p" * (2 * 1024 * 1024)
    async with lmdb_log(path, segment_bytes=1024 * 1024, fsync="never") as log:
        first = await log.append([NewEvent("big/a", payload)] * 40)  # empty active: grow
        await log.append(events("small", 3))
        second = await log.append([NewEvent("big/b", payload)] * 40)  # roll to a bigger map
        assert first[-1].offset == 39 and second[0].offset == 43
        read = await log.read(0, limit=2, max_bytes=None)
        assert [e.payload for e in read] == [payload, payload]
    async with lmdb_log(path, segment_bytes=1024 * 1024, fsync="never") as log:
        assert (await log.state()).next_offset == 83
        assert [e.offset for e in await read_all(log, 0, "small")] == [40, 41, 42]
        assert (await log.read(82, max_bytes=None)).events[0].payload == payload
        await log.append(events("after", 2))


async def test_many_tiny_records_in_one_batch(tmp_path: Path) -> None:
    path = tmp_path / "log"
    async with lmdb_log(path, fsync="never") as log:
        stored = await log.append([NewEvent("t", b"")] * 200_000)
        assert stored[-1].offset == 199_999
        assert len((await log.read(150_000, limit=100_000)).events) == 50_000


# -- the directory lock ----------------------------------------------------------------------


async def test_a_second_opener_in_this_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "log"
    async with lmdb_log(path) as log:
        await log.append(events("a", 1))
        with pytest.raises(LogLockedError, match=str(path)):
            async with lmdb_log(path):
                pass
        assert (await log.state()).next_offset == 1
    async with lmdb_log(path) as log:  # released on close
        assert (await log.state()).next_offset == 1


async def test_a_second_opener_in_another_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "log"
    child = textwrap.dedent(
        f"""
        import trio
        from tidelog.errors import LogLockedError
        from tidelog.storage import open_log

        async def main():
            try:
                async with open_log("lmdb://{path}"):
                    print("opened")
            except LogLockedError as exc:
                print("locked:", exc)

        trio.run(main)
        """
    )
    async with lmdb_log(path):
        result = await trio.run_process(
            [sys.executable, "-c", child], cwd=REPO, capture_stdout=True
        )
    output = result.stdout.decode()
    assert output.startswith("locked:"), output
    assert f"process {os.getpid()}" in output
    result = await trio.run_process([sys.executable, "-c", child], cwd=REPO, capture_stdout=True)
    assert result.stdout.decode().startswith("opened")


# -- corruption ------------------------------------------------------------------------------


async def make_log(path: Path) -> list[str]:
    """A log with several sealed segments and an active one; returns the segment names."""
    async with lmdb_log(path, segment_bytes=4096) as log:
        await fill(log, 30, size=60)
        await log.commit_cursor("reader", 5)
    return segment_dirs(path)


def data_file(path: Path, name: str) -> Path:
    return path / "segments" / name / "data.mdb"


def truncate_half(file: Path) -> None:
    os.truncate(file, file.stat().st_size // 2)


def scribble(file: Path) -> None:
    """Overwrite every page but the two meta pages with random bytes."""
    size = file.stat().st_size
    rng = random.Random(7)
    with file.open("r+b") as handle:
        handle.seek(8192)
        handle.write(rng.randbytes(size - 8192))


async def open_and_read_everything(path: Path) -> None:
    async with lmdb_log(path, segment_bytes=4096) as log:
        await read_all(log)
        await read_all(log, 0, "t/1")
        await log.offset_for_time(0)


@pytest.mark.parametrize(
    "damage",
    [
        "truncate sealed",
        "truncate active",
        "empty sealed",
        "delete active data",
        "scribble sealed",
        "scribble active",
        "truncate meta",
        "scribble meta",
        "missing middle segment",
        "missing active segment",
        "missing meta",
    ],
)
async def test_damaged_files_raise_corrupt_log_error(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "log"
    names = await make_log(path)
    sealed, active = names[1], names[-1]
    meta = path / "meta" / "data.mdb"
    named = {
        "truncate sealed": sealed,
        "truncate active": active,
        "empty sealed": sealed,
        "delete active data": active,
        "scribble sealed": sealed,
        "scribble active": active,
        "missing middle segment": names[2],
    }.get(damage, "meta")
    if damage.startswith("truncate"):
        truncate_half(meta if damage.endswith("meta") else data_file(path, named))
    elif damage == "empty sealed":
        os.truncate(data_file(path, sealed), 0)
    elif damage == "delete active data":
        data_file(path, active).unlink()
    elif damage.startswith("scribble"):
        scribble(meta if damage.endswith("meta") else data_file(path, named))
    elif damage == "missing middle segment":
        for file in (path / "segments" / names[2]).iterdir():
            file.unlink()
        (path / "segments" / names[2]).rmdir()
        named = names[3]  # the error names the segment after the gap
    elif damage == "missing active segment":
        for file in (path / "segments" / active).iterdir():
            file.unlink()
        (path / "segments" / active).rmdir()
        named = names[-2]  # the error names the last segment left
    elif damage == "missing meta":
        for file in (path / "meta").iterdir():
            file.unlink()
        (path / "meta").rmdir()
    with pytest.raises(CorruptLogError) as caught:
        await open_and_read_everything(path)
    assert named in str(caught.value)


async def test_an_undecodable_record_raises_corrupt_log_error(tmp_path: Path) -> None:
    path = tmp_path / "log"
    names = await make_log(path)
    env = lmdb.open(str(path / "segments" / names[-1]), max_dbs=6)
    db = env.open_db(b"events")
    with env.begin(write=True) as txn:
        key, value = next(iter(txn.cursor(db)))
        txn.put(key, b"\x09" + value[1:], db=db)  # an unknown format version
    env.close()
    async with lmdb_log(path, segment_bytes=4096) as log:
        assert (await log.read(0, limit=5)).events  # the sealed segments still read
        with pytest.raises(CorruptLogError, match="unknown format version 9"):
            await read_all(log)
    report = verify(path)
    assert not report.ok and any("unknown format version" in p for p in report.problems)
    with pytest.raises(CorruptLogError):
        reindex(path)


# -- recovery --------------------------------------------------------------------------------


async def test_recovery_removes_leftovers_of_interrupted_creation_and_deletion(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log"
    names = await make_log(path)
    for leftover in (f".tmp-{int(names[-1]) + 99:020d}", f".del-{0:020d}"):
        (path / "segments" / leftover).mkdir()
        (path / "segments" / leftover / "data.mdb").write_bytes(b"half written")
    async with lmdb_log(path, segment_bytes=4096) as log:
        assert segment_dirs(path) == names
        assert len(await read_all(log)) == 600
    assert verify(path).ok


async def test_recovery_after_a_crash_between_sealing_and_creating_the_next_segment(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log"
    names = await make_log(path)
    # what a crash leaves there: the last segment sealed, no active segment after it
    segment = Segment.open(path / "segments" / names[-1], writable=True, policy=LogOptions().fsync)
    segment.seal()
    end = segment.end
    segment.close()
    async with lmdb_log(path, segment_bytes=4096) as log:
        assert segment_dirs(path) == [*names, f"{end:020d}"]
        stored = await log.append(events("t/0", 2))
        assert stored[0].offset == end == 600
        counts = {t.topic: t.count for t in await log.topics()}
        assert counts == {"t/0": 202, "t/1": 200, "t/2": 200}
    assert verify(path).ok


async def test_recovery_seals_an_unsealed_segment_before_the_last(tmp_path: Path) -> None:
    path = tmp_path / "log"
    names = await make_log(path)
    env = lmdb.open(str(path / "segments" / names[1]), max_dbs=6)
    with env.begin(write=True) as txn:
        for name in (b"topics", b"counts"):
            txn.drop(env.open_db(name, txn=txn), delete=False)
        txn.delete(b"sealed", db=env.open_db(b"info", txn=txn))
    env.close()
    assert not verify(path).ok
    async with lmdb_log(path, segment_bytes=4096) as log:
        assert [e.offset for e in await read_all(log, 0, "t/2")] == [
            o for o in range(600) if (o // 20) % 3 == 2
        ]
    assert verify(path).ok


async def test_a_stale_topic_dictionary_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "log"
    await make_log(path)
    env = lmdb.open(str(path / "meta"), max_dbs=8)
    with env.begin(write=True) as txn:
        txn.drop(env.open_db(b"topics", txn=txn), delete=False)
        txn.delete(b"topics_range", db=env.open_db(b"info", txn=txn))
    env.close()
    async with lmdb_log(path, segment_bytes=4096) as log:
        assert {t.topic: t.count for t in await log.topics()} == {
            "t/0": 200,
            "t/1": 200,
            "t/2": 200,
        }
        assert await log.load_cursor("reader") is not None
    assert verify(path).ok


# -- verify and reindex ------------------------------------------------------------------------


async def test_verify_finds_broken_indexes_and_reindex_repairs_them(tmp_path: Path) -> None:
    path = tmp_path / "log"
    names = await make_log(path)
    report = verify(path)
    assert report.ok and report.events == 600 and report.segments == len(names)
    env = lmdb.open(str(path / "segments" / names[1]), max_dbs=6)
    with env.begin(write=True) as txn:
        txn.delete(b"t/1", db=env.open_db(b"topics", txn=txn))  # an index entry lost
        counts = env.open_db(b"counts", txn=txn)
        txn.put(b"t/2", (999).to_bytes(8, "big"), db=counts)  # a wrong count
        times = env.open_db(b"times", txn=txn)
        first_key = next(iter(txn.cursor(times)))[0]
        txn.delete(first_key, db=times)  # a time index entry lost
    env.close()
    report = verify(path)
    problems = "\n".join(report.problems)
    assert not report.ok
    assert names[1] in problems
    assert "topic index" in problems and "topic counts" in problems and "time index" in problems
    repaired = reindex(path)
    assert (repaired.segments, repaired.events) == (len(names), 600)
    assert verify(path).ok
    async with lmdb_log(path, segment_bytes=4096) as log:
        assert [e.offset for e in await read_all(log, 0, "t/1")] == [
            o for o in range(600) if (o // 20) % 3 == 1
        ]


async def test_verify_refuses_an_open_log(tmp_path: Path) -> None:
    path = tmp_path / "log"
    async with lmdb_log(path):
        with pytest.raises(LogLockedError):
            verify(path)
        with pytest.raises(LogLockedError):
            reindex(path)


# -- fsync policies ----------------------------------------------------------------------------


async def test_interval_fsync_flushes_in_the_background(tmp_path: Path) -> None:
    path = tmp_path / "log"
    async with lmdb_log(path, fsync="interval:20") as log:
        assert log._active.env.flags()["sync"] is False
        await log.append(events("a", 10))
        with trio.fail_after(5):
            while log.flushes == 0:
                await trio.sleep(0.01)
        flushed = log.flushes
        await trio.sleep(0.1)
        assert log.flushes == flushed  # nothing new appended, nothing to flush
        await log.append(events("a", 10))
        await log.commit_cursor("c", 3)
        with trio.fail_after(5):
            while log.flushes == flushed:
                await trio.sleep(0.01)
    async with lmdb_log(path) as log:
        assert (await log.state()).next_offset == 20
        assert (await log.load_cursor("c")) is not None


async def test_never_fsync_leaves_flushing_to_the_os_and_close(tmp_path: Path) -> None:
    path = tmp_path / "log"
    async with lmdb_log(path, fsync="never", segment_bytes=4096) as log:
        assert log._active.env.flags()["sync"] is False
        assert log.background_tasks() == []
        await fill(log, 20)
        await trio.sleep(0.05)
        assert log.flushes == 0
    async with lmdb_log(path, fsync="always") as log:
        assert log._active.env.flags()["sync"] is True
        assert len(await read_all(log)) == 400
    assert verify(path).ok


async def test_fsync_always_commits_inline_or_in_the_writer_thread_alike(tmp_path: Path) -> None:
    """A small batch commits on the trio thread while commits are fast; after a slow
    one (or for a large batch) the writer thread commits. Both are durable alike."""
    path = tmp_path / "log"
    async with lmdb_log(path, fsync="always") as log:
        await log.append(events("a", INLINE_MAX_EVENTS))  # inline: no thread started
        assert log._writer._thread is None
        log._last_commit = INLINE_MAX_SECONDS  # as if that commit had been slow
        await log.append(events("b", 3))
        assert log._writer._thread is not None
        await log.append(events("c", INLINE_MAX_EVENTS + 1))  # too large for inline
    async with lmdb_log(path) as log:
        stored = await read_all(log)
        assert [e.topic for e in stored] == ["a"] * INLINE_MAX_EVENTS + ["b"] * 3 + ["c"] * (
            INLINE_MAX_EVENTS + 1
        )
        assert [e.offset for e in stored] == list(range(len(stored)))
    assert verify(path).ok


async def test_fsync_always_sends_a_small_batch_of_large_events_to_the_writer_thread(
    tmp_path: Path,
) -> None:
    """Few events but many bytes: the commit's pages are not written on the loop's thread."""
    async with lmdb_log(tmp_path / "log", fsync="always") as log:
        size = INLINE_MAX_BYTES // 2
        await log.append(events("big", 3, size=size))
        assert log._writer._thread is not None
        assert [len(e.payload) for e in await read_all(log)] == [size] * 3


# -- filtered reads: index and scan agree -----------------------------------------------------


async def test_index_and_scan_paths_return_the_same_events(tmp_path: Path) -> None:
    rng = random.Random(3)
    weights = {"rare/a": 1, "rare/b": 2, "mid/x": 30, "common": 300, "$SYS/x": 5}
    topics = [*weights]
    reference = MemoryLog(LogOptions())
    async with lmdb_log(tmp_path / "log", segment_bytes=16 * 1024) as log:
        for _ in range(60):
            batch = [
                NewEvent(t, rng.randbytes(rng.randint(0, 80)))
                for t in rng.choices(topics, weights=list(weights.values()), k=rng.randint(1, 60))
            ]
            await log.append(batch)
            await reference.append(batch)
        for topic_filter in ["rare/a", "rare/+", "rare/#", "mid/x", "+/x", "#", "$SYS/#", "none"]:
            want = [(e.offset, e.payload) for e in await read_all(reference, 0, topic_filter)]
            for fraction in (0.0, 0.25, 1.0):
                log.index_fraction = fraction
                for start in (0, 777):
                    got = [(e.offset, e.payload) for e in await read_all(log, start, topic_filter)]
                    assert got == [w for w in want if w[0] >= start], (topic_filter, fraction)
            log.index_fraction = 1.0
            limited = await log.read(0, topic_filter, limit=3, max_bytes=100)
            assert [e.offset for e in limited] == [o for o, _ in want[: len(limited)]]


async def test_a_filtered_scan_examines_a_bounded_number_of_records(tmp_path: Path) -> None:
    async with lmdb_log(tmp_path / "log", fsync="never") as log:
        for _ in range(0, SCAN_BUDGET + 20_000, 10_000):
            await log.append([NewEvent("a", b"")] * 10_000)
        await log.append([NewEvent("b", b"found")])
        log.index_fraction = 0.0  # force the scan
        first = await log.read(0, "b")
        assert first.events == [] and first.next_offset == SCAN_BUDGET
        second = await log.read(first.next_offset, "b")
        assert [e.payload for e in second] == [b"found"]


async def test_a_filter_matching_every_topic_of_a_segment_reads_it_whole(tmp_path: Path) -> None:
    """Segments (sealed and active) whose every topic matches are read without a topic
    check per record; the events, pages and bounds are those of the reference log."""
    rng = random.Random(5)
    reference = MemoryLog(LogOptions())
    async with lmdb_log(tmp_path / "log", segment_bytes=8 * 1024) as log:
        for number in range(40):
            # segments of only a/..., then segments mixing in b, then a/... again
            topics = ["a/1", "a/2"] if number < 15 or number >= 30 else ["a/1", "b"]
            batch = [
                NewEvent(rng.choice(topics), rng.randbytes(rng.randint(0, 60))) for _ in range(30)
            ]
            await log.append(batch)
            await reference.append(batch)
        assert len(segment_dirs(tmp_path / "log")) > 3
        for topic_filter in ["a/#", "#", "+/+", "a/1"]:
            want = [(e.offset, e.payload) for e in await read_all(reference, 0, topic_filter)]
            for start in (0, 451, 1000):
                got = [(e.offset, e.payload) for e in await read_all(log, start, topic_filter)]
                assert got == [w for w in want if w[0] >= start], topic_filter
            page = await log.read(0, topic_filter, limit=7, max_bytes=150)
            assert [e.offset for e in page] == [o for o, _ in want[: len(page)]]
            assert 1 <= len(page) <= 7 and page.next_offset > page[-1].offset


# -- misc --------------------------------------------------------------------------------------


async def test_bad_paths_and_errors_are_storage_errors(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("not a directory")
    with pytest.raises(StorageError, match="not a directory"):
        async with lmdb_log(file):
            pass
    with pytest.raises(StorageError):
        async with open_log("lmdb://"):
            pass


async def test_statistics_count_segments(tmp_path: Path) -> None:
    async with lmdb_log(tmp_path / "log", segment_bytes=4096) as log:
        await fill(log, 10)
        stats = log.statistics()
        assert stats.backend == "lmdb"
        assert stats.segments == len(segment_dirs(tmp_path / "log"))
        assert stats.next_offset == 200 and stats.bytes == (await log.state()).bytes


def test_child_processes_see_the_same_data(tmp_path: Path) -> None:
    """A log written by one process reads the same in another (no in-process state)."""
    path = tmp_path / "log"

    async def write() -> None:
        async with lmdb_log(path, segment_bytes=4096) as log:
            await fill(log, 12)

    trio.run(write)
    child = (
        "import trio\n"
        "from tidelog.storage import open_log\n"
        "async def main():\n"
        f"    async with open_log('lmdb://{path}') as log:\n"
        "        print((await log.state()).next_offset, len((await log.read(0, 't/1')).events))\n"
        "trio.run(main)\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", child], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert output.stdout.split() == ["240", "80"]


async def test_appends_begun_together_commit_one_at_a_time(tmp_path: Path) -> None:
    """The append lock is taken without a checkpoint when free: appends begun by many
    tasks at once still commit one at a time (each batch contiguous, no offset given
    twice, nothing lost)."""
    results: dict[int, list[int]] = {}

    async def append(log: EventLog, task: int) -> None:
        batch = [NewEvent(f"t/{task}", b"%d" % i) for i in range(3 + task % 4)]
        results[task] = [event.offset for event in await log.append(batch)]

    async with open_log(f"lmdb://{tmp_path / 'log'}") as log:
        async with trio.open_nursery() as nursery:
            for task in range(20):
                nursery.start_soon(append, log, task)
        stored = (await log.read(0, limit=1000)).events
    assert len(stored) == sum(3 + task % 4 for task in range(20))
    assert sorted(o for offsets in results.values() for o in offsets) == list(range(len(stored)))
    for task, offsets in results.items():
        assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))
        assert [stored[o].topic for o in offsets] == [f"t/{task}"] * len(offsets)


@pytest.mark.parametrize("fsync", ["never", "always"])
async def test_an_append_committed_on_the_trio_thread_still_lets_other_tasks_run(
    tmp_path: Path, fsync: str
) -> None:
    """Small commits are made on the trio thread (no hand-off to the writer thread)
    and the append lock takes no checkpoint when free: each append still yields once,
    so a loop of appends does not keep the other tasks (and I/O) waiting."""
    turns = 0

    async def other() -> None:
        nonlocal turns
        while True:
            turns += 1
            await trio.sleep(0)

    async with lmdb_log(tmp_path / "log", fsync=fsync) as log, trio.open_nursery() as nursery:
        nursery.start_soon(other)
        await trio.sleep(0)
        before = turns
        for i in range(20):
            await log.append(events("t", 1, start=i))
        assert turns - before >= 10
        nursery.cancel_scope.cancel()
