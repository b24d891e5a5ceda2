"""The sans-IO MQTT session: packets and a clock in; bytes to send and engine requests out.

:class:`MQTTSession` is one connected client's protocol state after CONNACK,
with no sockets, no tasks and no trio (in the manner of h11). The trio shell
(:mod:`tidelog.protocols.mqtt.connection`) moves bytes and runs the engine
calls; tests drive this class directly (tests/protocols/mqtt/test_session_core.py).

In: :meth:`~MQTTSession.receive` takes one read's decoded packets and the time;
:meth:`~MQTTSession.durable` takes the engine's answer to a publish request;
deliveries go to :attr:`~MQTTSession.planner`'s ready queue, which the shell's
writer drains; :meth:`~MQTTSession.take_saved_acks` / :meth:`~MQTTSession.saved`
bracket a store of the session, :meth:`~MQTTSession.snapshot` /
:meth:`~MQTTSession.restore` write and read it.

Out: :attr:`~MQTTSession.control` is the bytes waiting to be sent (acks,
PINGRESP, SUBACK); ``receive`` returns the requests for the engine in order:
a :class:`PublishRequest` (every PUBLISH of the read that the ACL allows, for one
``publish_nowait``) and the SUBSCRIBE/UNSUBSCRIBE packets (for the subscription
layer, which opens feeds). Three callbacks tell the shell what to do next:
``wake`` (something is queued to send), ``dirty(urgent)`` (store the session)
and ``stop(close)`` (end the connection).

Inbound QoS state machine: a QoS 1 PUBLISH is counted against the server's
Receive Maximum until the engine says it is durable, then PUBACKed; a QoS 2
PUBLISH is PENDING until durable, then STORED and PUBRECed (for a persistent
session only once the stored session lists it), and forgotten at PUBREL.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Callable, Sequence
from typing import Final

from tidelog.engine.sessions import Session
from tidelog.errors import StorageFullError
from tidelog.protocols.mqtt.admission import Limits
from tidelog.protocols.mqtt.encoder import encode
from tidelog.protocols.mqtt.outbound import event_properties
from tidelog.protocols.mqtt.packets import (
    Disconnect,
    Packet,
    Pingreq,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Subscribe,
    Unsubscribe,
    Will,
)
from tidelog.protocols.mqtt.planner import EMPTY, NO_IDS, PUB, REL, SHARED, Outbound, Planner
from tidelog.protocols.mqtt.properties import NO_PROPERTIES, Properties
from tidelog.protocols.mqtt.reason_codes import ReasonCode
from tidelog.protocols.mqtt.replies import Close, fitted
from tidelog.protocols.mqtt.settings import MQTTSettings
from tidelog.protocols.mqtt.stored_session import RX_WINDOW, Inflight
from tidelog.security import Access, Right
from tidelog.security.limits import Limits as NameLimits
from tidelog.security.limits import Name, NameTooLongError, QuotaExceededError, UserQuotas
from tidelog.storage import Event, NewEvent, Provenance

log = logging.getLogger("tidelog.protocols.mqtt.connection")

PINGRESP: Final = b"\xd0\x00"
NO_EVENTS: Final[list[NewEvent]] = []
"""Stands for "no PUBLISH in this read yet" (never appended to)."""
# inbound QoS 2 states
PENDING, STORED = 1, 2

_ACK = struct.Struct(">BBH").pack
_PUBACK_CODES: Final = frozenset(
    {ReasonCode.TOPIC_NAME_INVALID, ReasonCode.QUOTA_EXCEEDED, ReasonCode.NOT_AUTHORIZED}
)
"""Refusal codes a PUBACK/PUBREC may carry that the limits use."""
MAX_STRING_CHARS: Final = 65_535


def ack(first: int, packet_id: int) -> bytes:
    """A 4-byte PUBACK/PUBREC/PUBREL/PUBCOMP without reason code (success, or 3.x)."""
    return _ACK(first, 2, packet_id)


class PublishRequest:
    """One read's PUBLISHes for one ``publish_nowait``; ``meta`` is ``qos << 16 |
    packet_id`` per event (0 for QoS 0), handed back to :meth:`MQTTSession.durable`."""

    __slots__ = ("events", "meta")

    def __init__(self, events: list[NewEvent], meta: list[int]) -> None:
        self.events = events
        self.meta = meta


Request = PublishRequest | Subscribe | Unsubscribe


def _nothing(*args: object) -> None:
    pass


class MQTTSession:
    """One connected client's MQTT state (see the module docs)."""

    __slots__ = (
        "access",
        "aliases_in",
        "close",
        "control",
        "deadline",
        "dirty",
        "disconnected",
        "error",
        "level",
        "names",
        "persistent",
        "planner",
        "problem_info",
        "pubcomp_after_save",
        "pubrec_after_save",
        "pubrel_after_save",
        "quotas",
        "receive_maximum",
        "rx",
        "rx_count",
        "rx_stored",
        "rx_stored_seq",
        "session",
        "shared_resume",
        "snapshots",
        "stop",
        "timeout",
        "topic_alias_maximum",
        "topic_chars_ok",
        "wake",
    )

    def __init__(
        self,
        session: Session,
        level: int,
        access: Access,
        limits: Limits,
        settings: MQTTSettings,
        *,
        persistent: bool = False,
        names: NameLimits | None = None,
        quotas: UserQuotas | None = None,
    ) -> None:
        self.session = session
        """The engine's session (stored when ``persistent``)."""
        self.level = level
        self.access = access
        self.persistent = persistent
        self.problem_info = limits.problem_info if level == 5 else True
        self.receive_maximum = settings.receive_maximum
        self.topic_alias_maximum = settings.topic_alias_maximum
        self.planner = Planner(access, level, limits, settings.max_send_bytes)
        self.planner.persistent = persistent
        self.control: list[bytes] = []
        self.aliases_in: dict[int, str] = EMPTY
        self.rx: dict[int, int] = {}
        """Inbound QoS 2 packet identifier -> PENDING or STORED."""
        self.rx_count = 0
        """Inbound QoS 1/2 PUBLISHes not yet acknowledged (against Receive Maximum)."""
        self.rx_stored: int | None = None
        """The ``rx_end`` of the newest stored session known durable (None: the stored
        ``in`` is complete; see :mod:`~tidelog.protocols.mqtt.stored_session`)."""
        self.rx_stored_seq = 0
        """Which snapshot ``rx_stored`` comes from (saves may finish out of order)."""
        self.snapshots = 0
        self.timeout = limits.keep_alive * 1.5 if limits.keep_alive else math.inf
        self.deadline = math.inf
        self.pubrec_after_save: list[int] = NO_IDS
        """Inbound QoS 2 PUBRECs waiting for the session to be stored."""
        self.pubcomp_after_save: list[int] = NO_IDS
        self.pubrel_after_save: list[int] = NO_IDS
        self.shared_resume: dict[str, list[tuple[int, int]]] = EMPTY
        """A resumed session's shared QoS 2 messages in flight (for the subscriptions)."""
        self.disconnected = False
        self.close: Close | None = None
        """Set by DISCONNECT: how the connection ends."""
        self.error: Close | None = None
        """Set by :meth:`receive` when the client broke the protocol."""
        self.wake: Callable[[], None] = _nothing
        self.dirty: Callable[[bool], None] = _nothing
        self.stop: Callable[[Close], None] = _nothing
        self.names = names
        """Name maxima of the security layer (None: not checked, as in unit tests)."""
        self.quotas = quotas
        """Per-user quotas (retained messages); None: not counted."""
        self.topic_chars_ok = (
            names.maximum(Name.TOPIC) // 4 if names is not None else MAX_STRING_CHARS
        )
        """Topics of at most this many characters are within the maximum whatever
        they hold (4 bytes a character at most): the common case costs one len()."""

    # -- the clock -------------------------------------------------------------------

    def expect_packets(self, now: float) -> float:
        """The client has until the returned time to send something (keep alive:
        1.5 times its interval, §3.1.2.10; ``inf`` without one)."""
        self.deadline = now + self.timeout
        return self.deadline

    def timed_out(self, now: float) -> bool:
        """Whether the keep alive expired at ``now`` with nothing received."""
        return now >= self.deadline

    # -- packets in --------------------------------------------------------------------

    def receive(self, packets: list[Packet], now: float) -> Sequence[Request]:
        """Handle one read's packets; returns the engine requests in order (most
        reads, acks and PINGREQs, return none and allocate nothing). A protocol
        violation stops at the offending packet and sets :attr:`error` (the
        requests before it are still returned, to be carried out)."""
        self.deadline = now + self.timeout
        requests: list[Request] | None = None
        events: list[NewEvent] = NO_EVENTS
        meta: list[int] = NO_IDS
        outstanding = self.planner.outstanding
        try:
            for packet in packets:
                kind = type(packet)
                if kind is Publish:
                    if events is NO_EVENTS:
                        events, meta = [], []
                    self._on_publish(packet, events, meta)  # type: ignore[arg-type]
                elif kind is Puback:  # inline: a subscriber's most frequent packet
                    entry = outstanding.get(packet.packet_id)  # type: ignore[union-attr,arg-type]
                    if entry is not None and entry.qos == 1:
                        self._complete(entry)
                elif kind is Pubrec:
                    self._on_pubrec(packet)  # type: ignore[arg-type]
                elif kind is Pubrel:
                    self._on_pubrel(packet)  # type: ignore[arg-type]
                elif kind is Pubcomp:
                    self._on_pubcomp(packet)  # type: ignore[arg-type]
                elif kind is Pingreq:
                    self.control.append(PINGRESP)
                elif kind is Subscribe or kind is Unsubscribe:
                    if requests is None:
                        requests = []
                    if events:
                        requests.append(PublishRequest(events, meta))
                        events, meta = NO_EVENTS, NO_IDS
                    requests.append(packet)  # type: ignore[arg-type]
                elif kind is Disconnect:
                    self._on_disconnect(packet)  # type: ignore[arg-type]
                    break
                else:  # AUTH: no authentication method was accepted at CONNECT
                    raise Close(ReasonCode.PROTOCOL_ERROR, "AUTH without an authentication method")
        except Close as close:
            self.error = close
        if events:
            if requests is None:
                return (PublishRequest(events, meta),)
            requests.append(PublishRequest(events, meta))
        return requests if requests is not None else ()

    def _on_publish(self, packet: Publish, events: list[NewEvent], meta: list[int]) -> None:
        qos = packet.qos
        topic = packet.topic
        props = packet.properties
        stored_props = None
        if props is not NO_PROPERTIES:
            alias = props.topic_alias
            if alias is not None:
                if not 0 < alias <= self.topic_alias_maximum:
                    raise Close(ReasonCode.TOPIC_ALIAS_INVALID, f"topic alias {alias} is invalid")
                if topic:
                    if self.aliases_in is EMPTY:
                        self.aliases_in = {}
                    self.aliases_in[alias] = topic
                else:
                    known = self.aliases_in.get(alias)
                    if known is None:
                        raise Close(ReasonCode.PROTOCOL_ERROR, f"topic alias {alias} is not set")
                    topic = known
            stored_props = event_properties(props)
        names = self.names
        if names is not None and (
            len(topic) > self.topic_chars_ok
            or (stored_props is not None and stored_props.user_properties)
        ):
            try:
                names.check_name(Name.TOPIC, topic)
                if stored_props is not None and stored_props.user_properties:
                    for key, _value in stored_props.user_properties:
                        names.check_name(Name.USER_PROPERTY_KEY, key)
            except NameTooLongError as exc:
                self._refuse_limit(packet, exc.reason_code, str(exc))
                return
        if not self.access.allows(Right.PUBLISH, topic):
            self._refuse_publish(packet, topic)
            return
        event = NewEvent(topic, packet.payload, qos, packet.retain, stored_props)
        if qos == 2 and self.persistent:
            # the log itself says which packet identifiers were stored (see restore)
            event.provenance = Provenance(self.session.client_id, packet.packet_id)
        if packet.retain and self.quotas is not None:
            try:
                self.quotas.retain(self.access.owner, (event,))
            except QuotaExceededError as exc:
                self._refuse_limit(packet, ReasonCode.QUOTA_EXCEEDED, str(exc))
                return
        if qos:
            packet_id = packet.packet_id
            assert packet_id is not None
            if qos == 2:
                state = self.rx.get(packet_id)
                if state is not None:  # a resend of a QoS 2 message already taken
                    if state == STORED and packet_id not in self.pubrec_after_save:
                        self.control.append(ack(0x50, packet_id))
                    return
                self.rx[packet_id] = PENDING
            self.rx_count += 1
            if self.level == 5 and self.rx_count > self.receive_maximum:
                raise Close(
                    ReasonCode.RECEIVE_MAXIMUM_EXCEEDED,
                    f"more than {self.receive_maximum} QoS 1/2 PUBLISH unacknowledged",
                )
            meta.append(qos << 16 | packet_id)
        else:
            meta.append(0)
        events.append(event)

    def _refuse_limit(self, packet: Publish, code: int, message: str) -> None:
        """A PUBLISH past a name maximum or a quota (docs/security.md, "Limits"): MQTT 5
        QoS 1/2 gets PUBACK/PUBREC with ``code`` (0x90 Topic Name invalid, 0x97 Quota
        exceeded; a user property key: 0x83, PUBACK has no 0x95) and the connection
        goes on; QoS 0, which has no reply, and 3.x, which has no negative
        acknowledgement, end the connection (DISCONNECT ``code`` in MQTT 5): nothing
        is acknowledged that was not stored."""
        log.info("PUBLISH refused: %s", message)
        packet_id = packet.packet_id
        if self.level < 5 or not packet.qos or packet_id is None:
            raise Close(ReasonCode(code), message)
        if code not in _PUBACK_CODES:
            code = ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR
        props = Properties(reason_string=message[:200]) if self.problem_info else NO_PROPERTIES
        reply = Puback if packet.qos == 1 else Pubrec
        self.control.append(encode(reply(packet_id, ReasonCode(code), props), 5))

    def _refuse_publish(self, packet: Publish, topic: str) -> None:
        """A PUBLISH the ACL denies: v5 gets PUBACK/PUBREC 0x87; 3.x, like mosquitto,
        gets a normal PUBACK/PUBREC (the message is dropped, not stored); QoS 0 is
        dropped silently. Sent at once (it may overtake acks of earlier PUBLISHes
        still waiting for their commit)."""
        log.info("PUBLISH to %r not authorized", topic)
        packet_id = packet.packet_id
        if not packet.qos or packet_id is None:
            return
        if self.level == 5:
            denied = ReasonCode.NOT_AUTHORIZED
            props = Properties(reason_string=f"not authorized to publish to {topic!r}"[:200])
            if not self.problem_info:
                props = NO_PROPERTIES
            reply = Puback if packet.qos == 1 else Pubrec
            self.control.append(fitted(reply(packet_id, denied, props), 5, self.planner.max_packet))
            return
        if packet.qos == 1:
            self.control.append(ack(0x40, packet_id))
        else:
            if self.rx.get(packet_id) is None:
                self.rx[packet_id] = STORED
                self.rx_count += 1
            self.control.append(ack(0x50, packet_id))

    def durable(self, meta: list[int], result: list[Event] | BaseException) -> None:
        """The engine's answer to a :class:`PublishRequest`: durable, or refused."""
        control = self.control
        if isinstance(result, BaseException):
            log.warning("publish refused: %s", result)
            if self.level < 5:
                if any(meta):
                    self.stop(Close(ReasonCode.UNSPECIFIED_ERROR, f"publish refused: {result}"))
                return
            code = (
                ReasonCode.QUOTA_EXCEEDED
                if isinstance(result, StorageFullError)
                else ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR
            )
            props = Properties(reason_string=str(result)[:200]) if self.problem_info else None
            max_packet = self.planner.max_packet
            for entry in meta:
                qos, packet_id = entry >> 16, entry & 0xFFFF
                if qos == 1:
                    self.rx_count -= 1
                    puback = Puback(packet_id, code, props or NO_PROPERTIES)
                    control.append(fitted(puback, 5, max_packet))
                elif qos == 2:
                    self.rx_count -= 1
                    self.rx.pop(packet_id, None)
                    pubrec = Pubrec(packet_id, code, props or NO_PROPERTIES)
                    control.append(fitted(pubrec, 5, max_packet))
            self.wake()
            return
        planner = self.planner
        own = planner.no_local > 0
        urgent = False
        for entry, event in zip(meta, result, strict=True):
            if own:
                planner.remember_own(event.offset)
            if entry:
                packet_id = entry & 0xFFFF
                if entry >> 16 == 1:
                    self.rx_count -= 1
                    control.append(_ACK(0x40, 2, packet_id))
                else:
                    self.rx[packet_id] = STORED
                    if self.persistent:
                        if self.pubrec_after_save is NO_IDS:
                            self.pubrec_after_save = []
                        self.pubrec_after_save.append(packet_id)
                        urgent = True
                    else:
                        control.append(ack(0x50, packet_id))
        if urgent:
            self.dirty(True)
        self.wake()

    def _on_pubrec(self, packet: Pubrec) -> None:
        packet_id = packet.packet_id
        if packet_id in self.pubrel_after_save:
            return  # a resent PUBREC: its PUBREL goes once the session is stored
        entry = self.planner.outstanding.get(packet_id)
        if entry is None or entry.qos != 2:
            if self.level == 5:
                self.control.append(
                    encode(Pubrel(packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND), 5)
                )
            else:
                self.control.append(ack(0x62, packet_id))
            return
        if packet.reason_code >= 0x80:  # the client refused it: the exchange ends here
            self._complete(entry)
            return
        if entry.state == PUB:
            entry.state = REL
            entry.delivery = None
            source = entry.source
            if source is not None and source.consumer is not None:
                self.planner.settle(source, entry.offset)  # received: not for another
                self.wake()
            if entry.source is self.planner.main:
                self.planner.resume.pop(entry.offset, None)
                if self.persistent:
                    # once the client has PUBREL it forgets the identifier: the stored
                    # session must say REL by then, or a crash would send the message
                    # again as new (delivered twice)
                    if self.pubrel_after_save is NO_IDS:
                        self.pubrel_after_save = []
                    self.pubrel_after_save.append(packet_id)
                    self.dirty(True)
                    return
            self._mark_dirty()
        self.control.append(ack(0x62, packet_id))

    def _on_pubcomp(self, packet: Pubcomp) -> None:
        entry = self.planner.outstanding.get(packet.packet_id)
        if entry is not None and entry.state == REL:
            self._complete(entry)

    def _complete(self, entry: Outbound) -> None:
        planner = self.planner
        del planner.outstanding[entry.packet_id]
        source = entry.source
        if source is planner.main and entry.state == PUB:
            planner.resume.pop(entry.offset, None)
        elif source is not None and source.consumer is not None:
            if entry.state == PUB:
                planner.settle(source, entry.offset)  # PUBACK (or a refusing PUBREC)
            self._mark_dirty()
            self.wake()  # the shell acknowledges it, and the group's pump may fetch more
            return
        self._mark_dirty()
        if planner.ready:
            self.wake()

    def _on_pubrel(self, packet: Pubrel) -> None:
        packet_id = packet.packet_id
        if packet_id in self.pubcomp_after_save:
            return  # a resent PUBREL: its PUBCOMP goes once the session is stored
        if self.rx.get(packet_id) != STORED:  # unknown, or before its PUBREC (not stored)
            if self.level == 5:
                self.control.append(
                    encode(Pubcomp(packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND), 5)
                )
            else:
                self.control.append(ack(0x70, packet_id))
            return
        del self.rx[packet_id]
        self.rx_count -= 1
        if self.persistent:
            # the client may reuse the identifier once it has PUBCOMP: the stored
            # session must no longer list it as taken, or a new PUBLISH with it after
            # a crash would be answered as a resend and never stored
            if self.pubcomp_after_save is NO_IDS:
                self.pubcomp_after_save = []
            self.pubcomp_after_save.append(packet_id)
            self.dirty(True)
        else:
            self.control.append(ack(0x70, packet_id))

    def _on_disconnect(self, packet: Disconnect) -> None:
        will = False
        if self.level == 5:
            session = self.session
            expiry = packet.properties.session_expiry_interval
            if expiry is not None:
                if session.expiry_interval == 0 and expiry != 0:
                    raise Close(
                        ReasonCode.PROTOCOL_ERROR,
                        "DISCONNECT sets a Session Expiry Interval after CONNECT had 0"
                        " (§3.14.2.2.2)",
                    )
                session.expiry_interval = expiry
                self.set_persistent(expiry > 0)
            will = packet.reason_code == ReasonCode.DISCONNECT_WITH_WILL_MESSAGE
        self.disconnected = True
        self.close = Close(
            ReasonCode.NORMAL_DISCONNECTION, "the client disconnected", will=will, reply=False
        )

    def will(self, will: Will | None, close: Close) -> tuple[NewEvent, int] | None:
        """The will to publish as the connection ends, and its delay in seconds (at
        most the session's expiry, §3.1.3.2.2); None if there is none to publish: the
        client disconnected normally, or a connection that took the session over is
        back within the will delay."""
        if will is None or not close.will:
            return None
        delay = 0
        if self.level == 5:
            delay = min(will.properties.will_delay_interval or 0, self.session.expiry_interval)
        if close.code == ReasonCode.SESSION_TAKEN_OVER and delay > 0:
            return None
        props = event_properties(will.properties)
        return NewEvent(will.topic, will.payload, will.qos, will.retain, props), delay

    def set_persistent(self, persistent: bool) -> None:
        self.persistent = self.planner.persistent = persistent

    def _mark_dirty(self) -> None:
        if self.persistent:
            self.dirty(False)

    # -- the stored session --------------------------------------------------------------

    def restore(self) -> None:
        """Take the stored in-flight state of a resumed session: PUBRELs to resend at
        once, PUBLISHes to resend when the feed brings them again, inbound QoS 2
        identifiers already stored."""
        inflight = Inflight.from_json(self.session.inflight)
        planner = self.planner
        for packet_id in inflight.rel:
            planner.outstanding[packet_id] = Outbound(packet_id, 2, REL, None, -1)
            self.control.append(ack(0x62, packet_id))
        if inflight.out:
            planner.resume = {}
        for offset, (packet_id, qos) in inflight.out.items():
            planner.outstanding[packet_id] = Outbound(packet_id, qos, PUB, planner.main, offset)
            planner.resume[offset] = packet_id
        planner.resume_end = inflight.sent_end
        for packet_id in inflight.inbound:
            self.rx[packet_id] = STORED
            self.rx_count += 1
        if inflight.shared:
            self.shared_resume = inflight.shared
        self.rx_stored = inflight.rx_end

    def recovery_range(self, log_end: int) -> tuple[int, int] | None:
        """For a session left by a crash (after :meth:`restore`; ``log_end``: the log's
        end when the broker started): the log range that may hold QoS 2 PUBLISHes of
        this client stored after the session was, or None if there can be none."""
        start = self.rx_stored
        if start is None or start >= log_end:
            return None
        return start, min(log_end, start + RX_WINDOW)

    def recover(self, events: Sequence[Event]) -> list[int]:
        """Take the events this client published in :meth:`recovery_range` (read back
        from the log): their QoS 2 packet identifiers count as received, so a resend
        gets PUBREC without being stored again, and PUBREL gets PUBCOMP. Returns
        the identifiers recovered."""
        recovered = []
        for event in events:
            provenance = event.provenance
            if event.qos != 2 or provenance is None or provenance.packet_id is None:
                continue
            packet_id = provenance.packet_id
            if packet_id not in self.rx:
                self.rx[packet_id] = STORED
                self.rx_count += 1
                recovered.append(packet_id)
        return recovered

    def needs_rx_fence(self, horizon: int, count: int) -> bool:
        """Whether the session must be stored before ``count`` more events with inbound
        QoS 2 among them are submitted (``horizon``: the engine's append horizon):
        yes when the stored session does not say its client's QoS 2 events may follow
        (``rx_end``), or they could land past the range a recovery reads. Only the
        newest snapshot counts, once durable: one still being stored may say
        "complete" (taken before these PUBLISHes came) and overwrite an older one
        that said they may follow."""
        if not self.persistent:
            return False
        stored = self.rx_stored
        return (
            stored is None
            or self.rx_stored_seq != self.snapshots
            or horizon + count > stored + RX_WINDOW
        )

    def snapshot(self, handled_end: int, log_end: int | None = None) -> tuple[int, int | None]:
        """Write the position and in-flight state into the session (see
        :mod:`~tidelog.protocols.mqtt.stored_session`); ``handled_end`` is where the
        main feed has got to, ``log_end`` the engine's end offset (every publish
        callback below it has run). Returns the token to hand to :meth:`saved`."""
        planner = self.planner
        frontier = handled_end
        main = planner.main
        for event, _, source in planner.ready:
            if source is main:
                frontier = min(frontier, event.offset)
                break
        if planner.resume and frontier >= planner.resume_end:
            planner.end_resume()
        position = frontier
        inflight = Inflight(sent_end=max(frontier, planner.resume_end))
        for entry in planner.outstanding.values():
            if entry.state == REL:
                inflight.rel.append(entry.packet_id)
            elif entry.source is main:
                inflight.out[entry.offset] = (entry.packet_id, entry.qos)
                position = min(position, entry.offset)
            elif entry.qos == 2 and entry.source is not None and entry.source.kind == SHARED:
                # taken from the group's feed: only this session may complete it
                inflight.shared.setdefault(entry.source.key, []).append(
                    (entry.offset, entry.packet_id)
                )
        inflight.inbound = [packet_id for packet_id, state in self.rx.items() if state == STORED]
        if log_end is not None and PENDING in self.rx.values():
            # submitted, not yet durable: stored at or above the current end
            inflight.rx_end = log_end
        self.session.position = position
        self.session.inflight = inflight.to_json()
        self.snapshots += 1
        return self.snapshots, inflight.rx_end

    def snapshot_inbound(self) -> tuple[int, int | None]:
        """Update only the inbound QoS 2 part of the session (a session being opened:
        after :meth:`restore` and :meth:`recover`, nothing submitted yet); returns
        the token for :meth:`saved`."""
        inflight = Inflight.from_json(self.session.inflight)
        inflight.inbound = [packet_id for packet_id, state in self.rx.items() if state == STORED]
        inflight.rx_end = None
        self.session.inflight = inflight.to_json()
        self.snapshots += 1
        return self.snapshots, None

    def take_saved_acks(self) -> tuple[list[int], list[int], list[int]]:
        """Before a store: the acks waiting for it (PUBREC, PUBCOMP, PUBREL)."""
        taken = (self.pubrec_after_save, self.pubcomp_after_save, self.pubrel_after_save)
        self.pubrec_after_save = self.pubcomp_after_save = self.pubrel_after_save = NO_IDS
        return taken

    def saved(
        self,
        acks: tuple[list[int], list[int], list[int]] = (NO_IDS, NO_IDS, NO_IDS),
        token: tuple[int, int | None] | None = None,
    ) -> None:
        """After a store: the acks that waited for it go out; ``token`` (from
        :meth:`snapshot`) says which snapshot is now durable."""
        if token is not None and token[0] > self.rx_stored_seq:
            self.rx_stored_seq, self.rx_stored = token
        pubrecs, pubcomps, pubrels = acks
        if pubrecs or pubcomps or pubrels:
            control = self.control
            control.extend(ack(0x50, packet_id) for packet_id in pubrecs)
            control.extend(ack(0x70, packet_id) for packet_id in pubcomps)
            control.extend(ack(0x62, packet_id) for packet_id in pubrels)
            self.wake()
