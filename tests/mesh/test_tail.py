"""The live tail a link source takes committed events from (tidelog.mesh.tail)."""

from __future__ import annotations

import trio

from tidelog.mesh.tail import LiveTail, held_bytes
from tidelog.storage.records import Event


def events(first: int, count: int, size: int = 1) -> list[Event]:
    return [
        Event(i, 0, "t/a", b"x" * size, 1, False, None, None) for i in range(first, first + count)
    ]


def cost(size: int = 1) -> int:
    """What one test event of ``size`` payload bytes counts against a bound."""
    return held_bytes(events(0, 1, size)[0])


def offsets(taken: list[Event] | None) -> list[int] | None:
    return None if taken is None else [e.offset for e in taken]


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
