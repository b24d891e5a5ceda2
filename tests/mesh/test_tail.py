"""The live tail a link source takes committed events from (tidelog.mesh.tail)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tidelog.mesh.tail import EVENT_BYTES, SPARSE_AFTER, LiveTail, held_bytes
from tidelog.storage import records
from tidelog.storage.records import Event


def events(first: int, count: int, size: int = 1) -> list[Event]:
    return [
        Event(i, 0, "t/a", b"x" * size, 1, False, None, None) for i in range(first, first + count)
    ]


def cost(size: int = 1) -> int:
    """What one test event of ``size`` payload bytes counts against a bound."""
    return held_bytes(events(0, 1, size)[0])


def offsets(taken: tuple[list[Event], int] | None) -> list[int] | None:
    """The offsets of what :meth:`LiveTail.take` handed out; checks that the offset it
    says the source reads next follows the last of them (an unfiltered tail)."""
    if taken is None:
        return None
    out, next_offset = taken
    assert next_offset == out[-1].offset + 1
    return [e.offset for e in out]


def test_a_source_at_the_head_takes_each_commit_in_order_up_to_its_limits() -> None:
    tail = LiveTail(100, 100_000)
    tail.committed(events(10, 3))
    tail.committed(events(13, 4))
    assert offsets(tail.take(10, 5, 100_000)) == [10, 11, 12, 13, 14]
    assert tail._bytes == 2 * cost()
    assert offsets(tail.take(15, 5, 100_000)) == [15, 16]
    assert tail._bytes == 0
    assert tail.take(17, 5, 100_000) is None  # nothing committed since: read (or wait)


def test_what_lies_below_the_position_is_dropped_and_a_gap_means_the_log() -> None:
    tail = LiveTail(100, 100_000)
    tail.committed(events(10, 5))
    assert offsets(tail.take(12, 10, 100_000)) == [12, 13, 14]  # 10-11 came from the log
    tail.committed(events(15, 2))
    assert tail.take(14, 10, 100_000) is None  # 14 is not held: read the log
    assert offsets(tail.take(15, 10, 100_000)) == [15, 16]
    tail.committed(events(18, 1))  # a gap of one offset: start again from there
    assert tail.take(17, 10, 100_000) is None
    assert offsets(tail.take(18, 10, 100_000)) == [18]


def test_a_batch_stops_at_max_bytes_but_holds_at_least_one_event() -> None:
    tail = LiveTail(100, 10_000)
    tail.committed(events(0, 4, size=300))
    assert offsets(tail.take(0, 10, 2 * cost(300))) == [0, 1]
    assert offsets(tail.take(2, 10, 100)) == [2]
    assert tail._bytes == cost(300)
    assert offsets(tail.take(3, 10, 100)) == [3]
    assert tail._bytes == 0


def test_a_full_tail_empties_so_a_source_behind_reads_the_log() -> None:
    tail = LiveTail(5, 100_000)
    tail.committed(events(0, 4))
    tail.committed(events(4, 3))  # 7 > 5: what was held is dropped, the new commit kept
    assert tail.take(0, 10, 100_000) is None
    assert offsets(tail.take(4, 10, 100_000)) == [4, 5, 6]
    tail.committed(events(7, 6))  # more than the tail holds at all: nothing kept
    assert len(tail) == 0
    assert tail.take(7, 10, 100_000) is None
    tail = LiveTail(100, 3 * cost(200) - 1)  # counts topics and a cost per event too
    tail.committed(events(0, 2, size=200))
    tail.committed(events(2, 1, size=200))  # one byte too many
    assert tail.take(0, 10, 100_000) is None
    assert offsets(tail.take(2, 10, 100_000)) == [2]


def test_commits_that_do_not_follow_on_replace_what_was_held() -> None:
    tail = LiveTail(100, 100_000)
    tail.committed(events(0, 2))
    tail.committed(events(5, 2))  # not contiguous (cannot happen on one log): start again
    assert tail.take(0, 10, 100_000) is None
    assert offsets(tail.take(5, 10, 100_000)) == [5, 6]


def test_a_wait_ends_at_a_commit_after_arm_or_at_its_timeout() -> None:
    async def main() -> None:
        tail = LiveTail(100, 1_000)
        tail.arm()
        tail.committed(events(0, 1))  # between a look at the log and the wait
        with trio.fail_after(5):
            await tail.wait(60)
        tail.arm()
        with trio.move_on_after(5) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(tail.wait, 60)
                await trio.sleep(0)
                tail.committed(events(1, 1))
        assert not scope.cancelled_caught
        tail.arm()
        await tail.wait(0)  # nothing committed: returns at the timeout

    trio.run(main)


def mixed(first: int, topics: str) -> list[Event]:
    """One event per letter of ``topics``: ``a`` on t/a, ``b`` on t/b, from ``first``."""
    return [Event(first + i, 0, f"t/{t}", b"x", 1, False, None, None) for i, t in enumerate(topics)]


def test_a_filtered_tail_keeps_what_it_accepts_and_covers_the_offsets_between() -> None:
    tail = LiveTail(100, 100_000, accept=lambda topic: topic == "t/a")
    tail.committed(mixed(10, "abba"))
    tail.committed(mixed(14, "bb"))  # nothing kept: the source is not woken for it
    taken = tail.take(10, 10, 100_000)
    assert taken is not None
    assert [(e.offset, e.topic) for e in taken[0]] == [(10, "t/a"), (13, "t/a")]
    assert taken[1] == 16  # the source reads on after the commit it saw nothing of
    assert tail.take(16, 10, 100_000) is None  # the head: read the log (or wait)
    tail.committed(mixed(16, "ba"))
    assert offsets(tail.take(17, 1, 100_000)) == [17]
    tail.committed(mixed(18, "bbb"))
    assert tail.take(18, 10, 100_000) == ([], 21)  # covered, none kept: move on
    assert tail.take(15, 10, 100_000) is None  # below what it covers: the log


def test_a_limit_on_a_filtered_tail_counts_kept_events_and_resumes_after_them() -> None:
    tail = LiveTail(100, 100_000, accept=lambda topic: topic == "t/a")
    tail.committed(mixed(0, "ababab"))
    first = tail.take(0, 2, 100_000)
    assert first is not None and [e.offset for e in first[0]] == [0, 2] and first[1] == 3
    rest = tail.take(3, 2, 100_000)
    assert rest is not None and [e.offset for e in rest[0]] == [4] and rest[1] == 6


def test_a_tail_that_keeps_little_of_what_the_node_commits_is_sparse() -> None:
    keep_a = LiveTail(100, 100_000, accept=lambda topic: topic == "t/a")
    keep_most = LiveTail(100, 100_000, accept=lambda topic: topic != "t/c")
    offset = 0
    while offset < SPARSE_AFTER:
        for tail in (keep_a, keep_most):
            tail.committed(mixed(offset, "abcabcabca"))
            tail.take(offset, 100, 100_000)
        offset += 10
        if offset < SPARSE_AFTER:
            assert not keep_a.sparse  # not before it has seen enough
    assert keep_a.sparse  # 40% kept
    assert not keep_most.sparse  # 70% kept
    assert not LiveTail(100, 100_000).sparse  # an unfiltered tail never is


def test_a_wait_for_the_next_commit_ends_at_one_a_filtered_tail_keeps_nothing_of() -> None:
    """What a source coalescing two commits waits for (``wait_commit``): the next commit
    whatever the tail keeps of it, where :meth:`LiveTail.wait` would go on waiting."""

    async def main() -> None:
        tail = LiveTail(100, 100_000, accept=lambda topic: topic == "t/a")
        tail.committed(mixed(0, "a"))
        with trio.move_on_after(5) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(tail.wait_commit, 60)
                await trio.testing.wait_all_tasks_blocked()  # it waits
                tail.committed(mixed(1, "bb"))  # nothing kept
        assert not scope.cancelled_caught
        assert tail.take(0, 10, 100_000) == ([mixed(0, "a")[0]], 3)
        await tail.wait_commit(0)  # no commit: returns at the timeout
        tail.committed(mixed(3, "a"))  # no waiter now: nothing is set for a later one
        with trio.move_on_after(0.05) as scope:
            await tail.wait_commit(60)
        assert scope.cancelled_caught

    trio.run(main)


def test_the_bytes_a_commit_holds_are_counted_the_same_in_c_and_in_python(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``records.held_bytes`` (the extension's, when it is built) and the Python sum
    agree, a topic's length in characters (not UTF-8 bytes) included; anything but a
    list of stored events is counted in Python."""
    commit = [
        Event(0, 0, "t/é/ü", b"x" * 300, 1, False, None, None),
        Event(1, 0, "t", b"", 0, True, None, None),
        *events(2, 50, size=7),
    ]
    compiled = records.held_bytes
    if compiled is None:
        pytest.skip("the extension (with held_bytes) is not built, or TIDELOG_PURE_PYTHON")
    assert compiled(commit, EVENT_BYTES) == sum(held_bytes(e) for e in commit)
    assert compiled([*commit, "not an event"], EVENT_BYTES) is None
    tail = LiveTail(100, 100_000)
    tail.committed(commit)
    counted = tail._bytes
    monkeypatch.setattr(records, "held_bytes", None)
    python = LiveTail(100, 100_000)
    python.committed(commit)
    assert counted == python._bytes == sum(held_bytes(e) for e in commit)
