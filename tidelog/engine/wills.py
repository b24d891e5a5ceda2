"""Pending wills: will messages waiting for their delay, durable across restarts.

When a client with a will goes away without a normal DISCONNECT, the protocol
layer hands the will to :meth:`WillStore.set` with the delay still to wait
(MQTT 5 Will Delay Interval, bounded by the session expiry); a client that
comes back in time cancels it (:meth:`WillStore.cancel`). A will with a delay
is a *pending will*: it is kept in the log's ``wills`` state namespace (key:
the client id; value: the will as a record of :mod:`tidelog.storage.records`
whose timestamp is the time it is due on the broker's clock, in ms), so a
broker that is stopped or killed before the delay ran out publishes it after it
restarts: at its due time, or at once if that has passed.

Time is the broker's clock (:attr:`tidelog.engine.Broker.clock`, the wall clock
unless a test gives another): a will is due when that clock reaches its due
time. A waiting will re-reads the clock at least every ``recheck`` seconds, so
a clock that jumps (a test's ``ManualClock``) is noticed that soon.

Durability: :meth:`WillStore.set` is synchronous (the protocol layer calls it
while closing a connection), so the will is stored by the state writer's next
transaction, milliseconds later; a crash inside that window loses it. Once
published, the stored entry is deleted; a crash between the publish and that
delete publishes the will again after the restart (at least once, never lost).
A clean shutdown keeps pending wills stored (they are published after the
restart); wills of clients still connected at shutdown are not pending and are
not sent (docs/mqtt.md).

On a shared log (a cluster, docs/cluster.md) a connected client's will is also
*armed*: stored in the ``wills.armed`` namespace while it is connected
(:meth:`WillStore.arm`, dropped by :meth:`WillStore.disarm` when the connection
ends on its node), so that if the node dies, the node that takes over
(:meth:`WillStore.adopt`) publishes it after its delay.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from tidelog.engine.state_writer import UNREADABLE, StateWriter, report_unreadable
from tidelog.errors import TidelogError
from tidelog.storage import EventLog, NewEvent
from tidelog.storage.base import Clock, wall_clock_ms
from tidelog.storage.records import decode_record, encode_record

NAMESPACE = "wills"
ARMED = "wills.armed"
"""Shared logs: the wills of connected clients (see :meth:`WillStore.arm`)."""
log = logging.getLogger(__name__)


class WillStore:
    """The broker's pending wills: a task per will, each stored until it is published."""

    def __init__(
        self,
        log: EventLog,
        writer: StateWriter,
        nursery: trio.Nursery,
        publish: Callable[[list[NewEvent]], Awaitable[Any]],
        clock: Clock = wall_clock_ms,
        recheck: float = 1.0,
    ) -> None:
        self._log = log
        self._clock = clock
        self._recheck = recheck
        self._writer = writer
        self._nursery = nursery
        self._publish = publish
        self._scopes: dict[str, trio.CancelScope] = {}
        self.published = 0

    def __len__(self) -> int:
        return len(self._scopes)

    async def load(self) -> None:
        """Schedule the wills stored by an earlier run (due ones are published at once)."""
        for key, raw in (await self._log.list_state(NAMESPACE)).items():
            self._schedule_stored(key, raw)

    async def adopt(self, keys: set[str], lost_at: int) -> int:
        """Shared log: take over the wills of ``keys`` (clients of a node that died,
        last seen at ``lost_at``): schedule their pending wills this node does not
        already wait for, and turn their armed wills (still connected when the node
        died) into pending ones due their delay after ``lost_at``. Returns how many."""
        adopted = 0
        if not keys:
            return 0
        pending = await self._log.list_state(NAMESPACE)
        for key, raw in pending.items():
            if key in keys and key not in self._scopes:
                adopted += self._schedule_stored(key, raw)
        for key, raw in (await self._log.list_state(ARMED)).items():
            if key not in keys:
                continue
            self._writer.put_nowait(ARMED, {key: None})
            if key in pending or key in self._scopes:
                continue
            try:
                stored = decode_record(0, raw)
            except UNREADABLE as exc:
                report_unreadable(self._log, ARMED, key, exc, "That will is not published.")
                continue
            will = NewEvent(
                stored.topic, stored.payload, stored.qos, stored.retain, stored.properties
            )
            left = (lost_at + stored.timestamp - self._clock()) / 1000
            log.info("will of %r (its node died) on %r due in %.1f s", key, will.topic, left)
            self.set(key, will, max(left, 0.001))  # stored as pending, like any delayed will
            adopted += 1
        return adopted

    def arm(self, key: str, will: NewEvent, delay: float) -> None:
        """Shared log: store a connected client's will (and its delay, in the record's
        timestamp field, ms) for the node that takes over if this one dies."""
        self._writer.put_nowait(ARMED, {key: encode_record(will, int(delay * 1000))})

    def disarm(self, key: str) -> None:
        """The connection ended on its node, which handles the will itself."""
        self._writer.put_nowait(ARMED, {key: None})

    def _schedule_stored(self, key: str, raw: bytes) -> bool:
        """Wait for a stored will (published at once if it is due)."""
        try:
            stored = decode_record(0, raw)
        except UNREADABLE as exc:
            report_unreadable(
                self._log, NAMESPACE, key, exc, "The will of that client is not published."
            )
            return False
        will = NewEvent(stored.topic, stored.payload, stored.qos, stored.retain, stored.properties)
        delay = max(0, stored.timestamp - self._clock()) / 1000
        log.info("pending will of %r on %r loaded, due in %.1f s", key, will.topic, delay)
        self._start(key, will, stored.timestamp, None)
        return True

    def set(self, key: str, will: NewEvent, delay: float) -> None:
        """Publish ``will`` after ``delay`` seconds unless :meth:`cancel` comes first."""
        self.cancel(key)
        record = None
        due = self._clock() + int(delay * 1000)
        if delay > 0:
            record = encode_record(will, due)
            self._writer.put_nowait(NAMESPACE, {key: record})  # before anything can cancel it
        self._start(key, will, due, record)

    def cancel(self, key: str) -> bool:
        """Drop the pending will of ``key``; False if there was none."""
        scope = self._scopes.pop(key, None)
        if scope is None:
            if self._log.shared:  # the will may wait on another node: delete it there too
                self._writer.put_nowait(NAMESPACE, {key: None})
            return False
        scope.cancel()
        self._writer.put_nowait(NAMESPACE, {key: None})
        return True

    def close(self) -> None:
        """Stop every will task; the stored wills stay for the next start."""
        for scope in self._scopes.values():
            scope.cancel()
        self._scopes.clear()

    async def _still_pending(self, key: str) -> bool:
        """On a shared log: whether the will is still stored (no node cancelled or
        published it meanwhile)."""
        try:
            return await self._log.get_state(NAMESPACE, key) is not None
        except TidelogError as exc:
            log.warning("pending will of %r not checked (%s): publishing it", key, exc)
            return True

    def _start(self, key: str, will: NewEvent, due: int, record: bytes | None) -> None:
        scope = trio.CancelScope()
        self._scopes[key] = scope
        self._nursery.start_soon(self._run, key, will, due, record, scope)

    async def _until(self, due: int) -> None:
        """Wait until the broker's clock reaches ``due`` (ms), re-reading it at least
        every ``recheck`` seconds."""
        while (left := due - self._clock()) > 0:
            await trio.sleep(min(left / 1000, self._recheck))

    async def _run(
        self, key: str, will: NewEvent, due: int, record: bytes | None, scope: trio.CancelScope
    ) -> None:
        """Wait until the will is due, publish it, forget it. ``record`` (None if the will
        has no delay or was loaded) was queued for storage by :meth:`set`: putting it
        again waits until it is durable, and logs that it is."""
        with scope:
            if record is not None:
                if scope.cancel_called:  # cancel() came first (and queued its delete)
                    return
                await self._writer.put(NAMESPACE, {key: record})
                delay = max(0, due - self._clock()) / 1000
                log.info("pending will of %r on %r stored, due in %.1f s", key, will.topic, delay)
            await self._until(due)
            if self._scopes.get(key) is scope:
                del self._scopes[key]
            if self._log.shared and not await self._still_pending(key):
                return  # cancelled through another node, or published by one
            try:
                await self._publish([will])
            except TidelogError as exc:
                log.warning("will message for %s on %r not published: %s", key, will.topic, exc)
                return
            self.published += 1
            if key not in self._scopes:  # a newer will has not replaced it
                self._writer.put_nowait(NAMESPACE, {key: None})
