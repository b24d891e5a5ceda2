"""SQLite backend specifics: the lock, damaged files, reopen, fsync policies, read paths.

The shared semantics are checked by test_conformance.py; this file covers what
only a file-backed SQLite log has.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import hypothesis
import hypothesis.strategies as st
import pytest
import trio

from tests.storage.backends import ManualClock
from tidelog.errors import (
    CorruptLogError,
    InvalidStorageURLError,
    LogLockedError,
    StorageError,
    StorageFullError,
)
from tidelog.storage import EventLog, NewEvent, open_log, sqlite_log
from tidelog.storage.sqlite_log import SqliteLog, translate_error

ROOT = Path(__file__).resolve().parents[2]


def url(path: Path) -> str:
    return f"sqlite://{path}"


async def read_all(log: EventLog, topic_filter: str | None = None, start: int = 0) -> list:
    out = []
    end = (await log.state()).next_offset
    while start < end:
        result = await log.read(start, topic_filter, limit=700)
        assert result.next_offset > start
        out.extend(result.events)
        start = result.next_offset
    return out


async def expect_corrupt(path: Path, topic_filter: str | None = None) -> None:
    """Opening or reading everything must raise CorruptLogError (not an ExceptionGroup)."""
    with pytest.raises(CorruptLogError):
        async with open_log(url(path)) as log:
            await read_all(log, topic_filter)


async def fill(path: Path, batches: int = 20, size: int = 100, **options: object) -> None:
    async with open_log(url(path), **options) as log:
        for i in range(batches):
            await log.append(
                [NewEvent(f"t/{i % 4}", b"%06d" % (i * size + j)) for j in range(size)]
            )


# -- the lock ---------------------------------------------------------------------


async def test_second_open_is_refused_while_the_first_is_open(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    async with open_log(url(path)) as log:
        await log.append([NewEvent("a", b"1")])
        with pytest.raises(LogLockedError, match="another process"):
            async with open_log(url(path)):
                pass
        assert (await log.state()).next_offset == 1  # the refused open changed nothing
    async with open_log(url(path)) as log:  # closing released the lock
        assert (await log.state()).next_offset == 1


async def test_another_process_is_locked_out_until_it_dies(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import sys, trio
                from tidelog.storage import open_log
                async def main():
                    async with open_log({url(path)!r}):
                        print("open", flush=True)
                        await trio.sleep(60)
                trio.run(main)
            """),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "open"
        with pytest.raises(LogLockedError):
            async with open_log(url(path)):
                pass
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    async with open_log(url(path)) as log:  # a killed holder leaves no stale lock
        assert (await log.state()).next_offset == 0


# -- damaged and foreign files ------------------------------------------------------


async def test_a_file_that_is_not_a_database_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    path.write_bytes(random.Random(1).randbytes(64 * 1024))
    with pytest.raises(CorruptLogError, match="not a database"):
        async with open_log(url(path)):
            pass


async def test_damaged_pages_are_corrupt_not_silently_skipped(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    await fill(path, batches=40)
    size = path.stat().st_size
    assert not Path(f"{path}-wal").exists()  # closing checkpointed everything
    with path.open("r+b") as file:  # scribble over pages in the middle of the events table
        file.seek(size // 2 // 4096 * 4096)
        file.write(b"\xff" * 3 * 4096)
    await expect_corrupt(path)
    await expect_corrupt(path, "t/1")


async def test_a_truncated_file_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    await fill(path, batches=40)
    os.truncate(path, path.stat().st_size // 2)
    await expect_corrupt(path)


async def test_a_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    conn.close()
    with pytest.raises(InvalidStorageURLError, match="not a tidelog log"):
        async with open_log(url(path)):
            pass


async def test_a_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    await fill(path, batches=1)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    conn.close()
    with pytest.raises(StorageError, match="schema version 99"):
        async with open_log(url(path)):
            pass


async def test_log_state_disagreeing_with_the_events_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    await fill(path, batches=2)
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM events WHERE offset = (SELECT max(offset) FROM events)")
    conn.close()
    with pytest.raises(CorruptLogError, match=r"log_state says offsets 0\.\.199"):
        async with open_log(url(path)):
            pass


async def test_a_missing_offset_is_reported_by_reads(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    await fill(path, batches=2)
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM events WHERE offset = 150")
    conn.close()
    async with open_log(url(path)) as log:
        with pytest.raises(CorruptLogError, match="offset 150 is missing"):
            await read_all(log)


@pytest.mark.parametrize(
    ("make_url", "message"),
    [
        (lambda tmp: f"sqlite://{tmp}/missing/dir/log.db", "does not exist"),
        (lambda tmp: f"sqlite://{tmp}", "is a directory"),
        (lambda tmp: "sqlite://:memory:", "memory://"),
    ],
)
async def test_unusable_paths_are_clear_errors(tmp_path: Path, make_url, message: str) -> None:
    with pytest.raises(InvalidStorageURLError, match=message):
        async with open_log(make_url(tmp_path)):
            pass


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
async def test_an_unwritable_directory_is_a_clear_error(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(InvalidStorageURLError, match="not readable and writable"):
            async with open_log(url(tmp_path / "log.db")):
                pass
    finally:
        tmp_path.chmod(0o700)


def test_driver_errors_map_to_tidelog_errors() -> None:
    cases = [
        (11, CorruptLogError),  # SQLITE_CORRUPT
        (26, CorruptLogError),  # SQLITE_NOTADB
        (13, StorageFullError),  # SQLITE_FULL
        (10 | (12 << 8), StorageError),  # SQLITE_IOERR_WRITE: extended codes use the low byte
    ]
    for code, expected in cases:
        exc = sqlite3.OperationalError("boom")
        exc.sqlite_errorcode = code  # type: ignore[attr-defined]
        error = translate_error(exc, "/x.db")
        assert type(error) is expected and "/x.db" in str(error)


async def test_a_full_disk_refuses_the_batch_and_the_log_goes_on(tmp_path: Path) -> None:
    async with open_log(url(tmp_path / "log.db")) as log:
        assert isinstance(log, SqliteLog)
        await log.append([NewEvent("a", b"x" * 1000) for _ in range(10)])
        conn = log._store._connection()  # nothing else runs: safe from the test's thread
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages + 8}")  # SQLite's SQLITE_FULL on demand
        with pytest.raises(StorageFullError):
            await log.append([NewEvent("b", b"y" * 1000) for _ in range(100)])
        assert (await log.state()).next_offset == 10
        assert [t.topic for t in await log.topics()] == ["a"]
        more = await log.append([NewEvent("c", b"z")])  # a small batch still fits
        assert more[0].offset == 10
        conn.execute("PRAGMA max_page_count = 1073741823")
        assert [e.offset for e in await read_all(log)] == list(range(11))


# -- reopen and durability ------------------------------------------------------------


async def test_reopen_after_many_appends(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "log.db"
    async with open_log(url(path), clock=clock) as log:
        for i in range(300):
            await log.append(
                [
                    NewEvent(f"dev/{(i * 7 + j) % 50}/temp", b"%d" % (i * 100 + j))
                    for j in range(100)
                ]
            )
            clock.advance(3)
        await log.commit_cursor("c", 12_345, {"filter": "dev/+/temp"})
        state, topics = await log.state(), await log.topics()
    clock.advance(-1_000_000)  # and the clock steps back across the restart
    async with open_log(url(path), clock=clock) as log:
        assert await log.state() == state
        assert state.next_offset == 30_000 and state.event_count == 30_000
        assert await log.topics() == topics and sum(t.count for t in topics) == 30_000
        events = await read_all(log)
        assert [e.offset for e in events] == list(range(30_000))
        assert [e.payload for e in events] == [b"%d" % n for n in range(30_000)]
        assert [e.offset for e in await read_all(log, "dev/7/temp")] == [
            e.offset for e in events if e.topic == "dev/7/temp"
        ]
        assert await log.offset_for_time(events[12_345].timestamp) == 12_300
        assert (await log.load_cursor("c")).position == 12_345  # type: ignore[union-attr]
        more = await log.append([NewEvent("dev/0/temp", b"after")])
        assert more[0].offset == 30_000
        assert more[0].timestamp == state.last_timestamp  # never before the last one


async def test_the_timestamp_floor_survives_retention_of_everything(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "log.db"
    async with open_log(url(path), clock=clock) as log:
        first = (await log.append([NewEvent("a", b"1")]))[0]
        clock.advance(3_600_000)
        result = await log.apply_retention(max_age_ms=1000)
        assert result.removed_events == 1
        state = await log.state()
        assert (state.first_offset, state.next_offset, state.last_timestamp) == (1, 1, None)
    clock.now = first.timestamp - 7_200_000  # the clock is now well before the first event
    async with open_log(url(path), clock=clock) as log:
        assert (await log.state()).first_offset == 1
        stored = await log.append([NewEvent("a", b"2")])
        assert (stored[0].offset, stored[0].timestamp) == (1, first.timestamp)


async def test_large_retention_runs_in_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_log, "RETENTION_CHUNK", 70)
    async with open_log(url(tmp_path / "log.db")) as log:
        for i in range(10):
            await log.append([NewEvent(f"t/{i}", b"x" * 10) for _ in range(100)])
        before = await log.state()
        result = await log.apply_retention(max_bytes=before.bytes // 10)
        state = await log.state()
        assert result.removed_events == state.first_offset == 900
        assert state.bytes == before.bytes - result.removed_bytes
        assert [t.topic for t in await log.topics()] == ["t/9"]
        assert await log.topics("t/+") == await log.topics()


@pytest.mark.parametrize(
    ("policy", "synchronous", "timer"),
    [("always", 2, False), ("interval:20", 1, True), ("never", 1, False)],
)
async def test_fsync_policies(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    policy: str,
    synchronous: int,
    timer: bool,
) -> None:
    checkpoints: list[int] = []
    original = sqlite_log._Store.checkpoint

    def counting(self: sqlite_log._Store) -> None:
        checkpoints.append(1)
        original(self)

    monkeypatch.setattr(sqlite_log._Store, "checkpoint", counting)
    path = tmp_path / "log.db"
    async with open_log(f"{url(path)}?fsync={policy}") as log:
        assert isinstance(log, SqliteLog)
        conn = log._store._connection()
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == synchronous
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        await log.append([NewEvent("a", b"1")])
        await trio.sleep(0.1)
        assert bool(checkpoints) is timer
        idle = len(checkpoints)
        await trio.sleep(0.1)
        assert len(checkpoints) == idle  # nothing written: nothing to sync
        await log.commit_cursor("c", 1)
    async with open_log(url(path)) as log:
        assert (await log.state()).next_offset == 1
        assert (await log.load_cursor("c")) is not None


@pytest.mark.slow
def test_kill_9_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """A child appends and prints each acknowledged offset; SIGKILL it at random moments."""
    path = tmp_path / "log.db"
    child_code = textwrap.dedent(f"""
        import random, trio
        from tidelog.storage import NewEvent, open_log
        async def main():
            async with open_log({url(path)!r}) as log:
                offset = (await log.state()).next_offset
                while True:
                    size = random.randint(1, 300)
                    numbers = range(offset, offset + size)
                    batch = [NewEvent(f"t/{{n % 5}}", b"%d" % n) for n in numbers]
                    stored = await log.append(batch)
                    assert stored[0].offset == offset
                    offset += size
                    print(offset - 1, flush=True)
        trio.run(main)
    """)
    rng = random.Random()
    acknowledged = -1
    for _ in range(6):
        child = subprocess.Popen(
            [sys.executable, "-c", child_code],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        for _ in range(rng.randint(1, 60)):
            line = child.stdout.readline()
            assert line, "the child died on its own"
            acknowledged = int(line)
        child.send_signal(signal.SIGKILL)
        child.wait()

        async def check(acknowledged: int) -> None:
            async with open_log(url(path)) as log:
                events = await read_all(log)
                assert [e.offset for e in events] == list(range(len(events)))
                assert [e.payload for e in events] == [b"%d" % e.offset for e in events]
                assert len(events) > acknowledged

        trio.run(check, acknowledged)


# -- read paths -----------------------------------------------------------------------


async def test_filters_over_many_topics_take_the_bounded_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_log, "MAX_SCAN_PER_READ", 50)
    async with open_log(url(tmp_path / "log.db")) as log:
        expected: dict[str, list[int]] = {"rare": [], "common": [], "rare/5": []}
        for i in range(20):
            batch = [NewEvent("common/x", b"c") for _ in range(50)]
            batch[i] = NewEvent(f"rare/{i * 5 % 80}", b"r")  # 20 of 80 rare topics appear
            stored = await log.append(batch)
            expected["rare"].append(stored[i].offset)
            if stored[i].topic == "rare/5":
                expected["rare/5"].append(stored[i].offset)
            expected["common"].extend(e.offset for e in stored if e.topic == "common/x")
        for n in range(80):  # now 80 rare topics: "rare/+" matches more than the merge bound
            stored = await log.append([NewEvent(f"rare/{n}", b"r")])
            expected["rare"].append(stored[0].offset)
            if n == 5:
                expected["rare/5"].append(stored[0].offset)
        first = await log.read(0, "rare/+")  # scan path: stops after 50 offsets
        assert first.next_offset == 50
        assert [e.offset for e in first] == [o for o in expected["rare"] if o < 50]
        assert [e.offset for e in await read_all(log, "rare/+")] == expected["rare"]
        assert [e.offset for e in await read_all(log, "+/x")] == expected["common"]
        # index path: one topic, however far apart its events
        sparse = await log.read(0, "rare/5")
        assert [e.offset for e in sparse] == expected["rare/5"] == [51, 867, 1005]
        assert sparse.next_offset == 1080


TOPICS = ["a", "a/b", "a/b/c", "a/c", "$SYS/x", "b/b", "/a"]
FILTERS = [None, "a", "a/#", "a/+", "+/b", "#", "+", "$SYS/#", "+/+/+", "/+", "b/#", "zz"]


BATCHES = st.lists(
    st.tuples(st.sampled_from(TOPICS), st.integers(0, 300)), min_size=1, max_size=30
).map(lambda batch: ("append", batch))
READS = st.tuples(
    st.integers(0, 400),
    st.sampled_from(FILTERS),
    st.integers(1, 40),
    st.one_of(st.none(), st.integers(1, 3000)),
    st.one_of(st.none(), st.integers(0, 400)),
).map(lambda read: ("read", read))
RETENTION = st.integers(0, 20_000).map(lambda max_bytes: ("retain", max_bytes))


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(steps=st.lists(st.one_of(BATCHES, BATCHES, READS, READS, READS, RETENTION)))
def test_reads_agree_with_the_memory_backend(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, Any]]
) -> None:
    """Appends, reads (every path: index merge, IN / NOT IN scans), retention, in any order."""
    path = tmp_path_factory.mktemp("agree") / "log.db"

    async def main() -> None:
        clock = ManualClock()
        async with (
            open_log(url(path), clock=clock) as sqlite,
            open_log("memory://", clock=clock) as memory,
        ):
            for kind, step in steps:
                if kind == "append":
                    clock.advance(len(step) % 3 * 5)
                    events = [NewEvent(topic, b"p" * size) for topic, size in step]
                    assert await sqlite.append(events) == await memory.append(events)
                elif kind == "retain":
                    want_retained = await memory.apply_retention(max_bytes=step)
                    assert await sqlite.apply_retention(max_bytes=step) == want_retained
                else:
                    start, topic_filter, limit, max_bytes, stop = step
                    state = await memory.state()
                    start = min(start, state.next_offset)
                    got = await sqlite.read(
                        start, topic_filter, limit=limit, max_bytes=max_bytes, end=stop
                    )
                    want = await memory.read(
                        start, topic_filter, limit=limit, max_bytes=max_bytes, end=stop
                    )
                    assert got == want
            assert await sqlite.state() == await memory.state()
            for topic_filter in FILTERS:
                assert await sqlite.topics(topic_filter) == await memory.topics(topic_filter)
            state = await memory.state()
            for timestamp in (0, state.first_timestamp, state.last_timestamp, 2**62):
                if timestamp is not None:
                    want_offset = await memory.offset_for_time(timestamp)
                    assert await sqlite.offset_for_time(timestamp) == want_offset

    trio.run(main)


async def test_a_scan_filter_follows_new_topics(tmp_path: Path) -> None:
    """A cached "every topic matches" scan must not let a later, unmatched topic through."""
    async with open_log(url(tmp_path / "log.db")) as log:
        await log.append([NewEvent("a", b"1"), NewEvent("b", b"2")])
        assert [e.topic for e in await log.read(0, "#")] == ["a", "b"]
        await log.append([NewEvent("$SYS/load", b"3")])  # a new topic "#" does not match
        assert [e.topic for e in await log.read(0, "#")] == ["a", "b"]
        await log.append([NewEvent("c", b"4")])
        assert [e.topic for e in await log.read(0, "#")] == ["a", "b", "c"]
        assert [e.topic for e in await log.read(0, "+")] == ["a", "b", "c"]
        await log.append([NewEvent(f"$SYS/{n}", b"5") for n in range(10)])
        assert [e.topic for e in await log.read(0, "#")] == ["a", "b", "c"]  # NOT IN path
