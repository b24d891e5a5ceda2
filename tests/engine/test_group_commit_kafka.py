"""The group-commit writer with several appends in flight, on a real ``kafka://`` log
(``EventLog.append_pipeline``): order, answers and refusals as with one at a time."""

from __future__ import annotations

import uuid

import trio

from tests.kafka_broker import KafkaCluster
from tidelog.engine.group_commit import GroupCommitWriter
from tidelog.errors import RecordTooLargeError
from tidelog.storage import Event, NewEvent, open_log


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
