"""One MQTT client connection: the trio shell around the sans-IO session.

The path of a message, as the code runs it
------------------------------------------
::

    socket --receive_some--> Decoder.feed (one call per read)
           --> MQTTSession.receive (packets -> acks queued + PublishRequest)
           --> Broker.publish_nowait (one call per read, one callback)
           ... engine: log append, commit, fan-out to feeds ...
           --> MQTTSession.durable (the callback: PUBACK/PUBREC queued)
    feed   --> pump --> Planner.ready --> writer: Planner.emit --> send_all
                                          (one send_all per wake-up: acks and PUBLISHes)

This module and :mod:`~tidelog.protocols.mqtt.sender` are the trio shell, the
only MQTT modules that do I/O; the protocol is in the modules named above (the
list and the whole path are in docs/architecture.md).

A :class:`MQTTConnection` owns its stream (TCP, TLS or the WebSocket adapter) from
accept to close, the way hypercorn's ``tcp_server`` does: timeouts with cancel
scopes, ``aclose`` in ``finally``, no exception ever escapes to the listener.

States: *connecting* (the first packet must be CONNECT within
``connect_timeout``), *connected* (the tasks below run), *closing* (a final
DISCONNECT if the stream is still usable, the session saved or deleted, the
will handed to the broker), *closed*.

While connected, a connection runs in one nursery. Only the reader (the
nursery body: socket -> decoder -> session -> engine) runs from the start; the
pumps, the writer and the saver are the :class:`~tidelog.protocols.mqtt.sender.Sender`'s
and start when there is work for them (an idle connection is one task, which is
most of what 10,000 idle connections cost).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import trio

from tidelog.engine.fanout import Feed
from tidelog.engine.sessions import Session
from tidelog.errors import LogClosedError, TidelogError
from tidelog.logging_setup import set_connection_context
from tidelog.protocols.mqtt import admission
from tidelog.protocols.mqtt.decoder import Decoder
from tidelog.protocols.mqtt.errors import MQTTProtocolError
from tidelog.protocols.mqtt.packets import Connect, Packet, Subscribe
from tidelog.protocols.mqtt.reason_codes import ReasonCode
from tidelog.protocols.mqtt.replies import Close, error_reply
from tidelog.protocols.mqtt.sender import Sender
from tidelog.protocols.mqtt.session import MQTTSession, PublishRequest, Request
from tidelog.protocols.mqtt.settings import ConnectInfo
from tidelog.protocols.mqtt.subscriptions import Subscriptions
from tidelog.security import Principal
from tidelog.storage import Event

if TYPE_CHECKING:
    from tidelog.protocols.mqtt.server import MQTTServer

log = logging.getLogger(__name__)

RECEIVE_BYTES: Final = 65_536
LINGER_SECONDS: Final = 1.0
"""How long a connection that sent a final CONNACK or DISCONNECT reads (and drops)
what the client still sends, before closing (at most ``close_timeout``)."""
STREAM_ERRORS: Final = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
"""What a broken or closed transport raises."""

__all__ = ["STREAM_ERRORS", "Close", "MQTTConnection"]


def _asks_for_link(connect: Connect) -> bool:
    """A CONNECT (MQTT 5) with the user property ``tidelog-link: 1`` opens a mesh link."""
    return connect.protocol_level == 5 and (
        ("tidelog-link", "1") in connect.properties.user_properties
    )


class MQTTConnection:
    """One client connection; :meth:`run` serves it until it closes."""

    # Slots: an idle broker holds thousands of these. "__dict__" stays so that an
    # attribute added later still works.
    __slots__ = (
        "__dict__",
        "_close",
        "_connect",
        "_done",
        "_early",
        "_early_error",
        "_finished",
        "_linger",
        "_nursery",
        "_publish_idle",
        "_publishing",
        "_scope",
        "_slot",
        "_transport_principal",
        "broker",
        "client_id",
        "connected_at",
        "core",
        "decoder",
        "level",
        "peer",
        "sender",
        "server",
        "settings",
        "stream",
        "subs",
        "traffic",
        "transport",
    )

    def __init__(
        self,
        server: MQTTServer,
        stream: trio.abc.Stream,
        transport: str,
        peer: str,
        principal: Principal | None = None,
    ):
        self.server = server
        self.broker = server.broker
        self.settings = server.settings
        self.stream = stream
        self.transport = transport
        self.peer = peer
        self.decoder = Decoder(max_packet_size=self.settings.max_packet_size)
        self.traffic = server.traffic
        self.level = 4
        self.client_id = ""
        self.connected_at = time.time()
        """When the stream was accepted (seconds since the epoch)."""
        self.core: MQTTSession | None = None
        """The session state machine, from CONNACK on."""
        self.subs: Subscriptions | None = None
        self._finished: trio.Event | None = None
        """What :meth:`take_over` waits on (created by it: most connections end unwaited)."""
        self._done = False
        self._linger = False
        """Set once a final CONNACK or DISCONNECT was sent: close gracefully."""
        self._transport_principal = principal
        self._slot: str | None = None
        self._connect: Connect | None = None
        self._armed_will: str | None = None
        """Shared log: the key of the will armed for the cluster (``Broker.arm_will``)."""
        self._early: list[Packet] | None = None
        """Packets that came in the CONNECT's read after it."""
        self._early_error: MQTTProtocolError | None = None
        self._scope: trio.CancelScope | None = None
        """The connected phase's nursery scope; cancelling it stops the connection."""
        self._close: Close | None = None
        self.sender: Sender | None = None
        """Pumps, writer and saver, from CONNACK on."""
        self._nursery: trio.Nursery | None = None
        self._publishing = 0
        self._publish_idle: trio.Event | None = None
        """Unset while publish requests await the engine (None: none ever did)."""

    def __repr__(self) -> str:
        return f"<MQTT connection {self.client_id or '?'} from {self.peer} over {self.transport}>"

    @property
    def owner(self) -> str | None:
        """The user the connection is (``Access.owner``); None before it is admitted."""
        return self.core.access.owner if self.core is not None else None

    @property
    def persistent(self) -> bool:
        """Whether the session outlives the connection."""
        return self.core is not None and self.core.persistent

    @property
    def _feed(self) -> Feed | None:
        return self.subs.feed if self.subs is not None else None

    @property
    def _dirty(self) -> trio.Event | None:
        return self.sender.dirty if self.sender is not None else None

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it closes; never raises (errors are logged)."""
        set_connection_context(protocol=f"mqtt/{self.transport}", remote=self.peer)
        try:
            connect = await self._receive_connect()
            if connect is not None and await self._admit(connect):
                acceptor = self.server.link_acceptor
                if acceptor is not None and _asks_for_link(connect):
                    assert self.core is not None
                    self._linger = True
                    await acceptor(
                        self.stream, self.decoder, connect, self.core.access, self._early or []
                    )
                else:
                    await self._serve(connect)
        except STREAM_ERRORS as exc:
            log.debug("%r: connection lost: %s", self, exc)
        except Exception:
            log.exception("%r: unexpected error", self)
        finally:
            # the session is saved by now: a newer connection taking it over need
            # not wait for the graceful close
            self._done = True
            if self._finished is not None:
                self._finished.set()
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(self.settings.close_timeout),
                contextlib.suppress(*STREAM_ERRORS),  # it may have broken already
            ):
                if self._linger:
                    await self._drain()
                await self.stream.aclose()
            if self._slot is not None:
                self.server.security.connections.release(self._slot)

    async def take_over(self) -> None:
        """Close this connection because a newer one has the same client id; returns
        once its session is saved (so the newer connection resumes from it)."""
        await self._stop_and_wait(
            Close(ReasonCode.SESSION_TAKEN_OVER, "another connection took the session")
        )

    def describe(self) -> dict[str, Any]:
        """What an operator sees of this client (``GET /v1/clients``): identity,
        transport, level, subscriptions and in-flight deliveries. Read on request,
        nothing is kept per message for it."""
        core = self.core
        connect = self._connect
        return {
            "client_id": self.client_id,
            "owner": self.owner,
            "protocol": "mqtt",
            "protocol_level": self.level,
            "transport": self.transport,
            "address": self.peer,
            "connected_at": int(self.connected_at * 1000),
            "keep_alive": connect.keep_alive if connect is not None else None,
            "persistent": self.persistent,
            "subscriptions": sorted(core.session.subscriptions) if core is not None else [],
            "inflight": len(core.planner.outstanding) if core is not None else 0,
        }

    async def disconnect(self) -> None:
        """Close the connection on an administrator's request (MQTT 5 clients get
        DISCONNECT 0x98, Administrative action; the will is sent as for any close
        the client did not ask for); returns once its session is saved."""
        await self._stop_and_wait(
            Close(ReasonCode.ADMINISTRATIVE_ACTION, "disconnected by an administrator")
        )

    async def _stop_and_wait(self, close: Close) -> None:
        self._stop(close)
        if not self._done:
            if self._finished is None:
                self._finished = trio.Event()
            await self._finished.wait()

    def _stop(self, close: Close) -> None:
        if self._close is None:
            self._close = close
        if self._scope is not None:
            self._scope.cancel()

    async def _send_direct(self, data: bytes) -> None:
        """Send a final packet (a CONNACK refusing the client, a DISCONNECT, the acks
        before it) and arrange a graceful close."""
        if data:
            with trio.move_on_after(self.settings.close_timeout):
                await self.stream.send_all(data)
                self._linger = True

    async def _drain(self) -> None:
        """A graceful close after a final packet: shut down writing, then read and drop
        what the client still sends, briefly, until it closes too. Closing a socket
        with unread input makes the kernel send a reset, which can destroy the final
        packet in the client's receive buffer before the client has read it (§4.13:
        the reason code must reach the client)."""
        stream = self.stream
        if isinstance(stream, trio.abc.HalfCloseableStream):
            await stream.send_eof()
        with trio.move_on_after(min(LINGER_SECONDS, self.settings.close_timeout)):
            while await stream.receive_some(RECEIVE_BYTES):
                pass

    async def _receive_connect(self) -> Connect | None:
        with trio.move_on_after(self.settings.connect_timeout):
            if isinstance(self.stream, trio.SSLStream):
                await self.stream.do_handshake()
            while True:
                data = await self.stream.receive_some(RECEIVE_BYTES)
                if not data:
                    return None
                self.traffic.bytes_received["mqtt"] += len(data)
                try:
                    packets = self.decoder.feed(data)
                except MQTTProtocolError as exc:
                    if not exc.packets:
                        self.traffic.malformed_packets["mqtt"] += 1
                        log.debug("%r: bad CONNECT: %s", self, exc)
                        await self._send_direct(error_reply(exc))
                        return None
                    # a valid CONNECT, then a bad packet in the same read: connect
                    # first, then answer the error as any later one
                    packets = list(exc.packets)
                    self._early_error = exc
                if packets:
                    connect = packets[0]
                    assert isinstance(connect, Connect)  # the decoder admits nothing else first
                    if len(packets) > 1:
                        self._early = packets[1:]
                    return connect
        log.debug("%r: no CONNECT within %ss", self, self.settings.connect_timeout)
        return None

    async def _admit(self, connect: Connect) -> bool:
        """Authenticate; False if refused (the refusing CONNACK sent)."""
        self._connect = connect
        self.level = connect.protocol_level
        self.client_id = admission.client_id_of(connect)
        set_connection_context(client_id=self.client_id)
        info = ConnectInfo(connect, self.client_id, self.transport, self.peer)
        await self.broker.sessions.refresh(self.client_id)  # saved on another node (kafka://)
        result = await admission.admit(
            self.server, info, self.stream, self._transport_principal, self
        )
        self._slot = result.slot
        if result.code != ReasonCode.SUCCESS or result.access is None:
            log.info("%r: CONNECT refused: %s", self, ReasonCode(result.code).name)
            self.traffic.rejected_connections["mqtt"] += 1
            await self._send_direct(admission.refusal(result.code, self.level))
            return False
        limits = admission.negotiate(connect, self.settings)
        security = self.server.security
        core = self.core = MQTTSession(
            Session(self.client_id, owner=result.access.owner),
            self.level,
            result.access,
            limits,
            self.settings,
            names=security.limits,
            quotas=security.quotas,
        )
        core.planner.clock = self.broker.clock
        sender = self.sender = Sender(
            self.stream, core, self.broker, self.settings, self.traffic, self._guard
        )
        core.wake = sender.kick
        core.dirty = sender.mark_dirty
        core.stop = self._stop
        self.subs = Subscriptions(
            self.broker,
            core,
            self.client_id,
            security.config.max_subscriptions,
            sender.start_pump,
            security.limits,
            security.quotas,
        )
        self.subs.bridge = connect.bridge
        return True

    async def _serve(self, connect: Connect) -> None:
        try:
            # an idle connection is one task, the reader: the writer, the saver and
            # the pumps start when there is something for them to do
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                if self._close is not None:
                    nursery.cancel_scope.cancel()
                await self._open_session(connect)
                sender, subs = self.sender, self.subs
                assert sender is not None and subs is not None
                self._nursery = sender.nursery = nursery
                try:
                    subs.start()
                    sender.kick()  # the CONNACK
                    try:
                        await self._read_loop()
                    except _ENDINGS as exc:
                        self._stop(_closing(exc))
                    nursery.cancel_scope.cancel()
                finally:
                    self._nursery = sender.nursery = None  # closing: nothing new starts
        finally:
            with trio.CancelScope(shield=True):
                await self._finish()

    async def _open_session(self, connect: Connect) -> None:
        """Take the client id over from an older connection, resume or start the
        session, queue the CONNACK."""
        core, subs = self.core, self.subs
        assert core is not None and subs is not None
        broker = self.broker
        client_id = self.client_id
        await self.server.claim(client_id, self)
        expiry = admission.session_expiry(connect)
        sessions = broker.sessions
        stored = sessions.get(client_id)
        if stored is not None and connect.clean_start:
            await sessions.delete(client_id)
            stored = None
        session = core.session = stored if stored is not None else core.session
        session.owner = core.access.owner  # admission checked it; an old one is claimed
        session.expiry_interval = expiry
        session.disconnected_at = None
        core.set_persistent(expiry > 0)
        if stored is not None or core.persistent:
            subs.main_feed(session.position if stored is not None else None)
        # else the feed is opened by the first subscription (many clients only publish)
        present = stored is not None
        core.control.append(admission.connack(connect, self.settings, client_id, present))
        if stored is not None:
            subs.restore()
            core.restore()
            await subs.load_shared_inflight()
            await self._recover_inbound()
        if core.persistent:
            token = core.snapshot_inbound()
            await sessions.save(session)
            core.saved(token=token)
        elif stored is not None:
            await sessions.delete(client_id)  # it ends with this connection
        if broker.shared and connect.will is not None:  # for the cluster, if this node dies
            lost = Close(ReasonCode.UNSPECIFIED_ERROR, "the node died", will=True)
            armed = core.will(connect.will, lost)
            if armed is not None:
                self._armed_will = broker.arm_will(client_id, *armed)
        log.info(
            "connected (MQTT level %d, session present %s)", self.level, present and self.level >= 4
        )

    async def _recover_inbound(self) -> None:
        """A session left by a crash: the QoS 2 PUBLISHes its client sent after the
        session was last stored are in the log, not in the session; read them back
        (a bounded range) so that their resends are not stored twice."""
        core = self.core
        assert core is not None
        log_end = self.broker.sessions.take_unclean(self.client_id)
        if log_end is None:
            return
        span = core.recovery_range(log_end)
        if span is None:
            return
        events = await self.broker.published_by(self.client_id, *span)
        recovered = core.recover(events)
        if recovered:
            log.info(
                "recovered %d inbound QoS 2 packet identifiers from the log after a crash",
                len(recovered),
            )

    async def _finish(self) -> None:
        """Closing: final packet, wait for publishes in flight, save the session, will."""
        close = self._close or Close(
            ReasonCode.SERVER_SHUTTING_DOWN, "the server is shutting down", will=False
        )
        core = self.core
        with trio.move_on_after(self.settings.close_timeout):
            # the writer may have been cut in the middle of a packet: complete it
            # first (None: the stream is unusable, see Sender.rest_of_packet)
            rest = self.sender.rest_of_packet() if self.sender is not None else None
            if core is not None and rest is not None:
                pending, core.control = core.control, []  # e.g. the CONNACK, acks
                with contextlib.suppress(*STREAM_ERRORS):  # the final packet is a courtesy
                    final = close.final_packet(self.level, core.planner.max_packet)
                    await self._send_direct(b"".join((rest, *pending, final)))
            if self._publish_idle is not None:
                await self._publish_idle.wait()
        try:
            with trio.move_on_after(self.settings.close_timeout):
                await self._end_session(close)
        finally:
            if self.subs is not None:
                self.subs.release_quota()
            # only now: a newer connection with this client id waits for this one
            # to have saved the session and handed over its will
            self.server.release(self.client_id, self)
        log.info("disconnected: %s (%s)", close.message, close.code.name)

    async def _end_session(self, close: Close) -> None:
        broker = self.broker
        client_id = self.client_id
        core, subs = self.core, self.subs
        assert core is not None and subs is not None
        subs.close_shared_and_replays()
        session = core.session
        try:
            if core.persistent:
                feed = subs.feed
                assert feed is not None
                token = core.snapshot(feed.handled_end, broker.end_offset)
                session.disconnected_at = broker.clock()
                await broker.sessions.save(session)
                core.saved(token=token)
            elif broker.sessions.get(client_id) is session:
                await broker.sessions.delete(client_id)
        except TidelogError as exc:
            log.warning("%r: session not saved: %s", self, exc)
        if subs.feed is not None:
            subs.feed.close()
        connect = self._connect
        if self._armed_will is not None:
            broker.disarm_will(self._armed_will)  # this node handles its end: set or drop it
            self._armed_will = None
        will = core.will(connect.will, close) if connect is not None else None
        if will is not None and not broker.closed:
            event, delay = will
            if delay:
                broker.set_will(client_id, event, delay)
            else:  # now, so that a newer connection's cancel_will cannot race with it
                broker.publish_nowait([event], partial(_will_published, client_id))

    async def _guard(self, body: Any) -> None:
        """Run a task; expected endings become a Close, which stops the connection."""
        try:
            await body()
        except _ENDINGS as exc:
            self._stop(_closing(exc))

    # -- reading: socket -> decoder -> session -> engine ----------------------------------

    async def _read_loop(self) -> None:
        core = self.core
        assert core is not None
        now = trio.current_time
        if self._early is not None:
            early, self._early = self._early, None
            await self._handle(early, now())
        if self._early_error is not None:
            raise Close.from_error(self._early_error)
        receive = self.stream.receive_some
        session_receive = core.receive
        assert self.sender is not None
        kick = self.sender.kick
        decoder = self.decoder
        broker = self.broker
        counters = self.traffic
        # One cancel scope for the whole loop, armed only while waiting for data:
        # moving a deadline costs less than a scope per read (and nothing without
        # a keep alive).
        keep_alive = core.timeout != math.inf
        started = 0.0
        with trio.CancelScope() as scope:
            while not core.disconnected:
                if keep_alive:
                    started = now()  # the session's deadline counts from the wait's start
                    scope.deadline = core.expect_packets(started)
                data = await receive(RECEIVE_BYTES)
                if keep_alive:
                    scope.deadline = math.inf
                if not data:
                    raise Close(ReasonCode.UNSPECIFIED_ERROR, "connection closed", reply=False)
                counters.bytes_received["mqtt"] += len(data)
                try:
                    packets = decoder.feed(data)
                except MQTTProtocolError as exc:
                    counters.malformed_packets["mqtt"] += 1
                    if exc.packets:
                        await self._handle(list(exc.packets), now())
                    raise Close.from_error(exc) from None
                counters.packets_received["mqtt"] += len(packets)
                # inline _handle: a read of acks or PINGREQs awaits nothing here
                requests = session_receive(packets, started)
                if requests:
                    await self._carry_out(requests)
                if core.control or core.planner.ready:
                    # a read of PUBLISHes queues nothing yet (their acks wait for the
                    # commit): no writer task spawned and ended for nothing
                    kick()
                if core.error is not None or core.disconnected:
                    self._ended()
                await broker.wait_writable()
        if scope.cancelled_caught:
            raise Close(ReasonCode.KEEP_ALIVE_TIMEOUT, "keep alive timeout")

    async def _handle(self, packets: list[Packet], now: float) -> None:
        """One read: the session's requests carried out in order, then one wake-up
        (what :meth:`_read_loop` does inline)."""
        core, sender = self.core, self.sender
        assert core is not None and sender is not None
        try:
            requests = core.receive(packets, now)
            if requests:
                await self._carry_out(requests)
        finally:
            sender.kick()
        self._ended()

    async def _carry_out(self, requests: Sequence[Request]) -> None:
        """The session's engine requests, in order."""
        subs, core = self.subs, self.core
        assert subs is not None and core is not None
        for request in requests:
            if type(request) is PublishRequest:
                if core.persistent:
                    await self._fence_qos2(request)
                self._submit(request)
            elif type(request) is Subscribe:
                await subs.on_subscribe(request, self.server.sys_messages)
            else:
                subs.on_unsubscribe(request)  # type: ignore[arg-type]

    async def _fence_qos2(self, request: PublishRequest) -> None:
        """Before QoS 2 PUBLISHes of a persistent session go to the engine: store the
        session first if the stored one would not lead a recovery to them (see
        :mod:`~tidelog.protocols.mqtt.stored_session`, ``rx_end``). Costs a store
        only for the first QoS 2 PUBLISH after a quiet spell, or when the log moved
        on by ``RX_WINDOW`` events since the session was stored."""
        core, sender, broker = self.core, self.sender, self.broker
        assert core is not None and sender is not None
        if not any(entry >> 16 == 2 for entry in request.meta):
            return
        count = len(request.events)
        while core.needs_rx_fence(broker.append_horizon, count):
            await sender.save()

    def _ended(self) -> None:
        """After a read: raise the client's protocol error, or note its DISCONNECT."""
        core = self.core
        assert core is not None
        if core.error is not None:
            raise core.error
        if core.disconnected and self._close is None:
            self._close = core.close

    def _submit(self, request: PublishRequest) -> None:
        self.traffic.publishes_received["mqtt"] += len(request.events)
        try:
            self.broker.publish_nowait(request.events, partial(self._on_durable, request.meta))
        except LogClosedError:
            raise Close(
                ReasonCode.SERVER_SHUTTING_DOWN, "the server is shutting down", will=False
            ) from None
        self._publishing += 1
        if self._publish_idle is None or self._publish_idle.is_set():
            self._publish_idle = trio.Event()

    def _on_durable(self, meta: list[int], result: list[Event] | BaseException) -> None:
        """The engine's callback for one read's PUBLISHes: durable, or refused."""
        self._publishing -= 1
        if not self._publishing:
            assert self._publish_idle is not None
            self._publish_idle.set()
        if isinstance(result, BaseException):
            self.traffic.rejected_packets["mqtt"] += len(meta)
        assert self.core is not None
        self.core.durable(meta, result)

    # -- $SYS ---------------------------------------------------------------------------

    def send_sys(self, messages: dict[str, bytes], *, retain: bool) -> None:
        """Queue ``$SYS`` messages (QoS 0, outside the log) for subscriptions to them."""
        subs, sender = self.subs, self.sender
        if subs is None or sender is None or self._close is not None:
            return
        if subs.send_sys(messages, retain=retain):
            sender.kick()


_ENDINGS: Final = (Close, *STREAM_ERRORS, LogClosedError)
"""How a connection's task may end, expectedly (see :func:`_closing`)."""


def _closing(exc: BaseException) -> Close:
    """The Close for an expected ending of a connection's task."""
    if isinstance(exc, Close):
        return exc
    if isinstance(exc, LogClosedError):
        return Close(ReasonCode.SERVER_SHUTTING_DOWN, "the server is shutting down", will=False)
    return Close(ReasonCode.UNSPECIFIED_ERROR, f"connection lost: {exc}", reply=False)


def _will_published(client_id: str, result: list[Event] | BaseException) -> None:
    if isinstance(result, BaseException):
        log.warning("will message of %s not published: %s", client_id, result)
