"""The group-commit writer with appends in flight (``EventLog.append_pipeline``) on a
small real log, the memory log held back on demand: answers keep submission order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import trio
import trio.testing

from tidelog.engine.group_commit import GroupCommitWriter
from tidelog.errors import RecordTooLargeError
from tidelog.storage import Event, LogOptions, NewEvent
from tidelog.storage.common import encode_batch
from tidelog.storage.memory import MemoryLog


class HeldLog(MemoryLog):
    """A memory log that begins appends like ``kafka://`` (checked at once, several in
    flight) and stores each only once :attr:`release` is set: an acknowledgement
    that is slow to come."""

    append_pipeline = 2

    def __init__(self, options: LogOptions) -> None:
        super().__init__(options)
        self.release = trio.Event()

    def begin_append(self, events: Sequence[NewEvent]) -> Callable[[], Awaitable[list[Event]]]:
        encode_batch(events, 0, self._options.max_record_bytes)  # refuses a too large record

        async def finish() -> list[Event]:
            await self.release.wait()
            return await self.append(events)

        return finish


async def test_a_refusal_at_begin_is_answered_after_the_append_in_flight_before_it() -> None:
    log = HeldLog(LogOptions(max_record_bytes=1024))
    answers: list[tuple[str, list[Event] | BaseException]] = []
    writer = GroupCommitWriter(log, lambda events: None)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run)
        writer.submit_nowait([NewEvent("t", b"p1")], lambda r: answers.append(("p1", r)))
        await trio.testing.wait_all_tasks_blocked()  # p1 begun, waiting for its "ack"
        writer.submit_nowait([NewEvent("t", b"x" * 4096)], lambda r: answers.append(("p2", r)))
        writer.submit_nowait([NewEvent("t", b"p3")], lambda r: answers.append(("p3", r)))
        await trio.testing.wait_all_tasks_blocked()
        assert answers == []  # p2's refusal waits for p1's outcome (MQTT PUBACK order)
        log.release.set()
        await writer.wait_idle()
        writer.close()
    assert [name for name, _ in answers] == ["p1", "p2", "p3"]
    assert isinstance(answers[1][1], RecordTooLargeError)
    assert [e.payload for e in (await log.read(0)).events] == [b"p1", b"p3"]
