"""One MQTT client connection: its state machine and its I/O over any trio Stream.

Theory of operation
-------------------
A :class:`Connection` owns its stream (TCP, TLS or the WebSocket adapter) from
accept to close, the way hypercorn's ``tcp_server`` does: timeouts with
cancel scopes, ``aclose`` in ``finally``, no exception ever escapes to the
listener.

States: *connecting* (the first packet must be CONNECT within
``connect_timeout``; anything else closes the connection), *connected* (the
tasks below run), *closing* (a final DISCONNECT if the stream is still usable,
the session is saved or deleted, the will is handed to the broker), *closed*.

While connected, a connection runs in one nursery. Only the reader runs from
the start; the others start when there is work for them (an idle connection is
one task, which is most of what 10,000 idle connections cost):

* the **reader** (the nursery body) reads whatever the socket has, decodes it
  into a list of packets and handles the list: every PUBLISH of one read goes
  to the engine in one ``publish_nowait`` call with one callback; the callback
  runs when the batch is durable and queues PUBACK/PUBREC. The reader enforces
  the keep alive (1.5 times the interval) and waits on the broker's
  back-pressure before reading more.
* **pumps**, one per feed (the session's main feed, started by the first
  subscription, and one per shared or replay subscription; the main feed of a
  non-persistent session is only opened then), move deliveries from their
  feed into ``_ready``, a bounded queue: a pump stops taking while ``_ready``
  is full, so the feed fills, falls behind and later catches up from the log.
  Nothing per connection grows with a slow client.
* the **writer** wakes when anything is queued, turns as many ready deliveries
  into PUBLISHes as the client's Receive Maximum allows (QoS downgrade, one
  message per event carrying every matching subscription identifier, topic
  aliases, packets over the client's Maximum Packet Size skipped) and sends
  them with the pending acks in one ``send_all``. :meth:`Connection._kick`
  starts it; it ends after its first round if nothing is left and the
  connection has no pump (a lone CONNACK or PINGRESP), else it stays.
* the **saver** (persistent sessions, started by the first change to save)
  stores the session, coalesced: at most
  every ``session_save_interval`` for position changes, at once when a QoS 2
  PUBREC or a subscription change waits for it.

Sessions and positions
----------------------
A persistent session is the engine's :class:`~tidelog.engine.sessions.Session`:
the main feed starts at ``session.position`` and catches up from the log, so
messages published while the client was away (even across a broker restart)
come from the log. The position is the lowest offset not yet finished: the
smallest offset among unacknowledged QoS 1/2 messages of the main feed, or
else the first event the connection has not taken from its feed. Events
between the position and ``sent_end`` that are not in ``out`` were already
delivered (QoS 0, or acknowledged) and are skipped on resume; those in ``out``
are sent again with DUP set and their original packet identifier. QoS 2
messages in the PUBREL phase are kept as packet identifiers (``rel``) and
their PUBREL is resent right after CONNACK; inbound QoS 2 packet identifiers
whose PUBREL has not arrived are kept in ``in``, so a resent PUBLISH is not
stored twice. The JSON kept in ``session.inflight``::

    {"out": {"<offset>": [packet_id, qos]}, "rel": [packet_id, ...],
     "in": [packet_id, ...], "sent_end": offset}
"""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
import struct
import time
from collections import deque
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import trio

from tidelog.engine.fanout import Feed
from tidelog.engine.fanout import Subscription as FeedSubscription
from tidelog.engine.sessions import NEVER_EXPIRES, Session, SessionSubscription
from tidelog.errors import (
    InvalidPositionError,
    InvalidTopicError,
    LogClosedError,
    StorageFullError,
    TidelogError,
)
from tidelog.logging_setup import set_connection_context
from tidelog.protocols.mqtt.decoder import Decoder
from tidelog.protocols.mqtt.encoder import encode
from tidelog.protocols.mqtt.errors import MQTTProtocolError
from tidelog.protocols.mqtt.outbound import (
    EMPTY_TOPIC,
    chunks_size,
    delivery_properties,
    event_properties,
    publish_chunks,
    shared_head,
    shared_qos0,
    topic_part,
)
from tidelog.protocols.mqtt.packets import (
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
)
from tidelog.protocols.mqtt.properties import NO_PROPERTIES, Properties
from tidelog.protocols.mqtt.protocol import MAX_PACKET_ID, MAX_PACKET_SIZE, PacketType
from tidelog.protocols.mqtt.reason_codes import ReasonCode
from tidelog.protocols.mqtt.replies import error_reply
from tidelog.protocols.mqtt.settings import ConnectInfo
from tidelog.protocols.mqtt.wire import U16
from tidelog.security import (
    Access,
    AuthenticationError,
    Grant,
    Principal,
    Right,
    TooManyAttemptsError,
)
from tidelog.security.auth import peer_address
from tidelog.storage import Event, NewEvent
from tidelog.topics import parse_shared

if TYPE_CHECKING:
    from tidelog.protocols.mqtt.server import MQTTServer

log = logging.getLogger(__name__)

_SYS_BACKLOG = 1000
"""Control packets queued past which a connection gets no ``$SYS`` update."""

RECEIVE_BYTES: Final = 65_536
REPLAY_PREFIX: Final = "$replay/"
"""3.x form of replay: ``$replay/<position>/<filter>``."""
REPLAY_PROPERTY: Final = "replay-from"
"""MQTT 5 SUBSCRIBE user property naming a replay start position."""
_OWN_OFFSETS: Final = 65_536
"""Offsets of its own publishes a connection remembers for No Local."""

_PINGRESP: Final = b"\xd0\x00"
_NO_OFFSETS: Final[frozenset[int]] = frozenset()
STREAM_ERRORS: Final = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
"""What a broken or closed transport raises."""

# where a delivery comes from
MAIN, SHARED, REPLAY, RETAINED = 0, 1, 2, 3
# outbound QoS 1/2 states
PUB, REL = 1, 2
# inbound QoS 2 states
PENDING, STORED = 1, 2


_ACK = struct.Struct(">BBH").pack


def _ack(first: int, packet_id: int) -> bytes:
    """A 4-byte PUBACK/PUBREC/PUBREL/PUBCOMP without reason code (success, or 3.x)."""
    return _ACK(first, 2, packet_id)


class SubOptions:
    """A subscription's options as the connection uses them (the engine's
    Subscription.options); stored in the session as a small dict."""

    __slots__ = ("identifier", "no_local", "qos", "retain_as_published", "retain_handling")

    def __init__(
        self,
        qos: int,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
        identifier: int | None = None,
    ) -> None:
        self.qos = qos
        self.no_local = no_local
        self.retain_as_published = retain_as_published
        self.retain_handling = retain_handling
        self.identifier = identifier

    @classmethod
    def from_subscription(cls, sub: Subscription, identifier: int | None) -> SubOptions:
        return cls(sub.qos, sub.no_local, sub.retain_as_published, sub.retain_handling, identifier)

    def to_json(self) -> dict[str, Any]:
        return {
            "qos": self.qos,
            "nl": self.no_local,
            "rap": self.retain_as_published,
            "rh": self.retain_handling,
            "id": self.identifier,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SubOptions:
        return cls(data["qos"], data["nl"], data["rap"], data["rh"], data["id"])


class Source:
    """Where deliveries come from: the main feed, a shared or replay subscription's
    feed, or retained messages sent on subscribe. ``options`` is set when the feed's
    own subscription options are not the connection's (shared groups)."""

    __slots__ = ("feed", "group", "inner", "key", "kind", "options", "pumping", "scope")

    def __init__(
        self,
        kind: int,
        feed: Feed | None = None,
        options: SubOptions | None = None,
        key: str = "",
        group: str = "",
        inner: str = "",
    ) -> None:
        self.kind = kind
        self.feed = feed
        self.options = options
        self.key = key
        self.group = group
        self.inner = inner
        self.scope = _NEVER_ENTERED if kind == RETAINED else trio.CancelScope()
        self.pumping = False


Ready = tuple[Event, tuple[FeedSubscription, ...], Source]

_NEVER_ENTERED: Final = trio.CancelScope()
"""The scope of the retained-messages source, which has no pump (never entered)."""


class _NoDeliveries(deque[Ready]):
    """The ready queue of a connection that has not queued anything yet: empty and
    shared (a deque costs 760 bytes; most idle connections never need one). Adding
    to it is a bug, so it fails loudly instead of dropping."""

    def append(self, item: Ready) -> None:
        raise RuntimeError("_NO_DELIVERIES is shared: give the connection its own deque")

    def extend(self, items: Any) -> None:
        raise RuntimeError("_NO_DELIVERIES is shared: give the connection its own deque")


_NO_DELIVERIES: Final = _NoDeliveries()


class Outbound:
    """An outgoing QoS 1/2 message not yet acknowledged."""

    __slots__ = ("delivery", "offset", "packet_id", "qos", "source", "state")

    def __init__(
        self,
        packet_id: int,
        qos: int,
        state: int,
        source: Source | None,
        offset: int,
        delivery: Ready | None = None,
    ) -> None:
        self.packet_id = packet_id
        self.qos = qos
        self.state = state
        self.source = source
        self.offset = offset
        self.delivery = delivery


class Close(Exception):
    """Why a connection ends, and what that means for its will and final packet."""

    def __init__(
        self,
        code: ReasonCode,
        message: str,
        *,
        will: bool = True,
        reply: bool = True,
        reply_bytes: bytes | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.will = will
        self.reply = reply
        self.reply_bytes = reply_bytes

    @classmethod
    def from_error(cls, error: MQTTProtocolError) -> Close:
        """For an error after CONNACK (a second CONNECT gets DISCONNECT, not CONNACK)."""
        if error.packet_type is PacketType.CONNECT:
            return cls(error.reason_code, error.message)
        return cls(error.reason_code, error.message, reply_bytes=error_reply(error))

    def final_packet(self, level: int) -> bytes:
        if self.reply_bytes is not None:
            return self.reply_bytes
        if not self.reply or level < 5:
            return b""
        return encode(Disconnect(self.code, Properties(reason_string=self.message[:200])), 5)


class Connection:
    """One client connection; :meth:`run` serves it until it closes."""

    # Slots: an idle broker holds thousands of these, and a dict of ~60 attributes is
    # several KiB. "__dict__" stays so that an attribute added later still works.
    __slots__ = (
        "__dict__",
        "_alias_max_out",
        "_aliases_in",
        "_aliases_out",
        "_checked_subs",
        "_client_max_packet",
        "_close",
        "_connect",
        "_control",
        "_dirty",
        "_disconnected",
        "_done",
        "_early",
        "_early_error",
        "_emitted",
        "_feed",
        "_finished",
        "_keep_alive",
        "_main",
        "_next_id",
        "_no_local",
        "_nursery",
        "_outstanding",
        "_own",
        "_own_order",
        "_problem_info",
        "_pubcomp_after_save",
        "_publish_idle",
        "_publishing",
        "_pubrec_after_save",
        "_pubrel_after_save",
        "_pumps",
        "_ready",
        "_replays",
        "_restore_shared",
        "_resume",
        "_resume_end",
        "_retained",
        "_rx",
        "_rx_count",
        "_scope",
        "_sending",
        "_shared",
        "_slot",
        "_space",
        "_transport_principal",
        "_unsaved_qos2",
        "_urgent",
        "_wake",
        "_window",
        "access",
        "broker",
        "client_id",
        "decoder",
        "level",
        "peer",
        "persistent",
        "server",
        "session",
        "settings",
        "stream",
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
        self._emitted = 0
        self.level = 4
        self.client_id = ""
        self.session: Session | None = None
        self.persistent = False
        self._finished: trio.Event | None = None
        """What :meth:`take_over` waits on (created by it: most connections end unwaited)."""
        self._done = False
        # security: who the client is (the handshake's principal for MQTT over an
        # authenticated WebSocket), what it may do, its connection slot
        self._transport_principal = principal
        self.access: Access = server.security.access(Principal())
        self._slot: str | None = None
        self._checked_subs: set[str] | None = None
        """Subscriptions whose events are checked per topic (a deny rule overlaps)."""
        self._connect: Connect | None = None
        self._early: list[Packet] = []
        self._early_error: MQTTProtocolError | None = None
        self._keep_alive = 0
        self._scope: trio.CancelScope | None = None
        """The connected phase's nursery scope; cancelling it stops the connection."""
        self._close: Close | None = None
        self._disconnected = False
        self._nursery: trio.Nursery | None = None
        # outgoing
        self._control: list[bytes] = []
        self._wake: trio.Event | None = None
        """Wakes the writer; exists while the writer task runs (:meth:`_kick` starts it)."""
        self._ready: deque[Ready] = _NO_DELIVERIES
        self._space: trio.lowlevel.ParkingLot | None = None
        """Where pumps wait for room in ``_ready`` (created with the first pump)."""
        self._pumps = 0
        self._outstanding: dict[int, Outbound] = {}
        self._next_id = 1
        self._window = 65_535
        self._client_max_packet = MAX_PACKET_SIZE
        self._alias_max_out = 0
        self._aliases_out: dict[str, int] = {}
        self._problem_info = True
        self._sending = False
        # incoming
        self._aliases_in: dict[int, str] = {}
        self._rx: dict[int, int] = {}
        self._rx_count = 0
        self._publishing = 0
        self._publish_idle = trio.Event()
        self._publish_idle.set()
        self._no_local = 0
        self._own: set[int] | frozenset[int] = _NO_OFFSETS
        self._own_order: deque[int] | None = None
        """Created with the first own publish remembered (a deque costs 760 bytes)."""
        # session
        self._feed: Feed | None = None
        self._main = Source(MAIN)
        self._retained = Source(RETAINED)
        self._shared: dict[str, Source] = {}
        self._replays: dict[str, Source] = {}
        self._restore_shared: list[tuple[str, SubOptions]] = []
        self._resume: dict[int, int] = {}
        self._resume_end = 0
        self._dirty: trio.Event | None = None
        """Set when the session should be saved; None until the saver task starts."""
        self._urgent: trio.Event | None = None
        self._pubrec_after_save: list[int] = []
        self._pubcomp_after_save: list[int] = []
        self._pubrel_after_save: list[int] = []
        self._unsaved_qos2 = False

    def __repr__(self) -> str:
        return f"<MQTT connection {self.client_id or '?'} from {self.peer} over {self.transport}>"

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it closes; never raises (errors are logged)."""
        set_connection_context(protocol=f"mqtt/{self.transport}", remote=self.peer)
        try:
            connect = await self._receive_connect()
            if connect is not None and await self._accept(connect):
                await self._serve()
        except STREAM_ERRORS as exc:
            log.debug("%r: connection lost: %s", self, exc)
        except Exception:
            log.exception("%r: unexpected error", self)
        finally:
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(self.settings.close_timeout),
                contextlib.suppress(*STREAM_ERRORS),  # it may have broken already
            ):
                await self.stream.aclose()
            if self._slot is not None:
                self.server.security.connections.release(self._slot)
            self._done = True
            if self._finished is not None:
                self._finished.set()

    async def take_over(self) -> None:
        """Close this connection because a newer one has the same client id; returns
        once its session is saved (so the newer connection resumes from it)."""
        self._stop(Close(ReasonCode.SESSION_TAKEN_OVER, "another connection took the session"))
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
        if data:
            with trio.move_on_after(self.settings.close_timeout):
                await self.stream.send_all(data)

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
                    self._early = packets[1:]
                    return connect
        log.debug("%r: no CONNECT within %ss", self, self.settings.connect_timeout)
        return None

    async def _accept(self, connect: Connect) -> bool:
        """Authenticate and read the client's limits; False if refused (CONNACK sent)."""
        self._connect = connect
        level = self.level = connect.protocol_level
        props = connect.properties
        client_id = connect.client_id or f"tidelog-{secrets.token_hex(8)}"
        self.client_id = client_id
        set_connection_context(client_id=client_id)
        info = ConnectInfo(connect, client_id, self.transport, self.peer)
        code = await self._authenticate(connect, client_id)
        if code == ReasonCode.SUCCESS:
            code = await self.server.authenticate(info)
        if code == ReasonCode.SUCCESS and props.authentication_method is not None:
            code = ReasonCode.BAD_AUTHENTICATION_METHOD
        if code != ReasonCode.SUCCESS:
            try:
                reply = encode(Connack(code), level)
            except MQTTProtocolError:
                reply = encode(Connack(ReasonCode.NOT_AUTHORIZED), level)
            log.info("%r: CONNECT refused: %s", self, ReasonCode(code).name)
            self.traffic.rejected_connections["mqtt"] += 1
            await self._send_direct(reply)
            return False
        if level == 5:
            self._window = props.receive_maximum or 65_535
            self._client_max_packet = props.maximum_packet_size or MAX_PACKET_SIZE
            self._alias_max_out = props.topic_alias_maximum or 0
            self._problem_info = props.request_problem_information != 0
        else:
            self._window = self.settings.v3_inflight_window
        self._keep_alive = connect.keep_alive
        return True

    async def _authenticate(self, connect: Connect, client_id: str) -> ReasonCode:
        """Connection limits, credentials and the will's ACL (see docs/security.md)."""
        security = self.server.security
        address = peer_address(self.peer)
        refusal = security.connections.acquire(address)
        if refusal is not None:
            log.warning("%r: refused: %s", self, refusal)
            return ReasonCode.SERVER_BUSY
        self._slot = address
        user = connect.username
        cert_user = security.certificate_user(self.stream)
        preset = self._transport_principal
        try:
            if user is not None and connect.password is not None:
                password = connect.password.decode("utf-8", "replace")
                principal = await security.login(
                    user, password, self.peer, f"mqtt-{self.transport}", client_id
                )
            elif user is not None and user in (cert_user, preset and preset.user):
                principal = Principal(user, client_id)
            elif user is not None and security.authenticates:
                log.warning("%r: user %r without a password", self, user)
                return ReasonCode.BAD_USER_NAME_OR_PASSWORD
            elif cert_user is not None:
                principal = Principal(cert_user, client_id)
            elif preset is not None:
                principal = preset.with_client_id(client_id)
            else:
                principal = security.anonymous_principal(client_id)
        except TooManyAttemptsError:
            return ReasonCode.CONNECTION_RATE_EXCEEDED
        except AuthenticationError:
            if user is None:
                return ReasonCode.NOT_AUTHORIZED
            return ReasonCode.BAD_USER_NAME_OR_PASSWORD
        self.access = security.access(principal)
        will = connect.will
        if will is not None and not self.access.allows(Right.PUBLISH, will.topic):
            log.info("%r: will topic %r not authorized", self, will.topic)
            return ReasonCode.NOT_AUTHORIZED
        return ReasonCode.SUCCESS

    async def _serve(self) -> None:
        connect = self._connect
        assert connect is not None
        try:
            # an idle connection is one task, the reader: the writer, the saver and
            # the pumps start when there is something for them to do
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                if self._close is not None:
                    nursery.cancel_scope.cancel()
                await self._open_session(connect)
                self._nursery = nursery
                try:
                    feed = self._feed
                    if feed is not None and (feed.subscriptions or not feed.live or self._resume):
                        self._start_pump(self._main)
                    for key, options in self._restore_shared:
                        self._join_shared(key, options)
                    self._kick()  # the CONNACK
                    try:  # _guard's work, inline: one coroutine frame less per connection
                        await self._read_loop()
                    except _ENDINGS as exc:
                        self._stop(_closing(exc))
                    nursery.cancel_scope.cancel()
                finally:
                    self._nursery = None  # closing: nothing new starts
        finally:
            with trio.CancelScope(shield=True):
                await self._finish()

    async def _open_session(self, connect: Connect) -> None:
        broker = self.broker
        client_id = self.client_id
        level = self.level
        props = connect.properties
        # a will waiting for its delay is not sent if the client is back in time
        broker.cancel_will(client_id)
        while (old := self.server.connections.get(client_id)) is not None and old is not self:
            await old.take_over()
            if self.server.connections.get(client_id) is old:
                del self.server.connections[client_id]
            broker.cancel_will(client_id)  # one the older connection left with a delay
        self.server.connections[client_id] = self

        if level == 5:
            expiry = props.session_expiry_interval or 0
        else:
            expiry = 0 if connect.clean_start else NEVER_EXPIRES
        sessions = broker.sessions
        stored = sessions.get(client_id)
        if stored is not None and connect.clean_start:
            await sessions.delete(client_id)
            stored = None
        session = stored if stored is not None else Session(client_id)
        session.expiry_interval = expiry
        session.disconnected_at = None
        self.session = session
        self.persistent = expiry > 0
        if stored is not None or self.persistent:
            self._main_feed(session.position if stored is not None else None)
        # else the feed is opened by the first subscription (many clients only publish)
        connack_props = NO_PROPERTIES
        if level == 5:
            settings = self.settings
            server_keep_alive = None
            if settings.server_keep_alive is not None and (
                settings.server_keep_alive != connect.keep_alive
            ):
                server_keep_alive = self._keep_alive = settings.server_keep_alive
            connack_props = Properties(
                receive_maximum=settings.receive_maximum,
                topic_alias_maximum=settings.topic_alias_maximum or None,
                maximum_packet_size=(
                    settings.max_packet_size if settings.max_packet_size < MAX_PACKET_SIZE else None
                ),
                assigned_client_identifier=None if connect.client_id else client_id,
                server_keep_alive=server_keep_alive,
            )
        present = stored is not None and level >= 4
        self._control.append(encode(Connack(ReasonCode.SUCCESS, present, connack_props), level))
        if stored is not None:
            self._restore(session)
        if self.persistent:
            await sessions.save(session)
        elif stored is not None:
            await sessions.delete(client_id)  # it ends with this connection
        log.info("connected (MQTT level %d, session present %s)", level, present)

    def _restore(self, session: Session) -> None:
        feed = self._feed
        assert feed is not None
        for key, sub in list(session.subscriptions.items()):
            if not self._may_keep(key):
                del session.subscriptions[key]
                continue
            options = SubOptions.from_json(sub.options)
            if key.startswith("$share/"):
                self._restore_shared.append((key, options))
                continue
            feed.subscribe(key, options, since=sub.created_offset)
            if options.no_local:
                self._no_local += 1
        inflight = session.inflight
        for packet_id in inflight.get("rel", ()):
            self._outstanding[packet_id] = Outbound(packet_id, 2, REL, None, -1)
            self._control.append(_ack(0x62, packet_id))
        for offset_text, (packet_id, qos) in inflight.get("out", {}).items():
            offset = int(offset_text)
            self._outstanding[packet_id] = Outbound(packet_id, qos, PUB, self._main, offset)
            self._resume[offset] = packet_id
        self._resume_end = inflight.get("sent_end", 0)
        for packet_id in inflight.get("in", ()):
            self._rx[packet_id] = STORED
            self._rx_count += 1

    def _may_keep(self, key: str) -> bool:
        """Whether a restored subscription is still allowed (the ACL may have changed)."""
        inner = key
        if key.startswith("$share/"):
            inner = key.split("/", 2)[2] if key.count("/") >= 2 else key
        grant = self.access.grant(Right.SUBSCRIBE, inner)
        if grant is Grant.DENIED:
            log.info("%r: stored subscription %r is no longer authorized", self, key)
            return False
        if grant is Grant.PER_TOPIC:
            self._check_per_topic(key, True)
        return True

    async def _finish(self) -> None:
        """Closing: final packet, wait for publishes in flight, save the session, will."""
        close = self._close or Close(
            ReasonCode.SERVER_SHUTTING_DOWN, "the server is shutting down", will=False
        )
        with trio.move_on_after(self.settings.close_timeout):
            if not self._sending:  # a send cut in the middle leaves the stream unusable
                pending, self._control = self._control, []  # e.g. the CONNACK, acks
                with contextlib.suppress(*STREAM_ERRORS):  # the final packet is a courtesy
                    await self._send_direct(b"".join(pending) + close.final_packet(self.level))
            await self._publish_idle.wait()
        try:
            with trio.move_on_after(self.settings.close_timeout):
                await self._end_session(close)
        finally:
            # only now: a newer connection with this client id waits for this one
            # to have saved the session and handed over its will
            if self.server.connections.get(self.client_id) is self:
                del self.server.connections[self.client_id]
        log.info("disconnected: %s (%s)", close.message, close.code.name)

    async def _end_session(self, close: Close) -> None:
        broker = self.broker
        client_id = self.client_id
        for source in list(self._shared.values()):
            self._leave_shared(source)
        for source in self._replays.values():
            if source.feed is not None:
                source.feed.close()
        session = self.session
        if session is not None:
            try:
                if self.persistent:
                    self._snapshot()
                    session.disconnected_at = time.time_ns() // 1_000_000
                    await broker.sessions.save(session)
                elif broker.sessions.get(client_id) is session:
                    await broker.sessions.delete(client_id)
            except TidelogError as exc:
                log.warning("%r: session not saved: %s", self, exc)
        if self._feed is not None:
            self._feed.close()
        connect = self._connect
        will = connect.will if connect is not None else None
        if will is not None and close.will and not broker.closed:
            delay = 0
            if self.level == 5 and session is not None:
                delay = min(will.properties.will_delay_interval or 0, session.expiry_interval)
            if close.code == ReasonCode.SESSION_TAKEN_OVER and delay > 0:
                return  # the new connection is back within the will delay
            event = NewEvent(
                will.topic, will.payload, will.qos, will.retain, event_properties(will.properties)
            )
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

    # -- reading -----------------------------------------------------------------------

    async def _read_loop(self) -> None:
        if self._early:
            early, self._early = self._early, []
            await self._handle(early)
        if self._early_error is not None:
            raise Close.from_error(self._early_error)
        timeout = self._keep_alive * 1.5 if self._keep_alive else math.inf
        receive = self.stream.receive_some
        decoder = self.decoder
        broker = self.broker
        counters = self.traffic
        # One cancel scope for the whole loop, armed only while waiting for data:
        # moving a deadline costs less than a scope per read (and nothing without
        # a keep alive).
        keep_alive = timeout != math.inf
        now = trio.current_time
        with trio.CancelScope() as scope:
            while not self._disconnected:
                if keep_alive:
                    scope.deadline = now() + timeout
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
                        await self._handle(list(exc.packets))
                    raise Close.from_error(exc) from None
                counters.packets_received["mqtt"] += len(packets)
                await self._handle(packets)
                await broker.wait_writable()
        if scope.cancelled_caught:
            raise Close(ReasonCode.KEEP_ALIVE_TIMEOUT, "keep alive timeout")

    async def _handle(self, packets: list[Packet]) -> None:
        events: list[NewEvent] = []
        meta: list[int] = []
        try:
            for packet in packets:
                kind = type(packet)
                if kind is Publish:
                    self._on_publish(packet, events, meta)  # type: ignore[arg-type]
                elif kind is Puback:
                    self._on_puback(packet)  # type: ignore[arg-type]
                elif kind is Pubrec:
                    self._on_pubrec(packet)  # type: ignore[arg-type]
                elif kind is Pubrel:
                    self._on_pubrel(packet)  # type: ignore[arg-type]
                elif kind is Pubcomp:
                    self._on_pubcomp(packet)  # type: ignore[arg-type]
                elif kind is Pingreq:
                    self._control.append(_PINGRESP)
                elif kind is Subscribe:
                    self._submit(events, meta)
                    events, meta = [], []
                    await self._on_subscribe(packet)  # type: ignore[arg-type]
                elif kind is Unsubscribe:
                    self._submit(events, meta)
                    events, meta = [], []
                    self._on_unsubscribe(packet)  # type: ignore[arg-type]
                elif kind is Disconnect:
                    self._on_disconnect(packet)  # type: ignore[arg-type]
                    break
                else:  # AUTH: no authentication method was accepted at CONNECT
                    raise Close(ReasonCode.PROTOCOL_ERROR, "AUTH without an authentication method")
        finally:
            self._submit(events, meta)
            self._kick()

    def _on_publish(self, packet: Publish, events: list[NewEvent], meta: list[int]) -> None:
        qos = packet.qos
        topic = packet.topic
        props = packet.properties
        stored_props = None
        if props is not NO_PROPERTIES:
            alias = props.topic_alias
            if alias is not None:
                if not 0 < alias <= self.settings.topic_alias_maximum:
                    raise Close(ReasonCode.TOPIC_ALIAS_INVALID, f"topic alias {alias} is invalid")
                if topic:
                    self._aliases_in[alias] = topic
                else:
                    known = self._aliases_in.get(alias)
                    if known is None:
                        raise Close(ReasonCode.PROTOCOL_ERROR, f"topic alias {alias} is not set")
                    topic = known
            stored_props = event_properties(props)
        if not self.access.allows(Right.PUBLISH, topic):
            self._refuse_publish(packet, topic)
            return
        if qos:
            packet_id = packet.packet_id
            assert packet_id is not None
            if qos == 2:
                state = self._rx.get(packet_id)
                if state is not None:  # a resend of a QoS 2 message already taken
                    if state == STORED and packet_id not in self._pubrec_after_save:
                        self._control.append(_ack(0x50, packet_id))
                    return
                self._rx[packet_id] = PENDING
            self._rx_count += 1
            if self.level == 5 and self._rx_count > self.settings.receive_maximum:
                raise Close(
                    ReasonCode.RECEIVE_MAXIMUM_EXCEEDED,
                    f"more than {self.settings.receive_maximum} QoS 1/2 PUBLISH unacknowledged",
                )
            meta.append(qos << 16 | packet_id)
        else:
            meta.append(0)
        events.append(NewEvent(topic, packet.payload, qos, packet.retain, stored_props))

    def _refuse_publish(self, packet: Publish, topic: str) -> None:
        """A PUBLISH the ACL denies: v5 gets PUBACK/PUBREC 0x87; 3.x, like mosquitto,
        gets a normal PUBACK/PUBREC (the message is dropped, not stored); QoS 0 is
        dropped silently. Sent at once (it may overtake acks of earlier PUBLISHes
        still waiting for their commit)."""
        log.info("%r: PUBLISH to %r not authorized", self, topic)
        packet_id = packet.packet_id
        if not packet.qos or packet_id is None:
            return
        if self.level == 5:
            denied = ReasonCode.NOT_AUTHORIZED
            props = Properties(reason_string=f"not authorized to publish to {topic!r}"[:200])
            if not self._problem_info:
                props = NO_PROPERTIES
            reply = Puback if packet.qos == 1 else Pubrec
            self._control.append(encode(reply(packet_id, denied, props), 5))
            return
        if packet.qos == 1:
            self._control.append(_ack(0x40, packet_id))
        else:
            if self._rx.get(packet_id) is None:
                self._rx[packet_id] = STORED
                self._rx_count += 1
            self._control.append(_ack(0x50, packet_id))

    def _submit(self, events: list[NewEvent], meta: list[int]) -> None:
        if not events:
            return
        self.traffic.publishes_received["mqtt"] += len(events)
        try:
            self.broker.publish_nowait(events, partial(self._on_durable, meta))
        except LogClosedError:
            raise Close(
                ReasonCode.SERVER_SHUTTING_DOWN, "the server is shutting down", will=False
            ) from None
        self._publishing += 1
        if self._publish_idle.is_set():
            self._publish_idle = trio.Event()

    def _on_durable(self, meta: list[int], result: list[Event] | BaseException) -> None:
        """The engine's callback for one read's PUBLISHes: durable, or refused."""
        self._publishing -= 1
        if not self._publishing:
            self._publish_idle.set()
        control = self._control
        if isinstance(result, BaseException):
            log.warning("publish refused: %s", result)
            self.traffic.rejected_packets["mqtt"] += len(meta)
            if self.level < 5:
                if any(meta):
                    self._stop(Close(ReasonCode.UNSPECIFIED_ERROR, f"publish refused: {result}"))
                return
            code = (
                ReasonCode.QUOTA_EXCEEDED
                if isinstance(result, StorageFullError)
                else ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR
            )
            props = Properties(reason_string=str(result)[:200]) if self._problem_info else None
            for entry in meta:
                qos, packet_id = entry >> 16, entry & 0xFFFF
                if qos == 1:
                    self._rx_count -= 1
                    control.append(encode(Puback(packet_id, code, props or NO_PROPERTIES), 5))
                elif qos == 2:
                    self._rx_count -= 1
                    self._rx.pop(packet_id, None)
                    control.append(encode(Pubrec(packet_id, code, props or NO_PROPERTIES), 5))
            self._kick()
            return
        own = self._no_local > 0
        urgent = False
        for entry, event in zip(meta, result, strict=True):
            if own:
                self._remember_own(event.offset)
            if entry:
                packet_id = entry & 0xFFFF
                if entry >> 16 == 1:
                    self._rx_count -= 1
                    control.append(_ACK(0x40, 2, packet_id))
                else:
                    self._rx[packet_id] = STORED
                    if self.persistent:
                        self._pubrec_after_save.append(packet_id)
                        urgent = True
                    else:
                        control.append(_ack(0x50, packet_id))
        if urgent:
            self._mark_dirty(urgent=True)
        self._kick()

    def _remember_own(self, offset: int) -> None:
        own, order = self._own, self._own_order
        if order is None:  # the first one: the set and its order are made together
            own, order = self._own, self._own_order = set(), deque()
        assert isinstance(own, set)
        own.add(offset)
        order.append(offset)
        if len(order) > _OWN_OFFSETS:
            own.discard(order.popleft())

    def _on_puback(self, packet: Puback) -> None:
        entry = self._outstanding.get(packet.packet_id)
        if entry is not None and entry.qos == 1:
            self._complete(entry)

    def _on_pubrec(self, packet: Pubrec) -> None:
        packet_id = packet.packet_id
        if packet_id in self._pubrel_after_save:
            return  # a resent PUBREC: its PUBREL goes once the session is stored
        entry = self._outstanding.get(packet_id)
        if entry is None or entry.qos != 2:
            if self.level == 5:
                self._control.append(
                    encode(Pubrel(packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND), 5)
                )
            else:
                self._control.append(_ack(0x62, packet_id))
            return
        if packet.reason_code >= 0x80:  # the client refused it: the exchange ends here
            self._complete(entry)
            return
        if entry.state == PUB:
            entry.state = REL
            entry.delivery = None
            if entry.source is self._main:
                self._resume.pop(entry.offset, None)
                if self.persistent:
                    # once the client has PUBREL it forgets the identifier: the stored
                    # session must say REL by then, or a crash would send the message
                    # again as new (delivered twice)
                    self._pubrel_after_save.append(packet_id)
                    self._mark_dirty(urgent=True)
                    return
            self._mark_dirty()
        self._control.append(_ack(0x62, packet_id))

    def _on_pubcomp(self, packet: Pubcomp) -> None:
        entry = self._outstanding.get(packet.packet_id)
        if entry is not None and entry.state == REL:
            self._complete(entry)

    def _complete(self, entry: Outbound) -> None:
        del self._outstanding[entry.packet_id]
        if entry.source is self._main and entry.state == PUB:
            self._resume.pop(entry.offset, None)
        self._mark_dirty()
        if self._ready:
            self._kick()

    def _on_pubrel(self, packet: Pubrel) -> None:
        packet_id = packet.packet_id
        if packet_id in self._pubcomp_after_save:
            return  # a resent PUBREL: its PUBCOMP goes once the session is stored
        if self._rx.pop(packet_id, None) is None:
            if self.level == 5:
                self._control.append(
                    encode(Pubcomp(packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND), 5)
                )
            else:
                self._control.append(_ack(0x70, packet_id))
            return
        self._rx_count -= 1
        if self.persistent:
            # the client may reuse the identifier once it has PUBCOMP: the stored
            # session must no longer list it as taken, or a new PUBLISH with it after
            # a crash would be answered as a resend and never stored
            self._pubcomp_after_save.append(packet_id)
            self._mark_dirty(urgent=True)
        else:
            self._control.append(_ack(0x70, packet_id))

    def _on_disconnect(self, packet: Disconnect) -> None:
        will = False
        if self.level == 5:
            session = self.session
            assert session is not None
            expiry = packet.properties.session_expiry_interval
            if expiry is not None:
                if session.expiry_interval == 0 and expiry != 0:
                    raise Close(
                        ReasonCode.PROTOCOL_ERROR,
                        "DISCONNECT sets a Session Expiry Interval after CONNECT had 0"
                        " (§3.14.2.2.2)",
                    )
                session.expiry_interval = expiry
                self.persistent = expiry > 0
            will = packet.reason_code == ReasonCode.DISCONNECT_WITH_WILL_MESSAGE
        self._disconnected = True
        if self._close is None:
            self._close = Close(
                ReasonCode.NORMAL_DISCONNECTION, "the client disconnected", will=will, reply=False
            )

    # -- $SYS ---------------------------------------------------------------------------

    def send_sys(
        self, messages: dict[str, bytes], *, retain: bool, filters: list[str] | None = None
    ) -> None:
        """Queue ``$SYS`` messages (QoS 0, outside the log) for matching subscriptions.

        ``filters``: only these (just subscribed); default every subscription. A
        client with a backlog of control packets gets none (they are refreshed
        every interval anyway).
        """
        feed = self._feed
        if feed is None or self._close is not None or len(self._control) > _SYS_BACKLOG:
            return
        subs = [
            sub
            for key, sub in feed.subscriptions.items()
            if key.startswith("$") and (filters is None or key in filters)
        ]
        if not subs:
            return
        for topic, payload in messages.items():
            if any(sub.matches(topic) for sub in subs):
                self._control.append(encode(Publish(topic, payload, 0, retain), self.level))
        self._kick()

    # -- subscriptions -----------------------------------------------------------------

    async def _on_subscribe(self, packet: Subscribe) -> None:
        props = packet.properties
        identifier = props.subscription_identifiers[0] if props.subscription_identifiers else None
        replay_from = None
        for name, value in props.user_properties:
            if name == REPLAY_PROPERTY:
                replay_from = value
        codes: list[ReasonCode] = []
        problems: list[str] = []
        retained: list[Ready] = []
        sys_filters: list[str] = []
        for sub in packet.subscriptions:
            options = SubOptions.from_subscription(sub, identifier)
            try:
                code = await self._subscribe(sub.topic_filter, options, replay_from, retained)
                codes.append(code)
                if sub.topic_filter.startswith("$"):
                    sys_filters.append(sub.topic_filter)
            except (InvalidPositionError, InvalidTopicError) as exc:
                codes.append(
                    ReasonCode.TOPIC_FILTER_INVALID
                    if isinstance(exc, InvalidTopicError)
                    else ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR
                )
                problems.append(str(exc))
            except _Refused as exc:
                codes.append(exc.code)
                problems.append(str(exc))
        suback_props = NO_PROPERTIES
        if problems and self.level == 5 and self._problem_info:
            suback_props = Properties(reason_string="; ".join(problems)[:200])
        self._control.append(encode(Suback(packet.packet_id, codes, suback_props), self.level))
        if sys_filters and self.server.sys_messages:
            self.send_sys(self.server.sys_messages, retain=True, filters=sys_filters)
        if retained:
            self._own_ready().extend(retained)
        self._mark_dirty(urgent=True)

    def _authorize_subscription(self, key: str, topic_filter: str, right: Right) -> None:
        """ACL and subscription-count checks; raises _Refused (0x87 / 0x97)."""
        _, inner = parse_shared(topic_filter)
        grant = self.access.grant(right, inner)
        if grant is Grant.DENIED:
            log.info("%r: subscription %r not authorized", self, key)
            raise _Refused(ReasonCode.NOT_AUTHORIZED, f"not authorized to subscribe to {key!r}")
        limit = self.server.security.config.max_subscriptions
        session = self.session
        if (
            session is not None
            and key not in session.subscriptions
            and key not in self._replays
            and len(session.subscriptions) + len(self._replays) >= limit
        ):
            raise _Refused(ReasonCode.QUOTA_EXCEEDED, f"at most {limit} subscriptions")
        if grant is Grant.PER_TOPIC:
            self._check_per_topic(key, True)
        else:
            self._check_per_topic(key, False)

    def _check_per_topic(self, key: str, checked: bool) -> None:
        """Mark a subscription as needing a per-topic ACL check of its events (or not);
        the set exists only once one does (most connections never need it)."""
        if checked:
            if self._checked_subs is None:
                self._checked_subs = set()
            self._checked_subs.add(key)
        elif self._checked_subs is not None:
            self._checked_subs.discard(key)

    async def _subscribe(
        self, key: str, options: SubOptions, replay_from: str | None, retained: list[Ready]
    ) -> ReasonCode:
        granted = ReasonCode(options.qos)
        if key.startswith(REPLAY_PREFIX):
            position, sep, inner = key[len(REPLAY_PREFIX) :].partition("/")
            if not sep or not inner:
                raise InvalidTopicError(f"{key!r}: the replay form is $replay/<position>/<filter>")
            self._authorize_subscription(key, inner, Right.READ)
            await self._subscribe_replay(key, position, inner, options)
            return granted
        if replay_from is not None:
            self._authorize_subscription(key, key, Right.READ)
            await self._subscribe_replay(key, replay_from, key, options)
            return granted
        self._authorize_subscription(key, key, Right.SUBSCRIBE)
        group, inner = parse_shared(key)
        session = self.session
        assert session is not None
        if group is not None:
            self._drop_replay(key)
            existing = self._shared.get(key)
            if existing is not None:
                existing.options = options
            else:
                self._join_shared(key, options)
            session.subscriptions[key] = SessionSubscription(key, options.to_json(), 0)
            return granted
        self._drop_replay(key)
        feed = self._main_feed()
        old = feed.subscriptions.get(key)
        if old is not None and old.options.no_local:
            self._no_local -= 1
        sub = feed.subscribe(key, options)
        self._start_pump(self._main)
        if options.no_local:
            self._no_local += 1
        session.subscriptions[key] = SessionSubscription(key, options.to_json(), sub.created_offset)
        if options.retain_handling == 0 or (options.retain_handling == 1 and old is None):
            subs = (sub,)
            source = self._retained
            retained.extend((event, subs, source) for event in self.broker.retained.matching(key))
        return granted

    async def _subscribe_replay(
        self, key: str, position: str, topic_filter: str, options: SubOptions
    ) -> None:
        group, inner = parse_shared(topic_filter)
        if group is not None:
            raise _Refused(
                ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR,
                "a shared subscription cannot replay history",
            )
        start = await self.broker.resolve(position)
        self._unsubscribe(key)
        feed = self.broker.open_feed(start=start, name=f"mqtt:{self.client_id}:{key}")
        feed.subscribe(inner, options, since=start)
        source = Source(REPLAY, feed, options, key)
        self._replays[key] = source
        self._start_pump(source)

    def _drop_replay(self, key: str) -> None:
        source = self._replays.pop(key, None)
        if source is not None:
            source.scope.cancel()
            if source.feed is not None:
                source.feed.close()
            self._forget_source(source)

    def _join_shared(self, key: str, options: SubOptions) -> None:
        group, inner = parse_shared(key)
        assert group is not None
        source = Source(SHARED, self.broker.join_shared(group, inner), options, key, group, inner)
        self._shared[key] = source
        self._start_pump(source)

    def _leave_shared(self, source: Source) -> None:
        """Leave a shared group; what this member took but did not finish goes back to
        the group for another member."""
        del self._shared[source.key]
        source.scope.cancel()
        unfinished = [(e, s) for e, s, src in self._ready if src is source]
        for entry in list(self._outstanding.values()):
            if entry.source is source and entry.state == PUB and entry.delivery is not None:
                unfinished.append((entry.delivery[0], entry.delivery[1]))
        self._forget_source(source)
        if source.feed is not None and unfinished:
            unfinished.sort(key=lambda d: d[0].offset)
            source.feed.requeue(unfinished)
        self.broker.leave_shared(source.group, source.inner)

    def _forget_source(self, source: Source) -> None:
        """Drop a closed source's queued deliveries and in-flight QoS 1 messages."""
        if any(src is source for _, _, src in self._ready):
            self._ready = deque(d for d in self._ready if d[2] is not source)  # never empty
        for entry in list(self._outstanding.values()):
            if entry.source is source and entry.state == PUB:
                del self._outstanding[entry.packet_id]

    def _on_unsubscribe(self, packet: Unsubscribe) -> None:
        codes = [
            ReasonCode.SUCCESS if self._unsubscribe(key) else ReasonCode.NO_SUBSCRIPTION_EXISTED
            for key in packet.topic_filters
        ]
        self._control.append(encode(Unsuback(packet.packet_id, codes), self.level))
        self._mark_dirty(urgent=True)

    def _unsubscribe(self, key: str) -> bool:
        session = self.session
        feed = self._feed
        assert session is not None
        if key in self._replays:
            self._drop_replay(key)
            return True
        shared = self._shared.get(key)
        if shared is not None:
            self._leave_shared(shared)
            session.subscriptions.pop(key, None)
            return True
        if feed is None or (sub := feed.subscriptions.get(key)) is None:
            return False
        self._check_per_topic(key, False)
        if sub.options.no_local:
            self._no_local -= 1
        feed.unsubscribe(key)
        session.subscriptions.pop(key, None)
        return True

    # -- delivering --------------------------------------------------------------------

    def _main_feed(self, start: int | None = None) -> Feed:
        """The session's main feed, opened now if it is not (from ``start``, default
        live from now)."""
        feed = self._feed
        if feed is None:
            feed = self.broker.open_feed(start=start, name=f"mqtt:{self.client_id}")
            self._feed = self._main.feed = feed
        return feed

    def _start_pump(self, source: Source) -> None:
        """Start the pump of a source unless it runs (the main feed's starts with the
        first subscription: a connection that only publishes never has one)."""
        if source.pumping:
            return
        assert self._nursery is not None
        source.pumping = True
        self._pumps += 1
        if self._space is None:
            self._space = trio.lowlevel.ParkingLot()
        self._nursery.start_soon(self._pump, source)

    def _own_ready(self) -> deque[Ready]:
        """``_ready``, made the connection's own deque if it was the shared empty one."""
        ready = self._ready
        if ready is _NO_DELIVERIES:
            ready = self._ready = deque()
        return ready

    async def _pump(self, source: Source) -> None:
        """Move deliveries from a feed into the bounded ready queue."""
        feed = source.feed
        space = self._space
        assert feed is not None and space is not None
        limit = self.settings.pending_deliveries
        try:
            with source.scope:
                while True:
                    while len(self._ready) >= limit:
                        await space.park()
                    deliveries = await feed.receive(limit)
                    self._own_ready().extend([(event, subs, source) for event, subs in deliveries])
                    self._kick()
        except LogClosedError:
            return  # the feed was closed: unsubscribed, or the broker is stopping
        finally:
            self._pumps -= 1

    def _kick(self) -> None:
        """Wake the writer, starting it if it does not run (and the connection is not
        closing: then :meth:`_finish` sends what is queued)."""
        wake = self._wake
        if wake is not None:
            wake.set()
        elif self._nursery is not None:
            self._wake = wake = trio.Event()
            wake.set()
            self._nursery.start_soon(self._guard, self._write_loop)

    async def _write_loop(self) -> None:
        """Send what is queued whenever woken.

        Started by :meth:`_kick`. It returns after its first round if that left
        nothing to do and the connection has no pump: a connection that only sent
        CONNACK or answered a PINGREQ holds no writer task; one that keeps sending
        (a publisher's acks, a subscriber's deliveries) keeps it.
        """
        stream = self.stream
        first = True
        while True:
            wake = self._wake
            assert wake is not None
            await wake.wait()
            self._wake = wake = trio.Event()
            chunks = self._control
            self._control = []
            more = self._emit(chunks) if self._ready else False
            if self._unsaved_qos2:
                # a QoS 2 message goes out only once its packet identifier is in the
                # stored session: after a crash it is resent with the same identifier
                # (the client still holds it and drops the copy), never as a new one
                self._unsaved_qos2 = False
                await self._save()
            if self._emitted:
                self.traffic.publishes_sent["mqtt"] += self._emitted
                self._emitted = 0
            if chunks:
                self._sending = True
                data = b"".join(chunks)
                await stream.send_all(data)
                self._sending = False
                self.traffic.bytes_sent["mqtt"] += len(data)
            if self._space is not None:
                self._space.unpark_all()
            if more:
                self._kick()
            elif first and not self._pumps and not self._control and not wake.is_set():
                self._wake = None  # no await since the check: a _kick starts a new writer
                return
            first = False

    def _emit(self, chunks: list[bytes]) -> bool:
        """Turn ready deliveries into PUBLISH chunks; True if more could go right away."""
        ready = self._ready
        outstanding = self._outstanding
        room = self._window - len(outstanding)
        budget = self.settings.max_send_bytes
        size = 0
        level = self.level
        main = self._main
        max_packet = self._client_max_packet
        while ready:
            event, subs, source = ready[0]
            dup = False
            packet_id = 0
            if source is main and self._resume_end:
                if event.offset < self._resume_end:
                    packet_id = self._resume.pop(event.offset, 0)
                    if not packet_id:  # delivered before the client went away
                        ready.popleft()
                        continue
                    resent = outstanding[packet_id]
                    qos, retain, ids, dup = resent.qos, False, self._identifiers(subs), True
                    resent.delivery = ready[0]
                else:
                    self._end_resume()
            if not dup:
                plan = self._plan(event, subs, source)
                if plan is None:
                    ready.popleft()
                    continue
                qos, retain, ids = plan
                if qos:
                    if room <= 0:
                        return False
                    packet_id = self._next_free_id()
            alias = None
            new_alias = False
            topic = event.topic
            if level == 5 and self._alias_max_out:
                alias = self._aliases_out.get(topic)
                if alias is None and len(self._aliases_out) < self._alias_max_out:
                    alias = len(self._aliases_out) + 1
                    new_alias = True
            packet: Sequence[bytes]
            if not dup and (
                level < 5 or (not ids and alias is None and event.properties is None)
            ):  # the same bytes for every subscriber but the packet identifier
                if qos:
                    head, props, packet_size = shared_head(event, level, qos, retain)
                    id_part = U16.pack(packet_id)
                    packet = (head, id_part + props if props else id_part, event.payload)
                else:
                    packet = shared_qos0(event, level, retain)
                    packet_size = len(packet[0]) + len(packet[1])
            else:
                props = delivery_properties(event, ids, alias) if level == 5 else b""
                name = EMPTY_TOPIC if alias is not None and not new_alias else topic_part(topic)
                packet = publish_chunks(name, event.payload, qos, retain, dup, packet_id, props)
                packet_size = chunks_size(packet)
            if packet_size > max_packet:  # §3.1.2.11.4: discard as if it had been sent
                ready.popleft()
                if dup:
                    del outstanding[packet_id]
                continue
            if size and size + packet_size > budget:
                return True
            ready.popleft()
            size += packet_size
            chunks.extend(packet)
            self._emitted += 1
            if new_alias:
                self._aliases_out[topic] = alias  # type: ignore[assignment]
            if qos and not dup:
                outstanding[packet_id] = Outbound(
                    packet_id, qos, PUB, source, event.offset, (event, subs, source)
                )
                if qos == 2 and source is main and self.persistent:
                    self._unsaved_qos2 = True
                self._next_id = packet_id % MAX_PACKET_ID + 1
                room -= 1
        return False

    def _next_free_id(self) -> int:
        packet_id = self._next_id
        outstanding = self._outstanding
        while packet_id in outstanding:
            packet_id = packet_id % MAX_PACKET_ID + 1
        return packet_id

    def _end_resume(self) -> None:
        """The feed is past what the previous connection sent: messages it had in flight
        that never came again (expired, unsubscribed) are finished."""
        for packet_id in self._resume.values():
            self._outstanding.pop(packet_id, None)
        self._resume.clear()
        self._resume_end = 0

    @staticmethod
    def _identifiers(subs: tuple[FeedSubscription, ...]) -> tuple[int, ...]:
        return tuple(sorted({s.options.identifier for s in subs if s.options.identifier}))

    def _plan(
        self, event: Event, subs: tuple[FeedSubscription, ...], source: Source
    ) -> tuple[int, bool, tuple[int, ...]] | None:
        """QoS, retain flag and subscription identifiers of a delivery; None to skip it."""
        if self._checked_subs and not self._may_receive(event, source):
            return None
        options = source.options
        if options is None:
            if self._no_local and event.offset in self._own:
                subs = tuple(s for s in subs if not s.options.no_local)
                if not subs:
                    return None
            if len(subs) == 1:
                options = subs[0].options
            else:
                granted = max(s.options.qos for s in subs)
                qos = event.qos if event.qos < granted else granted
                retain = source.kind == RETAINED or (
                    event.retain and any(s.options.retain_as_published for s in subs)
                )
                return qos, retain, self._identifiers(subs)
        elif options.no_local and event.offset in self._own:
            return None
        granted = options.qos
        qos = event.qos if event.qos < granted else granted
        retain = source.kind == RETAINED or (event.retain and options.retain_as_published)
        return qos, retain, (options.identifier,) if options.identifier else ()

    def _may_receive(self, event: Event, source: Source) -> bool:
        """Per-topic ACL check of a delivery (only while a subscription needs it)."""
        right = Right.READ if source.kind == REPLAY else Right.SUBSCRIBE
        return self.access.allows(right, event.topic)

    # -- saving the session ------------------------------------------------------------

    def _mark_dirty(self, *, urgent: bool = False) -> None:
        """Ask the saver to store the session (persistent sessions only); the first
        call starts the saver. While closing, :meth:`_end_session` saves anyway."""
        if not self.persistent:
            return
        if self._dirty is None or self._urgent is None:
            if self._nursery is None:
                return
            self._dirty = trio.Event()
            self._urgent = trio.Event()
            self._nursery.start_soon(self._guard, self._save_loop)
        self._dirty.set()
        if urgent:
            self._urgent.set()

    async def _save_loop(self) -> None:
        session = self.session
        assert session is not None
        while True:
            assert self._dirty is not None and self._urgent is not None
            await self._dirty.wait()
            if not self._urgent.is_set():
                with trio.move_on_after(self.settings.session_save_interval):
                    await self._urgent.wait()
            self._dirty = trio.Event()
            self._urgent = trio.Event()
            await self._save()

    async def _save(self) -> None:
        """Store the session now; then send the acks that waited for it."""
        session = self.session
        assert session is not None
        pubrecs, self._pubrec_after_save = self._pubrec_after_save, []
        pubcomps, self._pubcomp_after_save = self._pubcomp_after_save, []
        pubrels, self._pubrel_after_save = self._pubrel_after_save, []
        self._snapshot()
        await self.broker.sessions.save(session)
        if pubrecs or pubcomps or pubrels:
            control = self._control
            control.extend(_ack(0x50, packet_id) for packet_id in pubrecs)
            control.extend(_ack(0x70, packet_id) for packet_id in pubcomps)
            control.extend(_ack(0x62, packet_id) for packet_id in pubrels)
            self._kick()

    def _snapshot(self) -> None:
        """Write the position and in-flight state into the session (see the module docs)."""
        session = self.session
        feed = self._feed
        assert session is not None and feed is not None
        frontier = feed.handled_end
        main = self._main
        for event, _, source in self._ready:
            if source is main:
                frontier = min(frontier, event.offset)
                break
        if self._resume and frontier >= self._resume_end:
            self._end_resume()
        position = frontier
        out: dict[str, list[int]] = {}
        rel: list[int] = []
        for entry in self._outstanding.values():
            if entry.state == REL:
                rel.append(entry.packet_id)
            elif entry.source is main:
                out[str(entry.offset)] = [entry.packet_id, entry.qos]
                position = min(position, entry.offset)
        session.position = position
        session.inflight = {
            "out": out,
            "rel": rel,
            "in": [packet_id for packet_id, state in self._rx.items() if state == STORED],
            "sent_end": max(frontier, self._resume_end),
        }


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


class _Refused(Exception):
    """A subscription refused with a reason code."""

    def __init__(self, code: ReasonCode, message: str) -> None:
        super().__init__(message)
        self.code = code
