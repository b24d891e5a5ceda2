"""Shared subscriptions and bounded memory under slow consumers."""

from __future__ import annotations

import trio
import trio.testing

import tidelog
from tests.storage.backends import BackendUnderTest
from tidelog import NewEvent


async def test_shared_subscription_gives_each_event_to_one_member(
    backend: BackendUnderTest,
) -> None:
    async with tidelog.open(backend.url) as broker:
        received: dict[str, list[int]] = {"m1": [], "m2": [], "m3": []}

        async def member(name: str, stop_after: int | None, task_status=trio.TASK_STATUS_IGNORED):  # type: ignore[no-untyped-def]
            async with broker.subscribe("$share/workers/jobs/+") as events:
                task_status.started()
                while True:
                    for event in await events.receive_batch(7):
                        received[name].append(int(event.payload))
                    if stop_after is not None and len(received[name]) >= stop_after:
                        return  # leaves the group mid-stream
                    await trio.sleep(0)

        total = 600
        async with trio.open_nursery() as nursery:
            await nursery.start(member, "m1", None)
            await nursery.start(member, "m2", 20)
            await nursery.start(member, "m3", None)
            for start in range(0, total, 50):
                await broker.publish_many(
                    [NewEvent(f"jobs/{i % 4}", b"%d" % i) for i in range(start, start + 50)]
                )
                await trio.testing.wait_all_tasks_blocked()  # the members took their share
            with trio.fail_after(10):
                while sum(len(v) for v in received.values()) < total:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        everything = sorted(o for offsets in received.values() for o in offsets)
        assert everything == list(range(total))  # each event exactly once, none lost
        assert len(received["m2"]) >= 20
        assert received["m1"] and received["m3"]


async def test_a_subscriber_that_never_reads_keeps_memory_bounded(
    backend: BackendUnderTest,
) -> None:
    total, batch = 1_000_000, 20_000
    if backend.name != "memory":
        total = 200_000  # the same bound on disk backends, at a CI-friendly size
    bound = 1000
    async with (
        tidelog.open(backend.url, feed_max_events=bound) as broker,
        broker.subscribe("load/#") as events,
    ):
        live_reader = broker.open_feed()
        live_reader.subscribe("load/0")
        for start in range(0, total, batch):
            await broker.publish_many(
                [NewEvent(f"load/{i % 10}", b"%07d" % i) for i in range(start, start + batch)]
            )
            assert events.feed.pending <= bound  # never more than the bound in RAM
            live_reader.receive_nowait(batch)
        assert not events.feed.live  # it fell behind ...
        assert events.feed.catch_ups == 1
        count, expected = 0, 0
        with trio.fail_after(120):
            while count < total:
                for event in await events.receive_batch(10_000):
                    assert int(event.payload) == expected  # ... and gets every event in order
                    expected += 1
                    count += 1
        assert events.feed.live  # and rejoined live delivery
        await broker.publish("load/x", b"live")
        assert [e.payload for e in await events.receive_batch()] == [b"live"]


async def test_catch_up_that_read_ahead_of_fan_out_gets_no_duplicates(
    backend: BackendUnderTest,
) -> None:
    """A feed catching up may read events that are committed but not yet fanned out
    (the writer commits in a worker thread, then dispatches); their late dispatch
    must not deliver them again."""
    from tidelog.engine.fanout import FanOut
    from tidelog.storage import open_log

    async with open_log(backend.url) as log:
        fanout = FanOut(log, 0)
        fanout.dispatch(await log.append([NewEvent("a", b"0")]))
        feed = fanout.open_feed(start=0)  # starts behind: catching up from offset 0
        feed.subscribe("a", since=0)
        assert not feed.live
        first = await log.append([NewEvent("a", b"1")])
        fanout.dispatch(first)  # fanned out while the feed is behind: ignored
        second = await log.append([NewEvent("a", b"2"), NewEvent("b", b"x")])  # not yet
        got = await feed.receive()
        assert [e.payload for e, _ in got] == [b"0", b"1", b"2"]
        assert feed.live  # its fence (4) is past what was fanned out (2)
        fanout.dispatch(second)  # the writer's dispatch arrives late
        assert feed.receive_nowait() == []
        third = await log.append([NewEvent("a", b"3")])
        fanout.dispatch(third)
        assert [e.payload for e, _ in feed.receive_nowait()] == [b"3"]


async def test_handled_end_is_the_first_offset_not_taken(backend: BackendUnderTest) -> None:
    async with tidelog.open(backend.url) as broker:
        await broker.publish_many([NewEvent(f"t/{i % 2}", b"x") for i in range(6)])
        feed = broker.open_feed(start=0)
        feed.subscribe("t/1", since=0)
        assert feed.handled_end == 0
        taken = await feed.receive(2)  # catch-up from the log: offsets 1 and 3
        assert [e.offset for e, _ in taken] == [1, 3]
        assert feed.handled_end >= 4
        taken = await feed.receive()
        assert [e.offset for e, _ in taken] == [5]
        assert feed.live and feed.handled_end == 6
        await broker.publish_many([NewEvent("t/1", b"y"), NewEvent("t/0", b"z")])
        assert feed.handled_end == 6  # offset 6 is buffered, not taken
        assert [e.offset for e, _ in feed.receive_nowait()] == [6]
        assert feed.handled_end == 8  # 7 does not match
        feed.close()


async def test_requeued_deliveries_merge_in_log_order(backend: BackendUnderTest) -> None:
    """Two shared-group members leave: the first hands back 0-4, the second 5-9 (a
    later range, requeued after): the buffer stays in log order, so the position a
    leave hands back from (handled_end) is 0, not 5 (which would lose 0-4)."""
    async with tidelog.open(backend.url) as broker:
        feed = broker.open_feed()
        feed.subscribe("t")
        await broker.publish_many([NewEvent("t", b"%d" % i) for i in range(12)])
        taken = feed.receive_nowait(10)  # two members took 0-4 and 5-9; 10, 11 buffered
        feed.requeue(taken[:5])
        feed.requeue(taken[5:])
        assert feed.handled_end == 0
        assert [e.offset for e, _ in feed.receive_nowait()] == list(range(12))
        feed.close()
