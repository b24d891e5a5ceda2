"""Retained messages: the latest retained event per topic, durable.

An event published with ``retain`` replaces the topic's retained message; one
with an empty payload clears it (MQTT 3.3.1.3). The map lives in memory (it is
what new subscriptions are served from) and is persisted in the log's
``retained`` state namespace by a background flush, together with a checkpoint:
the offset up to which the persisted map is complete. After a crash, the
events past the checkpoint are read again from the log and re-applied, so an
acknowledged retained publish is never lost even if its flush was not done.
"""

from __future__ import annotations

import logging
import operator
import struct

import trio

from tidelog.engine.state_writer import UNREADABLE, report_unreadable
from tidelog.errors import StorageError
from tidelog.storage import Event, EventLog, NewEvent
from tidelog.storage.records import decode_record, encode_record
from tidelog.topics import compile_filter

NAMESPACE = "retained"
_CHECKPOINT_KEY = "\x00checkpoint"  # not a valid topic (U+0000), so it cannot collide
_OFFSET = struct.Struct(">Q")
_RETAIN = operator.attrgetter("retain")
log = logging.getLogger(__name__)


def _encode(event: Event) -> bytes:
    record = encode_record(
        NewEvent(event.topic, event.payload, event.qos, True, event.properties, event.provenance),
        event.timestamp,
    )
    return _OFFSET.pack(event.offset) + record


def _decode(raw: bytes) -> Event:
    (offset,) = _OFFSET.unpack_from(raw)
    return decode_record(offset, raw[_OFFSET.size :])


class RetainedStore:
    """Retained messages by topic."""

    def __init__(self, log: EventLog) -> None:
        self._log = log
        self._messages: dict[str, Event] = {}
        self._dirty: dict[str, Event | None] = {}
        self._applied = 0  # every event below this offset has been applied
        self._checkpoint = 0  # the persisted value of _applied

    def __len__(self) -> int:
        return len(self._messages)

    async def load(self, log_end: int) -> None:
        """Load the persisted map and re-apply events committed after its checkpoint."""
        stored = await self._log.list_state(NAMESPACE)
        raw_checkpoint = stored.pop(_CHECKPOINT_KEY, None)
        checkpoint = _OFFSET.unpack(raw_checkpoint)[0] if raw_checkpoint else 0
        self._messages = {}
        for topic, raw in stored.items():
            try:
                self._messages[topic] = _decode(raw)
            except UNREADABLE as exc:
                report_unreadable(
                    self._log,
                    NAMESPACE,
                    topic,
                    exc,
                    "A retained publish (or an empty one, to clear) on that topic replaces it.",
                )
        position = max(checkpoint, (await self._log.state()).first_offset)
        while position < log_end:
            result = await self._log.read(position, limit=10_000, end=log_end)
            self.apply(result.events)
            position = result.next_offset
        self._applied = log_end
        self._checkpoint = checkpoint
        await self.flush()

    def apply(self, events: list[Event]) -> None:
        """Apply a committed batch (cheap when it holds no retained event: one pass in C
        finds none)."""
        if any(map(_RETAIN, events)):
            for event in events:
                if event.retain:
                    if event.payload:
                        self._messages[event.topic] = event
                        self._dirty[event.topic] = event
                    else:
                        self._messages.pop(event.topic, None)
                        self._dirty[event.topic] = None
        if events:
            self._applied = events[-1].offset + 1

    def get(self, topic: str) -> Event | None:
        return self._messages.get(topic)

    def matching(self, topic_filter: str) -> list[Event]:
        """Retained events whose topic matches ``topic_filter``, oldest first."""
        if "+" not in topic_filter and "#" not in topic_filter:
            event = self._messages.get(topic_filter)
            return [event] if event is not None else []
        matches = compile_filter(topic_filter)
        return sorted(
            (e for topic, e in self._messages.items() if matches(topic)), key=lambda e: e.offset
        )

    async def flush(self) -> None:
        """Persist the changes since the last flush and the checkpoint, in one transaction.

        The checkpoint is written even without changes, so recovery after a crash
        only re-reads what was committed since the last flush."""
        if not self._dirty and self._applied == self._checkpoint:
            return
        applied = self._applied
        dirty, self._dirty = self._dirty, {}
        items: dict[str, bytes | None] = {
            topic: None if event is None else _encode(event) for topic, event in dirty.items()
        }
        items[_CHECKPOINT_KEY] = _OFFSET.pack(applied)
        try:
            await self._log.put_state(NAMESPACE, items)
        except BaseException:
            for topic, event in dirty.items():  # keep them for the next try
                self._dirty.setdefault(topic, event)
            raise
        self._checkpoint = applied

    async def run_flusher(self, every: float) -> None:
        """Flush periodically (a background task of the broker).

        A failed flush (disk full, say) is logged and tried again next time: the
        changes stay pending, and until they are flushed the checkpoint stays
        behind them, so a restart re-applies them from the log."""
        while True:
            await trio.sleep(every)
            try:
                await self.flush()
            except StorageError as exc:
                log.error("retained messages could not be persisted (%s); will retry", exc)
