"""Group commit: one writer task turns many callers' appends into few transactions.

Callers hand over *lists* of events (:meth:`GroupCommitWriter.submit` waits for
durability, :meth:`GroupCommitWriter.submit_nowait` calls back instead, so a
protocol adapter needs no task per publish). While one batch is being
committed, new submissions queue up; as soon as the commit ends, the writer
takes everything queued (capped by count and bytes) as the next batch. There is
no linger timer: under light load a batch is one submission and latency is one
commit; under heavy load batches grow by themselves.

A submission that fails validation (invalid topic, record too large) must not
fail the unrelated submissions it was grouped with, so when a grouped append
fails the writer retries each submission alone: only the bad one is refused.

After each successful commit the writer calls ``on_commit(events)`` with the
stored events, in offset order, before handling the next batch: fan-out,
retained messages and statistics hang off that hook.

A log whose appends are network round trips (``EventLog.append_pipeline`` above
1, ``kafka://``) is written with several batches in flight: each is begun
(checked and ordered) as soon as it is taken and reported, with ``on_commit``,
in order once acknowledged (docs/engine.md).
"""

from __future__ import annotations

import bisect
import logging
import operator
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

import attrs
import trio

from tidelog.errors import BatchPartlyQueuedError, LogClosedError
from tidelog.storage import Event, EventLog, NewEvent

log = logging.getLogger(__name__)

_PAYLOAD = operator.attrgetter("payload")
_NOT_RETRIED = (LogClosedError, BatchPartlyQueuedError)
"""Refusals of a grouped append that are not retried one submission at a time."""

Callback = Callable[[list[Event] | BaseException], None]
"""Called once per submission with its stored events, or with the exception that refused it."""


class _Submission:
    __slots__ = ("callback", "events", "payload_bytes", "size")

    def __init__(self, events: Sequence[NewEvent], callback: Callback) -> None:
        self.events = events
        self.callback = callback
        self.payload_bytes = sum(map(len, map(_PAYLOAD, events)))
        self.size = self.payload_bytes + 64 * len(events)


_InFlight = tuple[list[_Submission], Callable[[], Awaitable[list[Event]]], float]
"""A begun append: its submissions, what completes it, when it was begun."""


BATCH_EVENTS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000)
"""Upper bounds of the commit batch size histogram (events)."""
COMMIT_SECONDS_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
"""Upper bounds of the commit latency histogram (seconds; append and fsync)."""


def _buckets(bounds: tuple[float, ...]) -> list[int]:
    return [0] * (len(bounds) + 1)  # the last one is +Inf


@attrs.define
class WriterStatistics:
    """Counters of the writer (for metrics).

    The histograms count commits per bucket (not cumulative; the last bucket
    is past the last bound); they are updated once per commit, never per event.
    """

    batches: int = 0
    events: int = 0
    payload_bytes: int = 0
    """Payload bytes committed."""
    batch_events_histogram: list[int] = attrs.field(factory=lambda: _buckets(BATCH_EVENTS_BUCKETS))
    commit_seconds_histogram: list[int] = attrs.field(
        factory=lambda: _buckets(COMMIT_SECONDS_BUCKETS)
    )
    pending_events: int = 0
    last_batch_events: int = 0
    max_batch_events: int = 0
    commit_seconds_total: float = 0.0
    last_commit_seconds: float = 0.0
    max_commit_seconds: float = 0.0
    failed_submissions: int = 0
    max_in_flight: int = 0
    """Most appends in flight at once (above 1 only on a log with ``append_pipeline``)."""


class GroupCommitWriter:
    """The single writer of a log. Run :meth:`run` in a nursery, then submit."""

    def __init__(
        self,
        log: EventLog,
        on_commit: Callable[[list[Event]], None],
        *,
        max_batch_events: int = 20_000,
        max_batch_bytes: int = 32 * 1024 * 1024,
        max_pending_bytes: int = 128 * 1024 * 1024,
    ) -> None:
        self._log = log
        self._on_commit = on_commit
        self._max_batch_events = max_batch_events
        self._max_batch_bytes = max_batch_bytes
        self._max_pending_bytes = max_pending_bytes
        self._pending: deque[_Submission] = deque()
        self._pending_bytes = 0
        self._work = trio.lowlevel.ParkingLot()
        self._space = trio.lowlevel.ParkingLot()
        self._idle = trio.Event()
        self._idle.set()
        self._closing = False
        self._in_flight = 0
        """Batches begun and not yet acknowledged (``append_pipeline`` above 1)."""
        self._stats = WriterStatistics()
        self.outstanding = 0
        """Events submitted and neither stored nor refused yet (queued or being
        committed): every event submitted now gets an offset below the log's
        dispatched end plus this plus its own submission's length."""

    # -- submitting ------------------------------------------------------------------

    def submit_nowait(self, events: Sequence[NewEvent], callback: Callback) -> None:
        """Queue a list of events; ``callback`` runs on the trio thread once they are
        durable (with the stored events) or refused (with the exception).

        Never blocks. Callers bound their own in-flight work (MQTT receive
        maximum); :meth:`wait_writable` offers back-pressure on top.
        """
        if self._closing:
            raise LogClosedError("the broker is shutting down")
        if not events:
            callback([])
            return
        submission = _Submission(events, callback)
        self.outstanding += len(events)
        self._pending.append(submission)
        self._pending_bytes += submission.size
        self._stats.pending_events += len(events)
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        self._work.unpark_all()

    async def submit(self, events: Sequence[NewEvent]) -> list[Event]:
        """Queue a list of events and wait until they are durable; return them stored."""
        await self.wait_writable()
        done = trio.Event()
        outcome: list[list[Event] | BaseException] = []

        def callback(result: list[Event] | BaseException) -> None:
            outcome.append(result)
            done.set()

        self.submit_nowait(events, callback)
        await done.wait()
        result = outcome[0]
        if isinstance(result, BaseException):
            raise result
        return result

    async def wait_writable(self) -> None:
        """Wait while more than ``max_pending_bytes`` wait to be committed."""
        while self._pending_bytes > self._max_pending_bytes:
            await self._space.park()

    async def wait_idle(self) -> None:
        """Wait until everything submitted so far has been committed (or refused)."""
        await self._idle.wait()

    def close(self) -> None:
        """Refuse new submissions; what is queued still gets committed by :meth:`run`."""
        self._closing = True
        self._work.unpark_all()

    def statistics(self) -> WriterStatistics:
        stats = attrs.evolve(self._stats)
        stats.batch_events_histogram = list(stats.batch_events_histogram)
        stats.commit_seconds_histogram = list(stats.commit_seconds_histogram)
        return stats

    # -- the writer task -------------------------------------------------------------

    async def run(self) -> None:
        """Commit batches until closed and drained."""
        if self._log.append_pipeline > 1:
            await self._run_pipelined(self._log.append_pipeline)
            return
        while True:
            if not self._pending:
                self._idle.set()
                if self._closing:
                    return
                await self._work.park()
                continue
            batch = self._take_batch()
            await self._commit(batch)

    async def _run_pipelined(self, depth: int) -> None:
        """A log that takes several appends in flight (``kafka://``): each batch is
        begun (checked and ordered) as soon as it is taken, while up to ``depth - 1``
        earlier ones still wait for their acknowledgement; outcomes are reported in
        order by :meth:`_finish`. While ``depth`` are in flight, submissions queue
        up and the next batch grows, as with one at a time."""
        # in flight: one awaited by _finish, depth - 2 in the channel, one being sent
        send, receive = trio.open_memory_channel[_InFlight](depth - 2)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._finish, receive)
            async with send:
                while True:
                    if not self._pending:
                        if not self._in_flight:
                            self._idle.set()
                        if self._closing:
                            return
                        await self._work.park()
                        continue
                    begun = self._begin(self._take_batch())
                    self._in_flight += len(begun)  # all counted before _finish sees one
                    stats = self._stats
                    stats.max_in_flight = max(stats.max_in_flight, self._in_flight)
                    for entry in begun:
                        await send.send(entry)

    def _begin(self, batch: list[_Submission]) -> list[_InFlight]:
        """Begin appending ``batch``; a refused batch of several submissions is begun
        again one submission at a time, so only the bad one is refused. A refusal is
        in flight too (its finish raises), so :meth:`_finish` reports it after the
        batches begun before it, in submission order. A batch the log took in part
        (:class:`BatchPartlyQueuedError`) is refused whole: begun again in parts, the
        records already taken would be stored twice."""
        started = time.perf_counter()
        try:
            return [(batch, self._log.begin_append(_events(batch)), started)]
        except Exception as exc:
            if len(batch) > 1 and not isinstance(exc, _NOT_RETRIED):
                return [begun for submission in batch for begun in self._begin([submission])]
            return [(batch, _raise(exc), started)]

    async def _finish(self, receive: trio.MemoryReceiveChannel[_InFlight]) -> None:
        """Wait for each begun append in order; report its outcome to its submitters.
        A failure here (Kafka did not acknowledge) refuses the whole batch: retrying
        parts would put them behind batches begun since."""
        async with receive:
            async for batch, finish, started in receive:
                try:
                    stored = await finish()
                except Exception as exc:
                    self._in_flight -= 1
                    self._refuse(batch, exc)
                else:
                    self._in_flight -= 1
                    self._stored(batch, stored, time.perf_counter() - started)
                if not self._in_flight and not self._pending:
                    self._idle.set()

    def _take_batch(self) -> list[_Submission]:
        batch = [self._pending.popleft()]
        count, size = len(batch[0].events), batch[0].size
        while self._pending:
            nxt = self._pending[0]
            if (
                count + len(nxt.events) > self._max_batch_events
                or size + nxt.size > self._max_batch_bytes
            ):
                break
            self._pending.popleft()
            batch.append(nxt)
            count += len(nxt.events)
            size += nxt.size
        self._pending_bytes -= size
        self._stats.pending_events -= count
        self._space.unpark_all()
        return batch

    async def _commit(self, batch: list[_Submission]) -> None:
        started = time.perf_counter()
        try:
            stored = await self._log.append(_events(batch))
        except Exception as exc:  # refused: report it to the submitters, keep writing
            if len(batch) > 1 and not isinstance(exc, _NOT_RETRIED):
                for submission in batch:  # find the bad one(s); the others commit
                    await self._commit([submission])
                return
            self._refuse(batch, exc)
            return
        self._stored(batch, stored, time.perf_counter() - started)

    def _refuse(self, batch: list[_Submission], exc: BaseException) -> None:
        self._stats.failed_submissions += len(batch)
        self.outstanding -= sum(len(s.events) for s in batch)
        for submission in batch:
            _call(submission.callback, exc)

    def _stored(self, batch: list[_Submission], stored: list[Event], elapsed: float) -> None:
        """Count a committed batch, answer its submitters, then ``on_commit``."""
        self.outstanding -= len(stored)
        stats = self._stats
        stats.batches += 1
        stats.events += len(stored)
        stats.payload_bytes += sum(s.payload_bytes for s in batch)
        stats.batch_events_histogram[bisect.bisect_left(BATCH_EVENTS_BUCKETS, len(stored))] += 1
        stats.commit_seconds_histogram[bisect.bisect_left(COMMIT_SECONDS_BUCKETS, elapsed)] += 1
        stats.last_batch_events = len(stored)
        stats.max_batch_events = max(stats.max_batch_events, len(stored))
        stats.commit_seconds_total += elapsed
        stats.last_commit_seconds = elapsed
        stats.max_commit_seconds = max(stats.max_commit_seconds, elapsed)
        if len(batch) == 1:
            _call(batch[0].callback, stored)
        else:
            position = 0
            for submission in batch:
                end = position + len(submission.events)
                _call(submission.callback, stored[position:end])
                position = end
        self._on_commit(stored)


def _raise(exc: Exception) -> Callable[[], Awaitable[list[Event]]]:
    """The finish of an append refused when begun."""

    async def finish() -> list[Event]:
        raise exc

    return finish


def _events(batch: list[_Submission]) -> Sequence[NewEvent]:
    return batch[0].events if len(batch) == 1 else [e for s in batch for e in s.events]


def _call(callback: Callback, result: list[Event] | BaseException) -> None:
    try:
        callback(result)
    except Exception:  # a broken callback must not stop the writer
        log.exception("publish callback failed")
