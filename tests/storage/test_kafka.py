"""``kafka://`` beyond the conformance suite: Kafka's settings, reads past the cache,
two nodes on one log, and an unreachable Kafka."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import trio
from confluent_kafka.admin import AdminClient, ConfigResource

from tests.kafka_broker import KafkaCluster, free_port
from tests.storage.backends import ManualClock
from tidelog.errors import InvalidStorageURLError, StorageUnavailableError
from tidelog.storage import CursorState, NewEvent, open_log


def fresh(kafka: KafkaCluster, **options: object) -> str:
    return kafka.url(f"log-{uuid.uuid4().hex[:12]}", **options)


def topic_config(kafka: KafkaCluster, topic: str) -> dict[str, str]:
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    resource = ConfigResource("topic", topic)
    config = admin.describe_configs([resource])[resource].result()
    return {name: entry.value for name, entry in config.items()}


async def test_topics_are_created_with_the_contract_settings(kafka: KafkaCluster) -> None:
    url = fresh(kafka)
    name = url.rsplit("/", 1)[1]
    async with open_log(url) as log:
        await log.append([NewEvent("a", b"1")])
    log_config = await trio.to_thread.run_sync(topic_config, kafka, name)
    assert log_config["message.timestamp.type"] == "LogAppendTime"
    assert log_config["cleanup.policy"] == "delete"
    assert log_config["min.insync.replicas"] == "1"  # one broker: RF 1, min ISR 1
    assert log_config["unclean.leader.election.enable"] == "false"
    state_config = await trio.to_thread.run_sync(topic_config, kafka, f"{name}.state")
    assert state_config["cleanup.policy"] == "compact"
    metadata = AdminClient({"bootstrap.servers": kafka.bootstrap}).list_topics(name, timeout=10)
    assert len(metadata.topics[name].partitions) == 1


async def test_reads_past_the_cache_come_from_kafka(
    kafka: KafkaCluster, clock: ManualClock
) -> None:
    """A 4 KiB cache holds a few records; everything else is fetched from Kafka, with
    the block index skipping blocks that hold no matching topic."""
    url = fresh(kafka)
    async with open_log(url, cache_bytes=4096, clock=clock) as log:
        starts = []
        for round_ in range(6):
            starts.append(clock.now)
            events = [NewEvent("common", b"x" * 40) for _ in range(999)]
            if round_ in (1, 4):
                events.insert(500, NewEvent("rare/x", b"%d" % round_))
            await log.append(events)
            clock.advance(1000)
        everything = []
        position = 0
        while position < 5996:
            page = await log.read(position, limit=700)
            everything.extend(page.events)
            position = page.next_offset
        assert [e.offset for e in everything] == list(range(5996))
        rare = []
        position = 0
        while position < 5996:
            page = await log.read(position, "rare/+")
            rare.extend(page.events)
            position = page.next_offset
        assert [(e.offset, e.payload) for e in rare] == [(1499, b"1"), (4497, b"4")]
        assert await log.offset_for_time(starts[3]) == 3 * 999 + 1
        assert await log.offset_for_time(starts[3] - 1) == 3 * 999 + 1
        assert await log.offset_for_time(starts[0]) == 0
        result = await log.apply_retention(max_age_ms=2500)  # rounds 0-3 are older
        assert result.first_offset == 3997
        assert (await log.read(0)).events[0].offset == result.first_offset
        assert {t.topic: t.count for t in await log.topics()} == {"common": 1998, "rare/x": 1}


async def test_two_nodes_share_the_log_cursors_and_state(kafka: KafkaCluster) -> None:
    url = fresh(kafka)
    async with open_log(url) as a, open_log(url) as b:
        stored = await a.append([NewEvent("from/a", b"1"), NewEvent("from/a", b"2")])
        assert await b.wait_for_append(1) >= 2
        assert [e.payload for e in (await b.read(0)).events] == [b"1", b"2"]
        more = await b.append([NewEvent("from/b", b"3")])
        assert more[0].offset == 2 and more[0].timestamp >= stored[0].timestamp
        await a.wait_for_append(2)
        assert [e.topic for e in (await a.read(0)).events] == ["from/a", "from/a", "from/b"]
        await a.commit_cursor("shared", 2, {"filter": "#"})
        assert await b.load_cursor("shared") == CursorState("shared", 2, {"filter": "#"})
        await b.commit_cursor("shared", 3, {"filter": "#"})
        assert (await a.load_cursor("shared")).position == 3
        await b.put_state("sessions", {"client": b"state"})
        assert await a.get_state("sessions", "client") == b"state"
        assert await a.delete_cursor("shared") is True
        assert await b.list_cursors() == []
    async with open_log(url) as c:  # a third node later: the same log and state
        assert (await c.state()).next_offset == 3
        assert await c.list_state("sessions") == {"client": b"state"}


async def test_unreachable_kafka_is_a_clear_error() -> None:
    url = f"kafka://127.0.0.1:{free_port()}/nowhere?timeout_ms=1500"
    with pytest.raises(StorageUnavailableError, match="unreachable"):
        async with open_log(url):
            pass


@pytest.mark.parametrize(
    "url", ["kafka://127.0.0.1:9/", "kafka:///name", "kafka://127.0.0.1:9/bad name"]
)
async def test_bad_urls(url: str) -> None:
    with pytest.raises(InvalidStorageURLError):
        async with open_log(url):
            pass


async def test_appends_are_refused_while_kafka_is_down_and_resume_after(tmp_path: Path) -> None:
    """A broker of its own (this test stops it): appends fail with a clear error while
    it is down, nothing acknowledged is lost, and the same open log recovers."""
    own = KafkaCluster(tmp_path / "kafka", brokers=1)
    await trio.to_thread.run_sync(own.start)
    try:
        async with open_log(own.url("outage", timeout_ms=4000)) as log:
            before = await log.append([NewEvent("up", b"%d" % n) for n in range(10)])
            await trio.to_thread.run_sync(own.stop_broker, 0)
            with pytest.raises(StorageUnavailableError):
                await log.append([NewEvent("down", b"lost?")])
            await trio.to_thread.run_sync(own.start_broker, 0)
            with trio.fail_after(60):
                while True:
                    try:
                        after = await log.append([NewEvent("up", b"again")])
                        break
                    except StorageUnavailableError:
                        await trio.sleep(0.5)
            events = (await log.read(0, "up")).events
            assert [e.payload for e in events[:10]] == [e.payload for e in before]
            assert events[-1].offset == after[0].offset and events[-1].payload == b"again"
    finally:
        await trio.to_thread.run_sync(own.stop)


async def test_a_node_starting_reads_the_index_from_checkpoints(
    kafka: KafkaCluster, clock: ManualClock
) -> None:
    """Checkpoints of the block index (every 2 blocks here) let a start skip reading the
    partition: the index read back answers as one rebuilt from every record, and a
    checkpoint is what the start trusts (a forged one shows up in ``topics()``)."""
    url = fresh(kafka)
    checkpointed = f"{url}?index_checkpoint_events=2048"
    async with open_log(checkpointed, clock=clock) as log:
        for round_ in range(5):
            events = [NewEvent("common", b"x" * 40) for _ in range(999)]
            events.insert(round_ * 100, NewEvent(f"rare/{round_}", b"%d" % round_))
            await log.append(events)
            clock.advance(1000)
        with trio.fail_after(20):  # stored in the background (not awaited by appends)
            while sorted(await log.list_state("kafka.index")) != ["0", "1"]:  # 4,096 of 5,000
                await trio.sleep(0.05)
        middle = clock.now - 2500

    async def answers(url: str) -> tuple[object, ...]:
        async with open_log(url, clock=clock) as log:
            rare = await log.read(0, "rare/#", limit=100)
            return (
                await log.state(),
                await log.topics(),
                await log.offset_for_time(middle),
                [(e.offset, e.payload) for e in rare.events],
            )

    restored = await answers(checkpointed)
    rebuilt = await answers(f"{url}?index_checkpoint_events=0")
    assert restored == rebuilt
    assert [p for _, p in restored[3]] == [b"0", b"1", b"2", b"3", b"4"]  # type: ignore[index]
    async with open_log(checkpointed, clock=clock) as log:
        forged = b'{"v":1,"blocks":[[2048,1024,1,null,0,{"ghost":[1024,3071]}],'
        forged += b'[3072,1024,1,null,0,{"ghost":[1024,4095]}]]}'
        await log.put_state("kafka.index", {"1": forged})
    async with open_log(checkpointed, clock=clock) as log:
        assert "ghost" in {t.topic for t in await log.topics()}
