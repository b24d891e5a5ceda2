"""The broker's public behaviour on every storage backend."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import tidelog
from tests.storage.backends import BackendUnderTest, ManualClock
from tidelog import NewEvent, Properties
from tidelog.engine import CursorExistsError, CursorNotFoundError
from tidelog.errors import InvalidPositionError, InvalidTopicError, OffsetOutOfRangeError


async def test_publish_returns_stored_events(backend: BackendUnderTest) -> None:
    async with tidelog.open(backend.url) as broker:
        one = await broker.publish("a/b", b"1", qos=1, retain=False)
        assert (one.offset, one.topic, one.payload, one.qos) == (0, "a/b", b"1", 1)
        many = await broker.publish_many([NewEvent("c", b"2"), NewEvent("d", b"3")])
        assert [e.offset for e in many] == [1, 2]
        assert (await broker.log.read(0)).events == [one, *many]
        assert broker.end_offset == 3


async def test_concurrent_publishers_share_commits(backend: BackendUnderTest) -> None:
    async with tidelog.open(backend.url) as broker:
        results: dict[int, list[int]] = {}

        async def publisher(n: int) -> None:
            offsets = []
            for i in range(20):
                offsets.append((await broker.publish(f"p/{n}", b"%d" % i)).offset)
            results[n] = offsets

        async with trio.open_nursery() as nursery:
            for n in range(20):
                nursery.start_soon(publisher, n)
        all_offsets = sorted(o for offsets in results.values() for o in offsets)
        assert all_offsets == list(range(400))
        for offsets in results.values():
            assert offsets == sorted(offsets)  # each publisher's events in its order
        stats = broker.statistics()
        assert stats.published == 400
        assert stats.writer.batches < 400  # commits were shared
        assert stats.writer.max_batch_events > 1


async def test_a_bad_submission_does_not_fail_its_batch_mates(backend: BackendUnderTest) -> None:
    async with tidelog.open(backend.url, max_record_bytes=1024) as broker:
        outcomes: dict[str, object] = {}

        def remember(name: str):  # type: ignore[no-untyped-def]
            def callback(result: object) -> None:
                outcomes[name] = result

            return callback

        broker.publish_nowait([NewEvent("ok/1", b"x")], remember("first"))
        broker.publish_nowait([NewEvent("big", b"x" * 4096)], remember("big"))
        broker.publish_nowait([NewEvent("ok/2", b"y")], remember("second"))
        await broker._writer.wait_idle()
        assert isinstance(outcomes["big"], tidelog.errors.RecordTooLargeError)
        assert [e.topic for e in outcomes["first"]] == ["ok/1"]  # type: ignore[attr-defined]
        assert [e.topic for e in outcomes["second"]] == ["ok/2"]  # type: ignore[attr-defined]
        assert [e.topic for e in (await broker.log.read(0)).events] == ["ok/1", "ok/2"]


async def test_invalid_names_and_filters_are_refused(backend: BackendUnderTest) -> None:
    async with tidelog.open(backend.url) as broker:
        for bad in ["", "a/+", "a/#", "a\x00b"]:
            with pytest.raises(InvalidTopicError):
                await broker.publish(bad, b"x")
        for bad_filter in ["a/#/b", "a+", "#/", "$share/g", "$share//a", "$share/g+/a"]:
            with pytest.raises(InvalidTopicError):
                async with broker.subscribe(bad_filter):
                    pass
        with pytest.raises(InvalidPositionError):
            async with broker.subscribe("a", start="yesterday"):
                pass
        with pytest.raises(ValueError):
            await broker.publish("a", b"x", qos=3)
        assert broker.end_offset == 0


async def test_a_batch_of_known_topics_is_still_checked_event_by_event(
    backend: BackendUnderTest,
) -> None:
    """The usual batch (topics seen before, QoS 0-2) is checked in one pass; one bad
    event among them still refuses the batch, whatever makes it bad."""
    async with tidelog.open(backend.url) as broker:
        await broker.publish_many([NewEvent("k", b"1"), NewEvent("k/2", b"2", qos=2)])
        for bad, error in (
            (NewEvent("k", b"x", qos=3), ValueError),
            (NewEvent("k", b"x", qos=[1]), ValueError),  # type: ignore[arg-type]
            (NewEvent("k/#", b"x"), InvalidTopicError),
            (NewEvent(["k"], b"x"), Exception),  # type: ignore[arg-type]
        ):
            with pytest.raises(error):
                await broker.publish_many([NewEvent("k", b"x"), bad, NewEvent("k/2", b"x")])
        assert broker.end_offset == 2


async def test_batches_nobody_subscribes_to_move_the_fan_out_and_keep_retained(
    backend: BackendUnderTest,
) -> None:
    """Without any subscription a batch is not looked at per event by the fan-out, and
    a retained event is kept only when one is in the batch."""
    async with tidelog.open(backend.url) as broker:
        await broker.publish_many([NewEvent("r/a", b"1"), NewEvent("r/b", b"2", retain=True)])
        await broker.publish_many([NewEvent("r/a", b"3"), NewEvent("r/c", b"4")])
        assert broker.end_offset == 4
        feed = broker.open_feed()
        feed.subscribe("r/#", options="x")
        stored = await broker.publish_many([NewEvent("r/a", b"5")])
        assert [e.offset for e, _ in await feed.receive()] == [stored[0].offset] == [4]
        assert [(e.topic, e.offset) for e in broker.retained.matching("r/#")] == [("r/b", 1)]


async def test_live_subscription_with_overlapping_filters(backend: BackendUnderTest) -> None:
    async with tidelog.open(backend.url) as broker:
        feed = broker.open_feed()
        feed.subscribe("s/#", options="all")
        feed.subscribe("s/+/t", options="some")
        other = broker.open_feed()
        other.subscribe("x")
        await broker.publish_many([NewEvent("s/1/t", b"1"), NewEvent("s/2", b"2")])
        deliveries = await feed.receive()
        assert [(e.topic, sorted(s.options for s in subs)) for e, subs in deliveries] == [
            ("s/1/t", ["all", "some"]),  # one delivery carrying both subscriptions
            ("s/2", ["all"]),
        ]
        assert other.receive_nowait() == []
        feed.unsubscribe("s/#")
        await broker.publish("s/3", b"3")
        await broker.publish("s/3/t", b"4")
        assert [e.payload for e, _ in await feed.receive()] == [b"4"]


async def test_subscribe_from_the_past_then_live(backend: BackendUnderTest) -> None:
    async with tidelog.open(backend.url, feed_max_events=5) as broker:
        for i in range(50):
            await broker.publish(f"h/{i % 2}", b"%d" % i)
        async with broker.subscribe("h/0", start="earliest") as events:
            got = [int(e.payload) for e in await events.receive_batch(10)]
            await broker.publish_many([NewEvent("h/0", b"%d" % i) for i in range(50, 80)])
            with trio.fail_after(5):
                async for event in events:
                    got.append(int(event.payload))
                    if len(got) == 40:
                        break
        assert got == list(range(0, 50, 2)) + list(range(50, 65))


async def test_replay_between_offsets_and_times(
    backend: BackendUnderTest, clock: ManualClock
) -> None:
    async with tidelog.open(backend.url, clock=clock) as broker:
        t0 = clock.now
        for minute in range(10):
            await broker.publish_many([NewEvent(f"dev/{d}", b"%d" % minute) for d in range(5)])
            clock.advance(60_000)
        window = [
            (e.offset, e.payload)
            async for e in broker.replay(
                "dev/2", start=f"time:{t0 + 3 * 60_000}", end=f"time:{t0 + 5 * 60_000}"
            )
        ]
        assert window == [(17, b"3"), (22, b"4")]
        by_offset = [e.offset async for e in broker.replay(None, start="offset:45", end=48)]
        assert by_offset == [45, 46, 47]
        everything = [e async for e in broker.replay("#", start="earliest")]
        assert len(everything) == 50


async def test_retained_messages(backend: BackendUnderTest) -> None:
    async with tidelog.open(backend.url) as broker:
        await broker.publish("r/a", b"one", retain=True)
        await broker.publish("r/a", b"two", retain=True)
        await broker.publish("r/b", b"bee", retain=True)
        await broker.publish("r/c", b"not retained")
        await broker.publish("r/b", b"", retain=True)  # clears r/b
        assert [e.payload for e in broker.retained.matching("r/#")] == [b"two"]
        async with broker.subscribe("r/+") as events:
            first = await events.receive_batch()
            assert [(e.topic, e.payload, e.retain) for e in first] == [("r/a", b"two", True)]
            await broker.publish("r/a", b"three")
            assert [e.payload for e in await events.receive_batch()] == [b"three"]


async def test_message_expiry_is_honoured_on_delivery(
    backend: BackendUnderTest, clock: ManualClock
) -> None:
    """Expiry is measured on the broker's clock, the one that stamped the events."""
    async with tidelog.open(backend.url, clock=clock) as broker:
        await broker.publish("e", b"stale", properties=Properties(message_expiry=60))
        await broker.publish("e", b"fresh", properties=Properties(message_expiry=86_400))
        await broker.publish("e", b"forever")
        clock.advance(59_999)
        async with broker.subscribe("e", start="earliest") as events:
            assert len(await events.receive_batch()) == 3
        clock.advance(1)  # a minute after publishing
        async with broker.subscribe("e", start="earliest") as events:
            assert [e.payload for e in await events.receive_batch()] == [b"fresh", b"forever"]


async def test_cursors(backend: BackendUnderTest) -> None:
    async with tidelog.open(backend.url) as broker:
        await broker.publish_many([NewEvent(f"c/{i % 3}", b"%d" % i) for i in range(30)])
        cursor = await broker.create_cursor("billing", "c/1", start="earliest")
        assert cursor.position == 0 and cursor.lag == 30
        batch = await cursor.fetch(limit=4)
        assert [int(e.payload) for e in batch] == [1, 4, 7, 10]
        assert [int(e.payload) for e in await cursor.fetch(limit=4)] == [1, 4, 7, 10]  # no move
        await cursor.commit(batch.next_offset)
        again = await broker.cursor("billing")
        assert again.position == batch.next_offset
        assert [int(e.payload) for e in await again.fetch(limit=2)] == [13, 16]
        same = await broker.create_cursor("billing", "c/1", start="latest")
        assert same.position == batch.next_offset  # existing cursor is kept
        with pytest.raises(CursorExistsError):
            await broker.create_cursor("billing", "other")
        tail = await broker.create_cursor("tail", None)
        assert tail.position == 30 and tail.lag == 0
        assert [c.name for c in await broker.cursors()] == ["billing", "tail"]
        with pytest.raises(OffsetOutOfRangeError):
            await tail.commit(31)
        assert await broker.delete_cursor("tail") is True
        with pytest.raises(CursorNotFoundError):
            await broker.cursor("tail")


async def test_cursor_fetch_waits_for_new_events(backend: BackendUnderTest) -> None:
    async with tidelog.open(backend.url) as broker:
        cursor = await broker.create_cursor("waiter", "w")
        empty = await cursor.fetch(wait=0.05)
        assert empty.events == []

        async def later() -> None:
            await trio.testing.wait_all_tasks_blocked()  # the fetch is waiting
            await broker.publish("not/w", b"no")
            await broker.publish("w", b"yes")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(later)
            with trio.fail_after(5):
                got = await cursor.fetch(wait=4)
        assert [e.payload for e in got] == [b"yes"]


async def test_wills(backend: BackendUnderTest, clock: ManualClock) -> None:
    """Will delays run on the broker's clock: the test moves it, then waits for the
    wills that became due (and only those)."""
    async with tidelog.open(backend.url, clock=clock, session_expiry_check_seconds=0.01) as broker:

        async def published(count: int) -> list[str]:
            with trio.fail_after(30):
                while (state := await broker.log_state()).next_offset < count:
                    await broker.log.wait_for_append(state.next_offset)
            return [e.topic for e in (await broker.log.read(0)).events]

        broker.set_will("client-1", NewEvent("will/1", b"gone"), delay=0)
        broker.set_will("client-2", NewEvent("will/2", b"gone"), delay=200)
        assert broker.cancel_will("client-2") is True
        broker.set_will("client-3", NewEvent("will/3", b"late"), delay=50)
        broker.set_will("client-4", NewEvent("will/4", b"marker"), delay=400)
        assert await published(1) == ["will/1"]
        clock.advance(50_000)
        assert await published(2) == ["will/1", "will/3"]
        clock.advance(350_000)  # past the cancelled will/2's time too
        assert await published(3) == ["will/1", "will/3", "will/4"]


async def test_statistics(backend: BackendUnderTest) -> None:
    async with tidelog.open(backend.url) as broker:
        async with broker.subscribe("s/#") as _:
            await broker.publish_many([NewEvent("s/a", b"1"), NewEvent("s/b", b"2")])
            stats = broker.statistics()
            assert stats.published == 2 and stats.deliveries == 2
            assert stats.feeds == 1 and stats.subscriptions == 1
            assert stats.topic_counts == {"s/a": 1, "s/b": 1}
            assert stats.log.next_offset == 2
        assert broker.statistics().feeds == 0
