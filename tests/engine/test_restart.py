"""What survives a restart: events, cursors, retained messages, sessions."""

from __future__ import annotations

import logging

import pytest
import trio

import tidelog
from tests.storage.backends import BackendUnderTest, ManualClock
from tidelog import NewEvent
from tidelog.engine import NEVER_EXPIRES, Session, SessionSubscription
from tidelog.storage import Event, open_log
from tidelog.storage.records import encode_record


async def test_cursors_and_retained_survive_restart(durable_backend: BackendUnderTest) -> None:
    url = durable_backend.url
    async with tidelog.open(url) as broker:
        await broker.publish_many([NewEvent("k", b"%d" % i) for i in range(10)])
        cursor = await broker.create_cursor("c", "k", start="earliest")
        await cursor.commit(4)
        await broker.publish("cfg/a", b"A", retain=True)
        await broker.publish("cfg/b", b"B", retain=True)
        await broker.publish("cfg/b", b"", retain=True)
    async with tidelog.open(url) as broker:
        assert (await broker.cursor("c")).position == 4
        assert [(e.topic, e.payload) for e in broker.retained.matching("cfg/#")] == [
            ("cfg/a", b"A")
        ]
        assert broker.end_offset == 13
        event = await broker.publish("after", b"restart")
        assert event.offset == 13


async def test_retained_published_after_the_last_flush_is_recovered(
    durable_backend: BackendUnderTest,
) -> None:
    """A retained publish acknowledged but not yet flushed (the broker died) is
    re-applied from the log on the next start."""
    url = durable_backend.url
    async with tidelog.open(url) as broker:
        await broker.publish("cfg/x", b"flushed", retain=True)
    async with open_log(url) as log:  # as if the broker had died right after these commits
        await log.append([NewEvent("cfg/y", b"unflushed", retain=True)])
        await log.append([NewEvent("cfg/x", b"", retain=True)])
    async with tidelog.open(url) as broker:
        assert [(e.topic, e.payload) for e in broker.retained.matching("cfg/#")] == [
            ("cfg/y", b"unflushed")
        ]


async def test_sessions_survive_restart_and_expire(
    durable_backend: BackendUnderTest, clock: ManualClock
) -> None:
    """Expiry is measured on the broker's clock: the test moves it, then waits for
    the periodic expiry to act (no sleeping through the expiry interval)."""
    url = durable_backend.url
    now = clock.now
    async with tidelog.open(url, session_expiry_check_seconds=0.05, clock=clock) as broker:
        await broker.sessions.save(
            Session(
                "keeper",
                expiry_interval=NEVER_EXPIRES,
                position=7,
                subscriptions={"a/#": SessionSubscription("a/#", {"qos": 1}, 3)},
                inflight={"outbound": [5, 6]},
                disconnected_at=now,
            )
        )
        await broker.sessions.save(Session("short", expiry_interval=0, disconnected_at=now - 1))
        await broker.sessions.save(Session("connected", expiry_interval=1))  # still online
        with trio.fail_after(5):
            while broker.sessions.get("short") is not None:
                await trio.sleep(0.02)
        assert broker.sessions.get("connected") is not None
    clock.advance(3_600_000)  # the restart comes an hour later
    async with tidelog.open(url, session_expiry_check_seconds=0.05, clock=clock) as broker:
        keeper = broker.sessions.get("keeper")
        assert keeper is not None
        assert keeper.position == 7
        assert keeper.subscriptions["a/#"].created_offset == 3
        assert keeper.subscriptions["a/#"].options == {"qos": 1}
        assert keeper.inflight == {"outbound": [5, 6]}
        assert broker.sessions.get("short") is None
        connected = broker.sessions.get("connected")
        assert connected is not None  # its expiry starts at the restart, not before it
        assert connected.disconnected_at == clock.now
        clock.advance(999)
        assert await broker.sessions.expire() == []
        clock.advance(1)  # one second after the restart
        with trio.fail_after(5):
            while broker.sessions.get("connected") is not None:
                await trio.sleep(0.02)  # the periodic expiry runs every 0.05 s


async def test_a_pending_will_is_published_after_a_restart(
    durable_backend: BackendUnderTest, clock: ManualClock
) -> None:
    """A will waiting for its delay when the broker stops is published after the next
    start, when it is due on the broker's clock (at once if that has passed); a
    cancelled one is not."""
    url = durable_backend.url
    options = {"clock": clock, "session_expiry_check_seconds": 0.01}
    async with tidelog.open(url, **options) as broker:
        set_at = clock.now
        broker.set_will("later", NewEvent("will/later", b"due in 1.5 s", qos=1), delay=1.5)
        broker.set_will("back", NewEvent("will/back", b"cancelled"), delay=0.2)
        assert broker.cancel_will("back")
    async with open_log(url) as log:  # the clean shutdown kept the pending will
        assert list(await log.list_state("wills")) == ["later"]
        overdue = NewEvent("will/overdue", b"was due a second ago")
        await log.put_state("wills", {"overdue": encode_record(overdue, set_at)})
    clock.advance(1000)  # the restart, a second later: "overdue" is due, "later" is not
    async with tidelog.open(url, **options) as broker:
        events: list[Event] = []
        with trio.fail_after(10):
            while len(events) < 1:
                await broker.log.wait_for_append(len(events))
                events = (await broker.log.read(0)).events
        assert [e.topic for e in events] == ["will/overdue"]
        clock.advance(500)  # 1.5 s after it was set
        with trio.fail_after(10):
            while len(events) < 2:
                await broker.log.wait_for_append(len(events))
                events = (await broker.log.read(0)).events
        assert [e.topic for e in events] == ["will/overdue", "will/later"]
        assert (events[1].qos, events[1].payload) == (1, b"due in 1.5 s")
    async with open_log(url) as log:  # published wills are forgotten
        assert await log.list_state("wills") == {}


async def test_a_pending_will_of_a_client_id_with_unit_separators_survives_a_restart(
    durable_backend: BackendUnderTest, clock: ManualClock
) -> None:
    """On an unshared log a will's key is the client id as it is, even one that looks
    like a shared log's key (U+001F inside): it is loaded after a restart and its client
    coming back cancels it."""
    url = durable_backend.url
    client = "odd\x1fid\x1fwith\x1fseparators"
    options = {"clock": clock, "session_expiry_check_seconds": 0.01}
    async with tidelog.open(url, **options) as broker:
        broker.set_will(client, NewEvent("will/odd", b"gone"), delay=5)
    async with tidelog.open(url, **options) as broker:
        assert len(broker.wills) == 1
        assert broker.cancel_will(client)
    async with open_log(url) as log:
        assert await log.list_state("wills") == {}


async def test_unreadable_stored_state_is_set_aside_not_fatal(
    durable_backend: BackendUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    """A damaged retained message or session is reported and skipped at startup;
    everything else loads and the broker serves (it used to stop on every start)."""
    url = durable_backend.url
    async with tidelog.open(url) as broker:
        await broker.publish("cfg/good", b"kept", retain=True)
    async with open_log(url) as log:
        await log.put_state("retained", {"cfg/bad": b"\x01not a record"})
        await log.put_state("sessions", {"broken": b"{not json", "typo": b'{"client": 1}'})
    with caplog.at_level(logging.ERROR):
        async with tidelog.open(url) as broker:
            assert [e.topic for e in broker.retained.matching("cfg/#")] == ["cfg/good"]
            assert broker.sessions.get("broken") is None
            await broker.publish("cfg/bad", b"replaced", retain=True)
            assert broker.retained.get("cfg/bad") is not None
    messages = [r.getMessage() for r in caplog.records]
    assert any("retained entry 'cfg/bad' cannot be loaded" in m for m in messages), messages
    assert any("sessions entry 'broken' cannot be loaded" in m for m in messages), messages
    assert any("sessions entry 'typo' cannot be loaded" in m for m in messages), messages
    async with tidelog.open(url) as broker:  # the replacement was persisted
        assert broker.retained.get("cfg/bad").payload == b"replaced"  # type: ignore[union-attr]
