"""The storage conformance suite: every backend passes it unchanged.

Parametrized over ``BACKEND_NAMES`` by the ``backend`` fixture. A new backend is
done when this file passes for it without edits.
"""

from __future__ import annotations

import pytest
import trio

from tests.storage.backends import BackendUnderTest, ManualClock
from tidelog.errors import (
    InvalidTopicError,
    LogClosedError,
    OffsetOutOfRangeError,
    RecordTooLargeError,
    StorageError,
)
from tidelog.storage import CursorState, Event, EventLog, NewEvent, Properties, Provenance
from tidelog.storage.records import decode_encoded, encode_record


def batch(topic: str, count: int, start: int = 0, size: int = 8) -> list[NewEvent]:
    return [NewEvent(topic, f"{start + i:0{size}d}".encode()) for i in range(count)]


async def read_all(log: EventLog, start: int = 0, topic_filter: str | None = None) -> list:
    """Read with repeated calls (as callers do), following next_offset to the end."""
    out = []
    end = (await log.state()).next_offset
    while start < end:
        result = await log.read(start, topic_filter, limit=500)
        assert result.next_offset > start or not result.events
        out.extend(result.events)
        if result.next_offset == start:
            break
        start = result.next_offset
    return out


async def test_offsets_are_dense_and_monotonic(backend: BackendUnderTest) -> None:
    async with backend.open() as log:
        first = await log.append(batch("a", 3))
        second = await log.append(batch("b", 5))
        assert [e.offset for e in first + second] == list(range(8))
        stored = await read_all(log)
        assert [e.offset for e in stored] == list(range(8))
        assert [e.payload for e in stored] == [e.payload for e in first + second]
        assert [e.topic for e in stored] == ["a"] * 3 + ["b"] * 5
        state = await log.state()
        assert (state.first_offset, state.next_offset, state.event_count) == (0, 8, 8)
        assert state.bytes > 8 * 8


async def test_empty_batch_stores_nothing(backend: BackendUnderTest) -> None:
    async with backend.open() as log:
        assert await log.append([]) == []
        assert (await log.state()).next_offset == 0
        await log.append(batch("a", 1))
        assert await log.append([]) == []
        assert (await log.state()).next_offset == 1


async def test_timestamps_never_decrease_even_if_the_clock_does(
    backend: BackendUnderTest, clock: ManualClock
) -> None:
    async with backend.open(clock=clock) as log:
        one = await log.append(batch("t", 3))
        assert {e.timestamp for e in one} == {clock.now}
        clock.advance(-5_000)  # the wall clock steps backwards
        two = await log.append(batch("t", 2))
        assert {e.timestamp for e in two} == {one[0].timestamp}
        clock.advance(10_000)
        three = await log.append(batch("t", 1))
        assert three[0].timestamp == clock.now
        stamps = [e.timestamp for e in await read_all(log)]
        assert stamps == sorted(stamps)
        state = await log.state()
        assert state.first_timestamp == one[0].timestamp
        assert state.last_timestamp == clock.now


async def test_fields_and_properties_round_trip(backend: BackendUnderTest) -> None:
    props = Properties(
        payload_format=1,
        message_expiry=3600,
        content_type="application/json",
        response_topic="reply/to/me",
        correlation_data=b"\x00\x01corr",
        user_properties=[("k", "v"), ("k", "second"), ("ключ", "значение")],
    )
    async with backend.open() as log:
        await log.append(
            [
                NewEvent("plain", b"", qos=0),
                NewEvent("with/props", b'{"x": 1}', qos=1, retain=True, properties=props),
                NewEvent("binary", bytes(range(256)), qos=2),
            ]
        )
        plain, with_props, binary = (await log.read(0)).events
        assert (plain.payload, plain.qos, plain.retain, plain.properties) == (b"", 0, False, None)
        assert with_props.qos == 1 and with_props.retain is True
        assert with_props.properties == props
        assert with_props.properties.user_properties[2] == ("ключ", "значение")
        assert binary.payload == bytes(range(256)) and binary.qos == 2


async def test_encoded_events_are_stored_as_their_fields_under_this_logs_timestamp(
    backend: BackendUnderTest, clock: ManualClock
) -> None:
    """An :class:`EncodedEvent` (another log's record, as a mesh link receives it) is
    stored as the same event encoded from its fields would be: this log's offset and
    timestamp, every field as it was; a bad topic refuses the batch as for any event."""
    came = Provenance(origin_node="edge-1", origin_offset=7, hop_path=("edge-1/aa/7", "r/bb/40"))
    other = [
        NewEvent("fwd/a", b"one", 1, False, None, came),
        NewEvent("fwd/b", b"", 2, True, Properties(content_type="a/b"), came),
        NewEvent("fwd/c", bytes(range(256)), 0, False, None, Provenance(client_id="dev")),
    ]
    encoded = decode_encoded([encode_record(e, 1_000) for e in other])  # another log's time
    async with backend.open(clock=clock) as log:
        await log.append(batch("local", 2))
        clock.advance(5_000)
        stored = await log.append([*encoded, NewEvent("local", b"x")])
        assert [(e.offset, e.timestamp) for e in stored] == [(i, clock.now) for i in (2, 3, 4, 5)]
        read = (await log.read(2)).events
        assert read == stored

        def fields(e: NewEvent | Event) -> tuple:
            return (e.topic, e.payload, e.qos, e.retain, e.properties, e.provenance)

        assert list(map(fields, read)) == list(map(fields, [*other, NewEvent("local", b"x")]))
        assert [e.offset for e in (await log.read(0, "fwd/+")).events] == [2, 3, 4]
        assert await log.offset_for_time(clock.now) == 2
        bad = decode_encoded([encode_record(NewEvent("a/+", b"", 0, False, None, came), 1)])
        with pytest.raises(InvalidTopicError):
            await log.append([*decode_encoded([encode_record(other[0], 1)]), *bad])
        assert (await log.state()).next_offset == 6


async def test_unicode_topics(backend: BackendUnderTest) -> None:
    topics = ["capteurs/température", "датчик/1", "传感器/温度", "emoji/🌊", "a/ /b"]
    async with backend.open() as log:
        await log.append([NewEvent(t, t.encode()) for t in topics])
        for topic in topics:
            events = (await log.read(0, topic)).events
            assert [e.topic for e in events] == [topic]
            assert events[0].payload == topic.encode()
        listed = [t.topic for t in await log.topics()]
        assert listed == sorted(topics)


async def test_invalid_topic_names_refuse_the_whole_batch(backend: BackendUnderTest) -> None:
    async with backend.open() as log:
        for bad in ["", "a/+", "a/#", "nul\x00byte"]:
            with pytest.raises(InvalidTopicError):
                await log.append([NewEvent("ok", b"1"), NewEvent(bad, b"2")])
        assert (await log.state()).next_offset == 0


async def test_topic_filters(backend: BackendUnderTest) -> None:
    topics = [
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "sport/tennis/player2",
        "sport",
        "sport/",
        "/finance",
        "$SYS/broker/load",
        "$SYS/monitor/Clients",
    ]
    async with backend.open() as log:
        await log.append([NewEvent(t, b"x") for t in topics])

        async def matched(topic_filter: str) -> list[str]:
            return [e.topic for e in await read_all(log, 0, topic_filter)]

        assert await matched("sport/tennis/player1") == ["sport/tennis/player1"]
        assert await matched("sport/tennis/player1/#") == [
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
        ]
        assert await matched("sport/#") == topics[:5]
        assert await matched("sport/tennis/+") == ["sport/tennis/player1", "sport/tennis/player2"]
        assert await matched("sport/+") == ["sport/"]
        assert await matched("+/+") == ["sport/", "/finance"]
        assert await matched("/+") == ["/finance"]
        assert await matched("#") == topics[:6]  # no $-topics for a leading wildcard
        assert await matched("+/monitor/Clients") == []
        assert await matched("$SYS/#") == ["$SYS/broker/load", "$SYS/monitor/Clients"]
        assert await matched("$SYS/monitor/+") == ["$SYS/monitor/Clients"]
        assert await matched("nothing/here") == []
        assert [e.topic for e in await read_all(log)] == topics  # no filter: everything
        with pytest.raises(InvalidTopicError):
            await log.read(0, "sport/ten#")


async def test_filtered_reads_interleaved_over_many_events(backend: BackendUnderTest) -> None:
    """Rare topics among many, across many batches (and segments, where the backend rolls)."""
    async with backend.open(segment_bytes=64 * 1024) as log:
        expected: dict[str, list[int]] = {"rare/a": [], "rare/b": [], "common": []}
        offset = 0
        for round_ in range(40):
            events = batch("common", 97, round_ * 100)
            events.insert(round_ % 50, NewEvent("rare/a", b"a%d" % round_))
            if round_ % 3 == 0:
                events.append(NewEvent("rare/b", b"b%d" % round_))
            stored = await log.append(events)
            for event in stored:
                expected[event.topic].append(event.offset)
            offset += len(stored)
        for topic_filter, topics in [
            ("rare/a", ["rare/a"]),
            ("rare/+", ["rare/a", "rare/b"]),
            ("rare/#", ["rare/a", "rare/b"]),
            ("common", ["common"]),
        ]:
            want = sorted(o for t in topics for o in expected[t])
            got = [e.offset for e in await read_all(log, 0, topic_filter)]
            assert got == want, topic_filter
            # starting in the middle
            middle = offset // 2
            got = [e.offset for e in await read_all(log, middle, topic_filter)]
            assert got == [o for o in want if o >= middle], topic_filter
        counts = {t.topic: t.count for t in await log.topics()}
        assert counts == {t: len(o) for t, o in expected.items()}
        lasts = {t.topic: t.last_offset for t in await log.topics()}
        assert lasts == {t: o[-1] for t, o in expected.items()}
        assert [t.topic for t in await log.topics("rare/+")] == ["rare/a", "rare/b"]


async def test_limit_max_bytes_and_end(backend: BackendUnderTest) -> None:
    async with backend.open() as log:
        await log.append(batch("a", 10, size=100))
        result = await log.read(0, limit=4)
        assert [e.offset for e in result] == [0, 1, 2, 3] and result.next_offset == 4
        result = await log.read(4, limit=100, end=7)
        assert [e.offset for e in result] == [4, 5, 6] and result.next_offset == 7
        result = await log.read(0, max_bytes=350)
        assert 1 <= len(result) <= 3
        assert result.next_offset == len(result)
        one = await log.read(5, max_bytes=1)  # always at least one event
        assert [e.offset for e in one] == [5]
        assert len(await log.read(0, max_bytes=None, limit=10_000)) == 10


async def test_read_positions(backend: BackendUnderTest) -> None:
    async with backend.open() as log:
        await log.append(batch("a", 5))
        at_end = await log.read(5)
        assert at_end.events == [] and at_end.next_offset == 5
        with pytest.raises(OffsetOutOfRangeError):
            await log.read(6)
        with pytest.raises(OffsetOutOfRangeError):
            await log.read(-1)
        empty_range = await log.read(2, end=2)
        assert empty_range.events == []


async def test_offset_for_time(backend: BackendUnderTest, clock: ManualClock) -> None:
    async with backend.open(clock=clock) as log:
        assert await log.offset_for_time(0) == 0  # empty log: its end
        t0 = clock.now
        await log.append(batch("a", 3))  # 0-2 at t0
        clock.advance(1000)
        await log.append(batch("a", 2))  # 3-4 at t0+1000
        await log.append(batch("a", 2))  # 5-6 at t0+1000 as well
        clock.advance(1000)
        await log.append(batch("a", 1))  # 7 at t0+2000
        assert await log.offset_for_time(0) == 0
        assert await log.offset_for_time(t0) == 0
        assert await log.offset_for_time(t0 + 1) == 3
        assert await log.offset_for_time(t0 + 1000) == 3  # equal timestamps: the first
        assert await log.offset_for_time(t0 + 1999) == 7
        assert await log.offset_for_time(t0 + 2000) == 7
        assert await log.offset_for_time(t0 + 2001) == 8  # after the last: the end


async def test_offset_for_time_across_many_batches(
    backend: BackendUnderTest, clock: ManualClock
) -> None:
    async with backend.open(clock=clock, segment_bytes=32 * 1024) as log:
        starts = []
        for _ in range(60):
            starts.append((clock.now, (await log.append(batch("t", 50)))[0].offset))
            clock.advance(10)
        for ts, offset in starts:
            assert await log.offset_for_time(ts) == offset
            assert await log.offset_for_time(ts - 5) == offset
        assert await log.offset_for_time(clock.now) == 3000


async def test_max_record_size_refuses_the_batch_and_keeps_going(
    backend: BackendUnderTest,
) -> None:
    async with backend.open(max_record_bytes=1024) as log:
        await log.append(batch("ok", 2))
        with pytest.raises(RecordTooLargeError):
            await log.append([NewEvent("ok", b"small"), NewEvent("big", b"x" * 2000)])
        assert isinstance(RecordTooLargeError("x"), StorageError)
        await log.append(batch("ok", 1))
        assert [e.offset for e in await read_all(log)] == [0, 1, 2]
        assert [t.topic for t in await log.topics()] == ["ok"]


async def test_default_max_record_size_is_16_mib(backend: BackendUnderTest) -> None:
    async with backend.open() as log:
        with pytest.raises(RecordTooLargeError):
            await log.append([NewEvent("big", b"x" * (16 * 1024 * 1024 + 1))])
        stored = await log.append([NewEvent("big", b"y" * (8 * 1024 * 1024))])
        assert (await log.read(stored[0].offset)).events[0].payload == b"y" * (8 * 1024 * 1024)


async def test_cursors(backend: BackendUnderTest) -> None:
    async with backend.open() as log:
        assert await log.load_cursor("c1") is None
        await log.commit_cursor("c1", 5, {"filter": "a/#"})
        await log.commit_cursors([CursorState("c2", 0), CursorState("c0", 7, {"n": [1, 2]})])
        assert await log.load_cursor("c1") == CursorState("c1", 5, {"filter": "a/#"})
        await log.commit_cursor("c1", 9, {"filter": "a/#"})
        assert (await log.load_cursor("c1")).position == 9
        assert [c.name for c in await log.list_cursors()] == ["c0", "c1", "c2"]
        assert (await log.list_cursors())[0].metadata == {"n": [1, 2]}
        assert await log.delete_cursor("c2") is True
        assert await log.delete_cursor("c2") is False
        assert [c.name for c in await log.list_cursors()] == ["c0", "c1"]
        with pytest.raises(StorageError):
            await log.commit_cursor("bad", 1, {"x": object()})
        assert await log.load_cursor("bad") is None


async def test_key_value_state(backend: BackendUnderTest) -> None:
    async with backend.open() as log:
        assert await log.get_state("retained", "a/b") is None
        await log.put_state("retained", {"a/b": b"\x00one", "c": b"two"})
        await log.put_state("sessions", {"a/b": b"other namespace"})
        assert await log.get_state("retained", "a/b") == b"\x00one"
        assert await log.list_state("retained") == {"a/b": b"\x00one", "c": b"two"}
        await log.put_state("retained", {"c": None, "d": b"", "missing": None})
        assert await log.list_state("retained") == {"a/b": b"\x00one", "d": b""}
        assert await log.list_state("sessions") == {"a/b": b"other namespace"}
        assert await log.list_state("nothing") == {}


async def test_reopen_keeps_everything(backend: BackendUnderTest, clock: ManualClock) -> None:
    if not backend.durable:
        pytest.skip(f"{backend.name} is not durable")
    async with backend.open(clock=clock, segment_bytes=16 * 1024) as log:
        for i in range(20):
            await log.append(batch(f"t/{i % 3}", 40, i * 40))
        await log.commit_cursor("reader", 123, {"filter": "t/+"})
        await log.put_state("retained", {"t/1": b"last"})
        before = await read_all(log)
        state = await log.state()
        topics = await log.topics()
        newest = {e.topic: e.offset for e in before}  # in offset order: the last one stays
        assert {t.topic: t.last_offset for t in topics} == newest
    clock.advance(60_000)
    async with backend.open(clock=clock, segment_bytes=16 * 1024) as log:
        assert await read_all(log) == before
        assert await log.state() == state
        assert await log.topics() == topics
        assert await log.load_cursor("reader") == CursorState("reader", 123, {"filter": "t/+"})
        assert await log.get_state("retained", "t/1") == b"last"
        assert [e.offset for e in await read_all(log, 0, "t/1")] == [
            e.offset for e in before if e.topic == "t/1"
        ]
        more = await log.append(batch("t/0", 2))
        assert [e.offset for e in more] == [800, 801]
        lasts = {t.topic: t.last_offset for t in await log.topics()}
        assert lasts["t/0"] == 801 and lasts["t/1"] == topics[1].last_offset
        assert more[0].timestamp == clock.now


async def test_concurrent_readers_while_appending(backend: BackendUnderTest) -> None:
    total = 3000
    async with backend.open(segment_bytes=32 * 1024) as log:

        async def writer() -> None:
            for i in range(0, total, 100):
                await log.append(batch(f"w/{i % 7}", 100, i))
                await trio.sleep(0)

        async def reader(topic_filter: str | None, seen: list[int]) -> None:
            position = 0
            while True:
                result = await log.read(position, topic_filter, limit=250)
                seen.extend(e.offset for e in result)
                position = result.next_offset
                if position >= total:
                    return
                if not result.events:
                    await log.wait_for_append(position)

        everything: list[int] = []
        some: list[int] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader, None, everything)
            nursery.start_soon(reader, "w/+", some)
            nursery.start_soon(writer)
        assert everything == list(range(total))
        assert some == list(range(total))


async def test_wait_for_append(backend: BackendUnderTest) -> None:
    async with backend.open() as log:
        await log.append(batch("a", 2))
        assert await log.wait_for_append(0) == 2  # already past: returns at once
        woke: list[int] = []

        async def waiter() -> None:
            woke.append(await log.wait_for_append(2))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.sleep(0.05)
            assert woke == []
            await log.append(batch("a", 3))
        assert woke == [5]


async def test_retention_by_age(backend: BackendUnderTest, clock: ManualClock) -> None:
    async with backend.open(clock=clock, segment_bytes=8 * 1024) as log:
        for _ in range(30):
            await log.append(batch("old", 20, size=50))
        clock.advance(3_600_000)
        young = await log.append(batch("young", 20, size=50))
        result = await log.apply_retention(max_age_ms=60_000)
        state = await log.state()
        assert result.removed_events > 0
        assert state.first_offset == result.first_offset == result.removed_events
        assert state.next_offset == 620
        remaining = await read_all(log)
        assert [e.offset for e in remaining] == list(range(state.first_offset, 620))
        assert remaining[-20:] == young  # nothing young is ever dropped
        assert (await log.read(0)).events[0].offset == state.first_offset  # clamped
        counts = {t.topic: t.count for t in await log.topics()}
        assert counts.get("old", 0) == 600 - state.first_offset
        lasts = {t.topic: t.last_offset for t in await log.topics()}
        assert lasts["young"] == 619 and lasts.get("old", 599) == 599
        assert await log.offset_for_time(0) == state.first_offset
        nothing = await log.apply_retention(max_age_ms=60_000)
        assert nothing.removed_events == 0 or backend.segmented is False


async def test_retention_by_size(backend: BackendUnderTest) -> None:
    async with backend.open(segment_bytes=8 * 1024) as log:
        for i in range(40):
            await log.append(batch("s", 20, i * 20, size=100))
        before = (await log.state()).bytes
        result = await log.apply_retention(max_bytes=before // 4)
        state = await log.state()
        assert result.removed_events > 0 and result.removed_bytes > 0
        assert state.bytes == before - result.removed_bytes
        assert state.bytes <= before // 4 + 16 * 1024  # within about a segment of the bound
        assert state.next_offset == 800
        assert [e.offset for e in await read_all(log)] == list(range(state.first_offset, 800))


async def test_closed_log_refuses_calls(backend: BackendUnderTest) -> None:
    async with backend.open() as log:
        await log.append(batch("a", 1))
    with pytest.raises(LogClosedError):
        await log.append(batch("a", 1))
    with pytest.raises(LogClosedError):
        await log.read(0)


async def test_close_wakes_waiters(backend: BackendUnderTest) -> None:
    errors: list[BaseException] = []

    async def waiter(log: EventLog) -> None:
        try:
            await log.wait_for_append(0)
        except LogClosedError as exc:
            errors.append(exc)

    async with backend.open() as log, trio.open_nursery() as nursery:
        nursery.start_soon(waiter, log)
        await trio.sleep(0.02)
        await log.aclose()
    assert len(errors) == 1


async def test_statistics_count_work(backend: BackendUnderTest) -> None:
    async with backend.open() as log:
        await log.append(batch("a", 4))
        await log.read(0)
        stats = log.statistics()
        assert stats.backend == backend.name
        assert stats.appends == 1 and stats.appended_events == 4
        assert stats.reads >= 1 and stats.read_events >= 4
        assert stats.next_offset == 4


async def test_names_of_any_length_are_stored_and_found(backend: BackendUnderTest) -> None:
    """Topics and state keys up to MQTT's 65,535-byte maximum (LMDB keys stop at 511).

    The lengths straddle LMDB's key limit; a small segment size makes segments seal
    (writing the per-topic index and counts) and the log is reopened."""
    lengths = [1, 250, 505, 509, 510, 511, 512, 513, 600, 4_096, 65_535]
    topics = [("t/" + "x" * 65_535)[:n] for n in lengths]
    keys = [("k" * 65_535)[:n] for n in lengths]
    async with backend.open(segment_bytes=8 * 1024) as log:
        for round_ in range(3):
            await log.append([NewEvent(topic, b"%d" % round_) for topic in topics])
        await log.put_state("retained", {key: key.encode()[-8:] for key in keys})
        await log.put_state("retained", {keys[-1]: b"replaced"})
    reopen = backend.open(segment_bytes=8 * 1024) if backend.durable else None
    if reopen is None:
        return
    async with reopen as log:
        assert await log.append([NewEvent(topics[-1], b"after")]) != []
        counts = {t.topic: t.count for t in await log.topics()}
        assert counts == {topic: 3 + (topic == topics[-1]) for topic in topics}
        for topic in topics:
            events = await read_all(log, 0, topic)
            assert {e.topic for e in events} == {topic}
        everything = await read_all(log, 0, "t/#")
        assert len(everything) == 3 * len(topics) + 1
        prefixed = await read_all(log, 0, "t/" + "x" * 600 + "/#")
        assert prefixed == []
        assert [e.topic for e in await read_all(log, 0, "t/+")] == [
            e.topic
            for e in everything
            if e.topic != "t"  # "t/#" matches "t", "t/+" does not
        ]
        stored = await log.list_state("retained")
        assert stored == {**{key: key.encode()[-8:] for key in keys}, keys[-1]: b"replaced"}
        for key in keys:
            assert await log.get_state("retained", key) == stored[key]
        await log.put_state("retained", dict.fromkeys(keys))
        assert await log.list_state("retained") == {}
