"""The group-commit writer with several appends in flight, on a real ``kafka://`` log
(``EventLog.append_pipeline``): order, answers and refusals as with one at a time."""

from __future__ import annotations

import uuid

import pytest
import trio

from tests.kafka_broker import KafkaCluster
from tidelog.engine.group_commit import GroupCommitWriter
from tidelog.errors import BatchPartlyQueuedError, RecordTooLargeError, StorageError
from tidelog.storage import Event, NewEvent, kafka_log, open_log


async def test_pipelined_appends_keep_submission_order_and_refuse_only_the_bad_one(
    kafka: KafkaCluster,
) -> None:
    url = kafka.url(f"log-{uuid.uuid4().hex[:12]}", max_record_bytes=2048)
    async with open_log(url) as log:
        assert log.append_pipeline > 1
        commits: list[list[Event]] = []
        answers: dict[int, list[Event] | BaseException] = {}
        writer = GroupCommitWriter(log, commits.append)
        bad = 57
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            for index in range(120):
                payload = b"x" * 4096 if index == bad else b"%d" % index
                events = [NewEvent(f"t/{index % 3}", payload) for _ in range(1 + index % 4)]
                writer.submit_nowait(events, lambda result, i=index: answers.__setitem__(i, result))
                if index % 7 == 0:  # let the writer begin a batch while others are in flight
                    await trio.sleep(0)
            await writer.wait_idle()
            writer.close()
        assert sorted(answers) == list(range(120))
        assert isinstance(answers.pop(bad), RecordTooLargeError)
        offsets = [[e.offset for e in answers[i]] for i in sorted(answers)]  # type: ignore[union-attr]
        flat = [offset for group in offsets for offset in group]
        assert flat == list(range(len(flat)))  # submission order is log order, no gaps
        assert [e.offset for batch in commits for e in batch] == flat
        assert writer.statistics().max_in_flight > 1
        stored = (await log.read(0, limit=1000)).events
        assert [e.payload for e in stored] == [
            b"%d" % i for i in sorted(answers) for _ in range(1 + i % 4)
        ]


async def test_a_batch_larger_than_the_producer_queue_is_never_stored_twice(
    kafka: KafkaCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """librdkafka's queue (here 1 KiB, ``queue.buffering.max.kbytes``) takes only part
    of a batch that overflows it: the log refuses such a batch before queueing any
    of it, so what is stored is exactly what was acknowledged, once."""
    monkeypatch.setattr(kafka_log, "QUEUE_KBYTES", 1)
    async with open_log(kafka.url(f"log-{uuid.uuid4().hex[:12]}")) as log:
        answers: dict[int, list[Event] | BaseException] = {}
        writer = GroupCommitWriter(log, lambda events: None)
        for index in range(4):  # one batch; about three records fit in the queue
            payload = bytes([65 + index]) * 300
            writer.submit_nowait(
                [NewEvent("t", payload)], lambda result, i=index: answers.__setitem__(i, result)
            )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            await writer.wait_idle()
            later = await writer.submit([NewEvent("t", b"later")])  # the queue is free again
            writer.close()
        acknowledged = [i for i in sorted(answers) if isinstance(answers[i], list)]
        stored = (await log.read(0, limit=100)).events
        assert [e.payload for e in stored] == [bytes([65 + i]) * 300 for i in acknowledged] + [
            b"later"
        ]
        refused = [i for i in sorted(answers) if isinstance(answers[i], StorageError)]
        assert acknowledged and refused and len(acknowledged) + len(refused) == 4
        assert [e.offset for i in acknowledged for e in answers[i]] + [  # type: ignore[union-attr]
            later[0].offset
        ] == [e.offset for e in stored]


async def test_a_batch_queued_in_part_is_refused_whole_and_never_sent_again(
    kafka: KafkaCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should librdkafka still take only part of a batch (here its own 1 KiB limit,
    with the log's check before queueing turned off as if it had miscounted), the
    writer refuses the whole batch and does not begin its submissions again: the
    part queued would be stored twice."""
    monkeypatch.setattr(kafka_log, "QUEUE_KBYTES", 1)
    async with open_log(kafka.url(f"log-{uuid.uuid4().hex[:12]}")) as log:
        assert isinstance(log, kafka_log.KafkaLog)
        log._queue_bytes = 1 << 30  # the check before queueing lets every batch through
        answers: dict[int, list[Event] | BaseException] = {}
        writer = GroupCommitWriter(log, lambda events: None)
        for index, size in enumerate((100, 1000)):  # the first fits, the second not
            writer.submit_nowait(
                [NewEvent("t", bytes([65 + index]) * size)],
                lambda result, i=index: answers.__setitem__(i, result),
            )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            await writer.wait_idle()
            # Kafka keeps this producer's order: a second copy would come before this
            later = await writer.submit([NewEvent("t", b"later")])
            writer.close()
        stored = (await log.read(0, limit=100)).events
        assert [e.payload for e in stored] == [b"A" * 100, b"later"]  # the part queued, once
        assert stored[1].offset == later[0].offset
        assert all(isinstance(answers[i], BatchPartlyQueuedError) for i in (0, 1))
