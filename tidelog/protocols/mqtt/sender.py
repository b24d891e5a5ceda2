"""The outgoing half of the trio shell: pumps, the writer and the session saver.

A :class:`Sender` belongs to one :class:`~tidelog.protocols.mqtt.connection.MQTTConnection`
and starts its tasks in the connection's nursery only when there is work for
them (an idle connection is one task, its reader):

* **pumps**, one per :class:`~tidelog.protocols.mqtt.planner.Source` (the main
  feed, each shared or replay subscription), move deliveries from the feed into
  the planner's bounded ready queue; a pump stops taking while the queue is
  full, so the feed falls behind and later catches up from the log. Nothing per
  connection grows with a slow client. A durable shared subscription's pump
  leases from its consumer group instead, never more than the client's Receive
  Maximum leaves room for, so the other members get the rest.
* the **writer** (:meth:`Sender.kick` starts it) sends the session's control
  packets and as many PUBLISHes as :meth:`Planner.emit
  <tidelog.protocols.mqtt.planner.Planner.emit>` allows in one ``send_all`` per
  wake-up. It ends after its first round if nothing is left and no pump runs
  (a lone CONNACK or PINGRESP).
* the **saver** (persistent sessions, started by the first change to save)
  stores the session, coalesced: at most every ``session_save_interval`` for
  position changes, at once when a QoS 2 ack or a subscription change waits.

Packet boundaries survive a close. A close cancels the writer wherever it is;
the connection then sends a final packet (a DISCONNECT with its reason code),
which must follow whole packets. So on a TCP socket the writer sends its
buffer with the socket's own ``send`` (cancel-safe: a cancelled ``send`` sent
nothing), counting the bytes sent; :meth:`Sender.rest_of_packet` finds the
packet a cancel cut (walking the buffer's fixed headers) and gives its rest,
and the rest of the control packets (acknowledgements) that came before the
PUBLISHes in the buffer, which the connection sends before the final packet. Over TLS or WebSocket a
``send_all`` cut in the middle leaves the stream unusable, and the connection
closes without a final packet. A write cancelled before its send (while the
session is stored for a QoS 2 PUBLISH) puts its control packets back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from tidelog.errors import LogClosedError
from tidelog.protocols.mqtt.planner import Source
from tidelog.protocols.mqtt.session import MQTTSession
from tidelog.protocols.mqtt.wire import rest_of_packet

LEASE_WAIT_SECONDS = 30.0
"""How long one fetch of a durable shared subscription's pump waits for events."""

if TYPE_CHECKING:
    from tidelog.engine.broker import Broker
    from tidelog.engine.fanout import Feed
    from tidelog.protocols.mqtt.settings import MQTTSettings
    from tidelog.traffic import TrafficCounters


class Sender:
    """Moves a session's outgoing bytes and deliveries (see the module docs)."""

    __slots__ = (
        "broker",
        "control_end",
        "core",
        "dirty",
        "guard",
        "nursery",
        "out",
        "pumps",
        "sending",
        "sent",
        "settings",
        "socket",
        "space",
        "stream",
        "traffic",
        "urgent",
        "wake",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        core: MQTTSession,
        broker: Broker,
        settings: MQTTSettings,
        counters: TrafficCounters,
        guard: Callable[[Callable[[], Awaitable[Any]]], Awaitable[None]],
    ) -> None:
        self.stream = stream
        self.core = core
        self.broker = broker
        self.settings = settings
        self.traffic = counters
        self.guard = guard
        """Runs a task, turning its expected endings into the connection's close."""
        self.nursery: trio.Nursery | None = None
        """Where tasks start; None before the session is open and while closing."""
        self.wake: trio.Event | None = None
        """Wakes the writer; exists while the writer task runs."""
        self.space: trio.lowlevel.ParkingLot | None = None
        """Where pumps wait for room in the ready queue (created with the first pump)."""
        self.pumps = 0
        self.sending = False
        """A write is under way (see :meth:`rest_of_packet` for one a close cut)."""
        self.socket = stream.socket if isinstance(stream, trio.SocketStream) else None
        """The TCP socket under ``stream``, written directly to count the bytes sent."""
        self.out = b""
        """The current write's bytes (on ``socket`` only; dropped when sent)."""
        self.sent = 0
        """Bytes of ``out`` sent."""
        self.control_end = 0
        """Bytes of ``out`` taken by control packets (a packet boundary): a cut write
        sends at least these, so no acknowledgement after the cut packet is lost."""
        self.dirty: trio.Event | None = None
        """Set when the session should be saved; None until the saver task starts."""
        self.urgent: trio.Event | None = None

    # -- pumps -------------------------------------------------------------------------

    def start_pump(self, source: Source) -> None:
        """Start the pump of a source unless it runs (the main feed's starts with the
        first subscription: a connection that only publishes never has one)."""
        if source.scope is not None:
            return
        assert self.nursery is not None
        source.scope = trio.CancelScope()
        self.pumps += 1
        if self.space is None:
            self.space = trio.lowlevel.ParkingLot()
        self.nursery.start_soon(self._pump if source.consumer is None else self._lease, source)

    async def _pump(self, source: Source) -> None:
        """Move deliveries from a feed into the planner's bounded ready queue."""
        feed = source.feed
        space = self.space
        assert feed is not None and space is not None
        planner = self.core.planner
        limit = self.settings.pending_deliveries
        try:
            with source.scope:
                while True:
                    while len(planner.ready) >= limit:
                        await space.park()
                    deliveries = await feed.receive(limit)
                    ready = planner.own_ready()
                    ready.extend([(event, subs, source) for event, subs in deliveries])
                    self.kick()
        except LogClosedError:
            return  # the feed was closed: unsubscribed, or the broker is stopping
        finally:
            self.pumps -= 1

    async def _lease(self, source: Source) -> None:
        """A durable shared subscription's pump: lease from the group what the client
        has room for (its Receive Maximum, less what is in flight or queued), wait for
        acknowledgements to free room."""
        consumer = source.consumer
        space = self.space
        assert consumer is not None and space is not None
        planner = self.core.planner
        limit = self.settings.pending_deliveries
        try:
            with source.scope:
                while True:
                    queued = len(planner.ready)
                    room = min(limit - queued, planner.window - len(planner.outstanding) - queued)
                    if room <= 0:
                        await space.park()
                        continue
                    result = await consumer.fetch(source.member, room, LEASE_WAIT_SECONDS)
                    if source.left:  # left while the fetch ran on: give back what it took
                        break
                    if result.events:
                        planner.own_ready().extend([(e, (), source) for e in result.events])
                        self.kick()
        except LogClosedError:
            return  # the broker is stopping
        finally:
            self.pumps -= 1
            if source.left:
                # the subscription ended while this pump was inside a fetch (the leave
                # released the member before the pump unwound): end again whatever
                # the fetch leased since, for another member to take
                consumer.release(source.member)

    def settle(self) -> None:
        """Acknowledge to their groups the durable shared deliveries this connection
        finished (PUBACK, PUBREC, QoS 0 sent, ...): at-least-once like MQTT itself, so
        the acknowledgement is written with the group's next batch, not awaited."""
        for source, offsets, refused in self.core.planner.take_settled():
            if source.consumer is not None:
                if offsets:
                    source.consumer.ack_nowait(offsets)
                if refused:  # too large for this client: for another member
                    source.consumer.give_back(source.member, refused)

    # -- the writer --------------------------------------------------------------------

    def kick(self) -> None:
        """Wake the writer, starting it if it does not run (and the connection is not
        closing: then the connection sends what is queued itself)."""
        wake = self.wake
        if wake is not None:
            wake.set()
        elif self.nursery is not None:
            self.wake = wake = trio.Event()
            wake.set()
            self.nursery.start_soon(self.guard, self._write_loop)

    async def _write_loop(self) -> None:
        """Send what is queued whenever woken: one ``send_all`` per wake-up."""
        stream = self.stream
        core = self.core
        planner = core.planner
        counters = self.traffic
        first = True
        while True:
            wake = self.wake
            assert wake is not None
            await wake.wait()
            self.wake = wake = trio.Event()
            chunks = core.control
            core.control = []
            control = len(chunks)
            more = planner.emit(chunks) if planner.ready else False
            if planner.unsaved_qos2:
                # a QoS 2 message goes out only once its packet identifier is in the
                # stored session: after a crash it is resent with the same identifier
                # (the client still holds it and drops the copy), never as a new one
                planner.unsaved_qos2 = False
                try:
                    await self.save()
                except BaseException:
                    core.control[:0] = chunks[:control]  # the closing connection sends them
                    raise
            if planner.settling is not None:
                self.settle()
            if planner.emitted:
                counters.publishes_sent["mqtt"] += planner.emitted
                planner.emitted = 0
            if chunks:
                data = b"".join(chunks)
                self.sending = True
                if self.socket is None:
                    await stream.send_all(data)
                else:
                    self.control_end = sum(len(chunk) for chunk in chunks[:control])
                    await self._send_counted(data)
                self.sending = False
                counters.bytes_sent["mqtt"] += len(data)
            if self.space is not None:
                self.space.unpark_all()
            if more:
                self.kick()
            elif first and not self.pumps and not core.control and not wake.is_set():
                self.wake = None  # no await since the check: a kick starts a new writer
                return
            first = False

    async def _send_counted(self, data: bytes) -> None:
        """``send_all`` on the TCP socket, keeping :attr:`out` and :attr:`sent` for
        :meth:`rest_of_packet`."""
        socket = self.socket
        assert socket is not None
        self.out, self.sent = data, 0
        try:
            with memoryview(data) as view:
                while self.sent < len(data):
                    with view[self.sent :] as rest:
                        self.sent += await socket.send(rest)
        except OSError as exc:
            raise trio.BrokenResourceError(*exc.args) from exc
        self.out = b""

    def rest_of_packet(self) -> bytes | None:
        """After the writer ended (a close cancels it): the bytes that complete the
        packet it was cut in (``b""`` if it was not cut in one), or None if the
        stream is unusable (a ``send_all`` cut on TLS or WebSocket)."""
        if not self.sending:
            return b""
        if self.socket is None:
            return None
        return rest_of_packet(self.out, self.sent, self.control_end)

    # -- the saver ---------------------------------------------------------------------

    def mark_dirty(self, urgent: bool = False) -> None:
        """Ask the saver to store the session (persistent sessions only); the first
        call starts the saver. While closing, the connection saves anyway."""
        if not self.core.persistent:
            return
        if self.dirty is None or self.urgent is None:
            if self.nursery is None:
                return
            self.dirty = trio.Event()
            self.urgent = trio.Event()
            self.nursery.start_soon(self.guard, self._save_loop)
        self.dirty.set()
        if urgent:
            self.urgent.set()

    async def _save_loop(self) -> None:
        while True:
            assert self.dirty is not None and self.urgent is not None
            await self.dirty.wait()
            if not self.urgent.is_set():
                with trio.move_on_after(self.settings.session_save_interval):
                    await self.urgent.wait()
            self.dirty = trio.Event()
            self.urgent = trio.Event()
            await self.save()

    async def save(self) -> None:
        """Store the session now; then send the acks that waited for it."""
        core = self.core
        feed: Feed | None = core.planner.main.feed
        assert feed is not None
        acks = core.take_saved_acks()
        token = core.snapshot(feed.handled_end, self.broker.end_offset)
        await self.broker.sessions.save(core.session)
        core.saved(acks, token)
