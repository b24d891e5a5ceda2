"""Consumer groups on explicit cursors: leases, acks, naks, redelivery with backoff on the
broker's clock, dead letters, back-pressure, the floor, and what survives a restart."""

from __future__ import annotations

import pytest
import trio

import tidelog
from tests.storage.backends import BackendUnderTest, ManualClock
from tidelog import NewEvent
from tidelog.engine.consumers import REFUSED_DELAY, REFUSED_TRIES, ConsumerOptions
from tidelog.errors import AckPolicyError, InvalidConsumerOptionsError

EXPLICIT = ConsumerOptions(ack_policy="explicit", ack_wait=10.0)


async def _publish(broker: tidelog.Broker, count: int, topic: str = "jobs/a") -> None:
    await broker.publish_many([NewEvent(topic, b"%d" % i) for i in range(count)])


def _offsets(result: object) -> list[int]:
    return [e.offset for e in result]  # type: ignore[attr-defined]


async def test_each_event_leased_to_one_member_and_acked_once(
    backend: BackendUnderTest, clock: ManualClock
) -> None:
    async with tidelog.open(backend.url, clock=clock) as broker:
        cursor = await broker.create_cursor("g", "jobs/#", start="earliest", options=EXPLICIT)
        await _publish(broker, 10)
        await broker.publish("other", b"x")  # not matching: the floor moves over it
        first = await cursor.fetch(4, member="m1")
        second = await cursor.fetch(4, member="m2")
        third = await cursor.fetch(4, member="m3")
        assert _offsets(first) == [0, 1, 2, 3]
        assert _offsets(second) == [4, 5, 6, 7]
        assert _offsets(third) == [8, 9]
        assert _offsets(await cursor.fetch(4, member="m1")) == []
        assert await cursor.pending() == 10
        # acks out of order: the floor stays at the lowest unacknowledged event
        assert await cursor.ack([4, 5, 6, 7, 9]) == 5
        assert cursor.position == 0
        assert await cursor.pending() == 5
        assert await cursor.ack([0, 1, 2, 3, 8, 8, 99]) == 5
        assert cursor.position == 11  # everything acknowledged, the non-matching event too
        assert await cursor.pending() == 0
        stats = await cursor.statistics()
        assert stats is not None and stats.pending == 0 and stats.redelivered == 0


async def test_unacked_event_redelivered_after_ack_wait_with_backoff(
    backend: BackendUnderTest, clock: ManualClock
) -> None:
    options = ConsumerOptions(ack_policy="explicit", ack_wait=10.0, backoff=(5.0, 60.0))
    async with tidelog.open(backend.url, clock=clock) as broker:
        cursor = await broker.create_cursor("g", "jobs/#", start="earliest", options=options)
        await _publish(broker, 2)
        assert _offsets(await cursor.fetch(10, member="m1")) == [0, 1]
        await cursor.ack([1])
        clock.advance(10_000)  # the lease ends; the first backoff (5 s) still runs
        assert _offsets(await cursor.fetch(10, member="m2")) == []
        clock.advance(4_999)
        assert _offsets(await cursor.fetch(10, member="m2")) == []
        clock.advance(1)
        assert _offsets(await cursor.fetch(10, member="m2")) == [0]
        # second delivery: 10 s lease, then 60 s backoff
        clock.advance(10_000 + 59_999)
        assert _offsets(await cursor.fetch(10, member="m3")) == []
        clock.advance(1)
        assert _offsets(await cursor.fetch(10, member="m3")) == [0]
        stats = await cursor.statistics()
        assert stats is not None and stats.redelivered == 2 and stats.leased == 1


async def test_nak_with_delay_and_progress(backend: BackendUnderTest, clock: ManualClock) -> None:
    async with tidelog.open(backend.url, clock=clock) as broker:
        cursor = await broker.create_cursor("g", "jobs/#", start="earliest", options=EXPLICIT)
        await _publish(broker, 2)
        assert _offsets(await cursor.fetch(10, member="m1")) == [0, 1]
        assert await cursor.nak([0]) == 1  # no delay, no backoff: due at once
        assert _offsets(await cursor.fetch(10, member="m2")) == [0]
        assert await cursor.nak([0], delay=3.0) == 1
        clock.advance(2_999)
        assert _offsets(await cursor.fetch(10, member="m2")) == []
        clock.advance(1)
        assert _offsets(await cursor.fetch(10, member="m2")) == [0]
        # progress keeps offset 1 leased past its first ack wait
        clock.advance(9_000)
        assert await cursor.progress([1]) == 1
        clock.advance(9_000)
        assert _offsets(await cursor.fetch(10, member="m3")) == [0]  # 0's lease ended
        clock.advance(1_001)
        assert _offsets(await cursor.fetch(10, member="m3")) == [1]


async def test_released_member_leases_go_to_others(
    backend: BackendUnderTest, clock: ManualClock
) -> None:
    async with tidelog.open(backend.url, clock=clock) as broker:
        cursor = await broker.create_cursor("g", "jobs/#", start="earliest", options=EXPLICIT)
        await _publish(broker, 4)
        assert _offsets(await cursor.fetch(2, member="dies")) == [0, 1]
        assert _offsets(await cursor.fetch(1, member="lives")) == [2]
        assert await cursor.release("dies") == 2
        assert _offsets(await cursor.fetch(10, member="lives")) == [0, 1, 3]


async def test_max_deliver_dead_letters_with_properties(
    backend: BackendUnderTest, clock: ManualClock
) -> None:
    options = ConsumerOptions(ack_policy="explicit", ack_wait=1.0, max_deliver=2)
    async with tidelog.open(backend.url, clock=clock) as broker:
        cursor = await broker.create_cursor("work", "jobs/#", start="earliest", options=options)
        await broker.publish("jobs/poison", b"bad")
        await broker.publish("jobs/fine", b"ok")
        assert _offsets(await cursor.fetch(10, member="m")) == [0, 1]
        await cursor.ack([1])
        clock.advance(1_000)
        assert _offsets(await cursor.fetch(10, member="m")) == [0]
        clock.advance(1_000)
        assert _offsets(await cursor.fetch(10, member="m")) == []  # dead-lettered instead
        assert cursor.position == 3  # the cursor moved on (past its dead letter too)
        letters = [e async for e in broker.replay("$DLQ/#", start="earliest")]
        assert [(e.topic, e.payload) for e in letters] == [("$DLQ/work", b"bad")]
        props = dict(letters[0].properties.user_properties)  # type: ignore[union-attr]
        assert props == {
            "dead_letter_reason": "max_deliver",
            "dead_letter_deliveries": "2",
            "dead_letter_offset": "0",
            "dead_letter_topic": "jobs/poison",
        }
        stats = await cursor.statistics()
        assert stats is not None and stats.dead_lettered == 1


async def test_max_leased_is_back_pressure(backend: BackendUnderTest, clock: ManualClock) -> None:
    options = ConsumerOptions(ack_policy="explicit", max_leased=3)
    async with tidelog.open(backend.url, clock=clock) as broker:
        cursor = await broker.create_cursor("g", "jobs/#", start="earliest", options=options)
        await _publish(broker, 5)
        assert _offsets(await cursor.fetch(10, member="a")) == [0, 1, 2]
        assert _offsets(await cursor.fetch(10, member="b")) == []
        await cursor.ack([1])
        assert _offsets(await cursor.fetch(10, member="b")) == [3]


async def test_max_leased_per_member_is_back_pressure_per_member(
    backend: BackendUnderTest, clock: ManualClock
) -> None:
    options = ConsumerOptions(ack_policy="explicit", ack_wait=10.0, max_leased_per_member=2)
    async with tidelog.open(backend.url, clock=clock) as broker:
        cursor = await broker.create_cursor("g", "jobs/#", start="earliest", options=options)
        await _publish(broker, 7)
        assert _offsets(await cursor.fetch(10, member="a")) == [0, 1]
        assert _offsets(await cursor.fetch(10, member="a")) == []  # a is full
        assert _offsets(await cursor.fetch(10, member="b")) == [2, 3]
        await cursor.ack([0])
        assert _offsets(await cursor.fetch(10, member="a")) == [4]
        clock.advance(10_000)  # a's and b's leases end: they count no more
        assert _offsets(await cursor.fetch(10, member="c")) == [1, 2]
        got: list[list[int]] = []
        async with trio.open_nursery() as nursery:

            async def waiter() -> None:  # c is full: it waits for a settlement
                got.append(_offsets(await cursor.fetch(10, wait=30, member="c")))

            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            await _publish(broker, 1)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []
            await cursor.ack([1])
        assert got == [[3]]
        assert options.to_dict()["max_leased_per_member"] == 2
        with pytest.raises(InvalidConsumerOptionsError):
            ConsumerOptions.from_dict({"ack_policy": "explicit", "max_leased_per_member": 0})


async def test_waiting_fetch_wakes_on_publish_and_on_settlement(
    backend: BackendUnderTest, clock: ManualClock
) -> None:
    options = ConsumerOptions(ack_policy="explicit", max_leased=1)
    async with tidelog.open(backend.url, clock=clock) as broker:
        cursor = await broker.create_cursor("g", "jobs/#", start="earliest", options=options)
        got: list[list[int]] = []
        async with trio.open_nursery() as nursery:

            async def waiter() -> None:
                got.append(_offsets(await cursor.fetch(10, wait=30, member="w")))

            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            await _publish(broker, 2)
        assert got == [[0]]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert got == [[0]]  # max_leased reached: waiting
            await cursor.ack([0])
        assert got == [[0], [1]]


async def test_cumulative_commit_on_explicit_cursor(
    backend: BackendUnderTest, clock: ManualClock
) -> None:
    async with tidelog.open(backend.url, clock=clock) as broker:
        cursor = await broker.create_cursor("g", "jobs/#", start="earliest", options=EXPLICIT)
        await _publish(broker, 6)
        await cursor.fetch(4, member="m")
        await cursor.commit(3)  # 0..2 acknowledged at once
        assert cursor.position == 3
        await cursor.commit(6)  # and past what was handed out
        assert cursor.position == 6
        assert _offsets(await cursor.fetch(10, member="m")) == []


async def test_ack_policy_none_and_cumulative_refuse_settlement(
    backend: BackendUnderTest,
) -> None:
    async with tidelog.open(backend.url) as broker:
        await _publish(broker, 3)
        none = await broker.create_cursor(
            "n", "jobs/#", start="earliest", options=ConsumerOptions(ack_policy="none")
        )
        assert _offsets(await none.fetch(2)) == [0, 1]
        assert (await broker.cursor("n")).position == 2  # a fetch moves it
        plain = await broker.create_cursor("c", "jobs/#", start="earliest")
        with pytest.raises(AckPolicyError):
            await plain.ack([0])
        assert plain.options.ack_policy == "cumulative"


async def test_options_are_validated(backend: BackendUnderTest) -> None:
    with pytest.raises(InvalidConsumerOptionsError):
        ConsumerOptions.from_dict({"ack_policy": "sometimes"})
    with pytest.raises(InvalidConsumerOptionsError):
        ConsumerOptions.from_dict({"backoff": [1, "x"]})
    with pytest.raises(InvalidConsumerOptionsError):
        ConsumerOptions.from_dict({"max_leased": 0})
    with pytest.raises(InvalidConsumerOptionsError):
        ConsumerOptions.from_dict({"colour": "blue"})
    async with tidelog.open(backend.url) as broker:
        own = ConsumerOptions(ack_policy="explicit", dead_letter_topic="jobs/dead")
        with pytest.raises(InvalidConsumerOptionsError, match="own dead letters"):
            await broker.create_cursor("g", "jobs/#", options=own)
        # the default $DLQ/<name> is not matched by '#' ($-topics)
        cursor = await broker.create_cursor("g", None, options=EXPLICIT)
        assert cursor.options == EXPLICIT
        with pytest.raises(InvalidConsumerOptionsError):
            await broker.create_cursor("h", "$DLQ/#", options=EXPLICIT)


async def test_leases_and_acks_survive_restart(
    durable_backend: BackendUnderTest, clock: ManualClock
) -> None:
    """Only what was not acknowledged comes again after a restart, and leases keep
    their deadlines on the broker's clock."""
    url = durable_backend.url
    async with tidelog.open(url, clock=clock) as broker:
        cursor = await broker.create_cursor("g", "jobs/#", start="earliest", options=EXPLICIT)
        await _publish(broker, 6)
        assert _offsets(await cursor.fetch(4, member="m")) == [0, 1, 2, 3]
        await cursor.ack([1, 3])
    async with tidelog.open(url, clock=clock) as broker:
        cursor = await broker.cursor("g")
        assert cursor.options == EXPLICIT
        assert cursor.position == 0
        assert await cursor.pending() == 4  # 0, 2 leased; 4, 5 new
        clock.advance(5_000)
        assert _offsets(await cursor.fetch(10, member="n")) == [4, 5]  # 0, 2 still leased
        clock.advance(5_000)
        assert _offsets(await cursor.fetch(10, member="n")) == [0, 2]
        await cursor.ack([0, 2, 4, 5])
        assert cursor.position == 6


async def test_delete_forgets_the_group(backend: BackendUnderTest, clock: ManualClock) -> None:
    async with tidelog.open(backend.url, clock=clock) as broker:
        cursor = await broker.create_cursor("g", "jobs/#", start="earliest", options=EXPLICIT)
        await _publish(broker, 3)
        await cursor.fetch(3, member="m")
        assert await broker.delete_cursor("g")
        cursor = await broker.create_cursor("g", "jobs/#", start="earliest", options=EXPLICIT)
        assert _offsets(await cursor.fetch(3, member="m")) == [0, 1, 2]


async def test_changed_options_stick(backend: BackendUnderTest, clock: ManualClock) -> None:
    async with tidelog.open(backend.url, clock=clock) as broker:
        cursor = await broker.create_cursor("g", "jobs/#", start="earliest", options=EXPLICIT)
        await _publish(broker, 2)
        await cursor.fetch(1, member="m")
        wider = ConsumerOptions(ack_policy="explicit", ack_wait=10.0, max_leased=5)
        await broker.create_cursor("g", "jobs/#", options=wider)
        await cursor.ack([0])  # through an older handle: the group stores the new options
        assert (await broker.cursor("g")).options == wider
        assert (await cursor.group()).options.max_leased == 5


async def test_ack_without_waiting_applies_at_once_and_is_stored(
    durable_backend: BackendUnderTest, clock: ManualClock
) -> None:
    """``ack(durable=False)`` settles at once (no member gets the events again, the
    floor moves) and the state writer stores it with its next batch: after a clean
    close the events are not delivered again."""
    url = durable_backend.url
    async with tidelog.open(url, clock=clock) as broker:
        cursor = await broker.create_cursor("g", "jobs/#", start="earliest", options=EXPLICIT)
        await _publish(broker, 4)
        assert _offsets(await cursor.fetch(4, member="m")) == [0, 1, 2, 3]
        assert await cursor.ack([0, 1, 3], durable=False) == 3
        assert await cursor.ack([0], durable=False) == 0  # already acknowledged
        assert cursor.position == 2
        clock.advance(20_000)  # every lease ended: only 2 comes again
        assert _offsets(await cursor.fetch(10, member="n")) == [2]
    async with tidelog.open(url, clock=clock) as broker:
        cursor = await broker.cursor("g")
        assert cursor.position == 2
        assert await cursor.pending() == 1
        clock.advance(20_000)
        assert _offsets(await cursor.fetch(10, member="n")) == [2]


async def test_an_event_given_back_goes_to_another_member_and_does_not_loop(
    backend: BackendUnderTest, clock: ManualClock
) -> None:
    """give_back (an MQTT member whose Maximum Packet Size is too small): any other
    member may take the event at once, the same one after REFUSED_DELAY; when every
    member gives it back, it is discarded after REFUSED_TRIES deliveries."""
    async with tidelog.open(backend.url, clock=clock) as broker:
        cursor = await broker.create_cursor("g", "jobs/#", start="earliest", options=EXPLICIT)
        group = await cursor.group()
        await _publish(broker, 1)
        assert _offsets(await cursor.fetch(10, member="small")) == [0]
        assert group.give_back("small", [0]) == 1
        assert _offsets(await cursor.fetch(10, member="small")) == []
        assert _offsets(await cursor.fetch(10, member="big")) == [0]
        assert group.give_back("small", [0]) == 0  # big holds it now
        deliveries = 2
        while await cursor.pending():
            assert group.give_back("big", [0]) == 1
            clock.advance(int(REFUSED_DELAY * 1000))
            if await cursor.pending():
                assert _offsets(await cursor.fetch(10, member="big")) == [0]
                deliveries += 1
        assert deliveries == REFUSED_TRIES
