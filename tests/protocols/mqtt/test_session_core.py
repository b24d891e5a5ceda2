"""The sans-IO session core, driven directly: packets and a clock in, bytes and engine
requests out. No sockets, no trio, no sleeps: the tests play the shell (they carry out
the publish requests by answering :meth:`MQTTSession.durable` with stored events) and
the clock is a number."""

from __future__ import annotations

import math

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.protocols.mqtt.strategies import publishes
from tidelog.engine.fanout import FeedSubscription
from tidelog.engine.sessions import NEVER_EXPIRES, Session
from tidelog.protocols.mqtt import (
    Connect,
    Disconnect,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Subscribe,
    Subscription,
)
from tidelog.protocols.mqtt.admission import Limits, connack, negotiate, session_expiry
from tidelog.protocols.mqtt.decoder import Decoder, Role
from tidelog.protocols.mqtt.packets import Packet, Will
from tidelog.protocols.mqtt.planner import MAIN, RETAINED, Source
from tidelog.protocols.mqtt.properties import Properties
from tidelog.protocols.mqtt.reason_codes import ReasonCode
from tidelog.protocols.mqtt.replies import Close
from tidelog.protocols.mqtt.session import MQTTSession, PublishRequest
from tidelog.protocols.mqtt.settings import MQTTSettings
from tidelog.protocols.mqtt.stored_session import RX_WINDOW, Inflight, SubOptions
from tidelog.security.acl import Access, Policy, Principal
from tidelog.storage import Event, Provenance


class Shell:
    """What the trio shell does around a session, done by hand: records wake-ups,
    save requests and stops, decodes what the session queued for the client, and
    answers publish requests with events at increasing offsets."""

    def __init__(self, core: MQTTSession) -> None:
        self.core = core
        self.wakes = 0
        self.saves: list[bool] = []
        self.stops: list[Close] = []
        self.offset = 100
        self.stored: list[Event] = []
        self.decoder = Decoder(core.level, role=Role.CLIENT)
        core.wake = self._wake
        core.dirty = self.saves.append
        core.stop = self.stops.append

    def _wake(self) -> None:
        self.wakes += 1

    def sent(self) -> list[Packet]:
        """What the writer would send now (control packets and planned PUBLISHes)."""
        chunks, self.core.control = self.core.control, []
        if self.core.planner.ready:
            self.core.planner.emit(chunks)
        return self.decoder.feed(b"".join(chunks)) if chunks else []

    def receive(self, *packets: Packet, now: float = 0.0) -> list[PublishRequest]:
        """Hand packets to the session; returns its publish requests (not yet durable)."""
        requests = self.core.receive(list(packets), now)
        return [r for r in requests if isinstance(r, PublishRequest)]

    def commit(self, request: PublishRequest) -> list[Event]:
        """The engine stored the request's events."""
        events = []
        for new in request.events:
            events.append(Event(self.offset, 0, new.topic, new.payload, new.qos, new.retain))
            self.offset += 1
        self.stored.extend(events)
        self.core.durable(request.meta, events)
        return events


def make(
    level: int = 5,
    *,
    keep_alive: int = 0,
    window: int = 65_535,
    alias_max_out: int = 0,
    persistent: bool = False,
    session: Session | None = None,
    **settings: object,
) -> tuple[MQTTSession, Shell]:
    core = MQTTSession(
        session if session is not None else Session("core"),
        level,
        Access(Policy(), Principal(None, "core")),
        Limits(window, alias_max_out=alias_max_out, keep_alive=keep_alive),
        MQTTSettings(**settings),  # type: ignore[arg-type]
        persistent=persistent,
    )
    return core, Shell(core)


def deliver(core: MQTTSession, *events: Event, qos: int = 1, source: Source | None = None) -> None:
    """Deliveries from the main feed for one subscription granted ``qos``."""
    sub = FeedSubscription(None, "#", SubOptions(qos), 0)  # type: ignore[arg-type]
    source = source if source is not None else core.planner.main
    core.planner.own_ready().extend((event, (sub,), source) for event in events)


def event(offset: int, topic: str = "t", qos: int = 1, payload: bytes = b"x") -> Event:
    return Event(offset, 0, topic, payload, qos)


# -- keep alive ------------------------------------------------------------------------


def test_keep_alive_is_one_and_a_half_intervals_from_the_last_packet() -> None:
    core, shell = make(keep_alive=10)
    assert core.expect_packets(100.0) == 115.0
    assert not core.timed_out(114.9)
    assert core.timed_out(115.0)
    shell.receive(Pingreq(), now=112.0)  # a packet moves the deadline
    assert [type(p) for p in shell.sent()] == [Pingresp]
    assert not core.timed_out(126.9)
    assert core.timed_out(127.0)


def test_no_keep_alive_never_times_out() -> None:
    core, _ = make(keep_alive=0)
    assert core.expect_packets(0.0) == math.inf
    assert not core.timed_out(1e12)


def test_server_keep_alive_overrides_the_clients_and_is_announced() -> None:
    settings = MQTTSettings(server_keep_alive=20)
    connect = Connect(client_id="k", keep_alive=60, protocol_level=5)
    assert negotiate(connect, settings).keep_alive == 20
    ack = Decoder(5, role=Role.CLIENT).feed(connack(connect, settings, "k", False))[0]
    assert ack.properties.server_keep_alive == 20  # type: ignore[attr-defined]


# -- session expiry --------------------------------------------------------------------


def test_session_expiry_from_connect() -> None:
    v5 = Properties(session_expiry_interval=300)
    assert session_expiry(Connect(client_id="a", protocol_level=5, properties=v5)) == 300
    assert session_expiry(Connect(client_id="a", protocol_level=5)) == 0
    assert session_expiry(Connect(client_id="a", protocol_level=4, clean_start=False)) == (
        NEVER_EXPIRES
    )
    assert session_expiry(Connect(client_id="a", protocol_level=4, clean_start=True)) == 0


def test_disconnect_changes_the_session_expiry() -> None:
    core, shell = make(session=Session("core", expiry_interval=60), persistent=True)
    shell.receive(Disconnect(properties=Properties(session_expiry_interval=0)))
    assert core.disconnected and core.error is None
    assert core.session.expiry_interval == 0 and not core.persistent
    assert core.close is not None and core.close.code == ReasonCode.NORMAL_DISCONNECTION


def test_disconnect_may_not_set_an_expiry_after_connect_had_none() -> None:
    core, shell = make()
    shell.receive(Disconnect(properties=Properties(session_expiry_interval=30)))
    assert core.error is not None and core.error.code == ReasonCode.PROTOCOL_ERROR
    assert core.session.expiry_interval == 0


# -- inbound QoS 1 and 2 ---------------------------------------------------------------


def test_one_read_is_one_publish_request_acked_when_durable() -> None:
    core, shell = make()
    (request,) = shell.receive(
        Publish("a", b"1", 1, packet_id=1),
        Publish("b", b"2", 0),
        Publish("c", b"3", 1, packet_id=2),
    )
    assert [e.topic for e in request.events] == ["a", "b", "c"]
    assert shell.sent() == []  # nothing is acknowledged before it is durable
    assert core.rx_count == 2
    shell.commit(request)
    assert [(type(p), p.packet_id) for p in shell.sent()] == [(Puback, 1), (Puback, 2)]  # type: ignore[attr-defined]
    assert core.rx_count == 0 and shell.wakes == 1


def test_qos2_inbound_is_stored_once_and_released_by_pubrel() -> None:
    core, shell = make()
    (request,) = shell.receive(Publish("q2", b"once", 2, packet_id=7))
    assert shell.receive(Publish("q2", b"once", 2, packet_id=7, dup=True)) == []  # pending
    shell.commit(request)
    assert [type(p) for p in shell.sent()] == [Pubrec]
    assert shell.receive(Publish("q2", b"once", 2, packet_id=7, dup=True)) == []  # stored
    assert [type(p) for p in shell.sent()] == [Pubrec]  # answered again, not stored
    shell.receive(Pubrel(7))
    assert [(type(p), p.packet_id) for p in shell.sent()] == [(Pubcomp, 7)]  # type: ignore[attr-defined]
    assert core.rx == {} and core.rx_count == 0
    assert len(shell.stored) == 1


def test_persistent_qos2_pubrec_waits_for_the_stored_session() -> None:
    core, shell = make(persistent=True, session=Session("core", expiry_interval=60))
    (request,) = shell.receive(Publish("q2", b"x", 2, packet_id=3))
    shell.commit(request)
    assert shell.sent() == [] and shell.saves == [True]  # urgent save asked for
    acks = core.take_saved_acks()
    core.snapshot(handled_end=0)
    assert Inflight.from_json(core.session.inflight).inbound == [3]
    core.saved(acks)
    assert [(type(p), p.packet_id) for p in shell.sent()] == [(Pubrec, 3)]  # type: ignore[attr-defined]


def test_refused_publish_gets_a_reason_code_and_frees_the_window() -> None:
    core, shell = make()
    (request,) = shell.receive(
        Publish("a", b"1", 1, packet_id=1), Publish("b", b"", 2, packet_id=2)
    )
    core.durable(request.meta, OSError("disk gone"))
    sent = shell.sent()
    assert [(type(p), p.reason_code) for p in sent] == [  # type: ignore[attr-defined]
        (Puback, ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR),
        (Pubrec, ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR),
    ]
    assert core.rx_count == 0 and core.rx == {}


def test_refused_qos1_publish_stops_a_v3_connection() -> None:
    core, shell = make(level=4)
    (request,) = shell.receive(Publish("a", b"1", 1, packet_id=1))
    core.durable(request.meta, OSError("disk gone"))
    assert [close.code for close in shell.stops] == [ReasonCode.UNSPECIFIED_ERROR]


# -- receive maximum -------------------------------------------------------------------


def test_receive_maximum_exceeded_stops_at_the_offending_publish() -> None:
    core, shell = make(receive_maximum=2)
    (request,) = shell.receive(*(Publish("r", b"", 1, packet_id=n) for n in (1, 2, 3, 4)))
    assert [e.payload for e in request.events] == [b"", b""]  # the first two still go
    assert core.error is not None and core.error.code == ReasonCode.RECEIVE_MAXIMUM_EXCEEDED


def test_receive_maximum_counts_only_unacknowledged_publishes() -> None:
    core, shell = make(receive_maximum=2)
    for packet_id in range(1, 10):
        (request,) = shell.receive(Publish("r", b"", 1, packet_id=packet_id))
        shell.commit(request)
    assert core.error is None and core.rx_count == 0


def test_the_clients_receive_maximum_limits_messages_in_flight() -> None:
    core, shell = make(window=2)
    deliver(core, *(event(n) for n in range(5)))
    assert [p.packet_id for p in shell.sent()] == [1, 2]  # type: ignore[attr-defined]
    assert shell.sent() == []  # the window is full
    shell.receive(Puback(1))
    assert [p.packet_id for p in shell.sent()] == [3]  # type: ignore[attr-defined]
    shell.receive(Puback(2), Puback(3))
    assert [p.packet_id for p in shell.sent()] == [4, 5]  # type: ignore[attr-defined]


# -- outbound QoS 1 and 2 --------------------------------------------------------------


def test_outbound_qos1_and_qos2_flows() -> None:
    core, shell = make()
    deliver(core, event(10, qos=1), event(11, qos=2), qos=2)
    first, second = shell.sent()
    assert isinstance(first, Publish) and first.qos == 1
    assert isinstance(second, Publish) and second.qos == 2
    shell.receive(Puback(first.packet_id))
    shell.receive(Pubrec(second.packet_id))
    assert [(type(p), p.packet_id) for p in shell.sent()] == [(Pubrel, second.packet_id)]  # type: ignore[attr-defined]
    assert list(core.planner.outstanding) == [second.packet_id]
    shell.receive(Pubcomp(second.packet_id))
    assert core.planner.outstanding == {}


def test_qos_is_downgraded_to_the_subscriptions() -> None:
    core, shell = make()
    deliver(core, event(1, qos=2), qos=0)
    (message,) = shell.sent()
    assert isinstance(message, Publish) and message.qos == 0
    assert core.planner.outstanding == {}


def test_pubrec_for_an_unknown_packet_id_is_answered_with_not_found() -> None:
    _, shell = make()
    shell.receive(Pubrec(99))
    (reply,) = shell.sent()
    assert isinstance(reply, Pubrel)
    assert reply.reason_code == ReasonCode.PACKET_IDENTIFIER_NOT_FOUND


# -- topic aliases ---------------------------------------------------------------------


def test_inbound_topic_alias_set_then_used() -> None:
    core, shell = make(topic_alias_maximum=4)
    (request,) = shell.receive(
        Publish("long/topic", b"1", 0, properties=Properties(topic_alias=2)),
        Publish("", b"2", 0, properties=Properties(topic_alias=2)),
    )
    assert [e.topic for e in request.events] == ["long/topic", "long/topic"]
    assert core.error is None


@pytest.mark.parametrize(
    ("packet", "code"),
    [
        (Publish("", b"", 0, properties=Properties(topic_alias=3)), ReasonCode.PROTOCOL_ERROR),
        (
            Publish("t", b"", 0, properties=Properties(topic_alias=5)),
            ReasonCode.TOPIC_ALIAS_INVALID,
        ),
    ],
)
def test_bad_inbound_topic_alias(packet: Publish, code: ReasonCode) -> None:
    core, shell = make(topic_alias_maximum=4)
    assert shell.receive(packet) == []
    assert core.error is not None and core.error.code == code


def test_outbound_topic_aliases_up_to_the_clients_maximum() -> None:
    core, shell = make(alias_max_out=1)
    deliver(core, event(1, "a"), event(2, "a"), event(3, "b"), qos=0)
    first, second, third = shell.sent()
    assert isinstance(first, Publish) and first.topic == "a"
    assert first.properties.topic_alias == 1
    assert isinstance(second, Publish) and second.topic == "" and second.properties.topic_alias == 1
    assert isinstance(third, Publish) and third.topic == "b"
    assert third.properties.topic_alias is None  # no alias left


# -- takeover and resume ---------------------------------------------------------------


def test_takeover_resumes_in_flight_messages_with_their_packet_ids() -> None:
    """The old connection's session state, snapshotted as it ends, is what the new one
    restores: unacknowledged messages go again with DUP and the same identifiers,
    acknowledged ones are skipped, PUBRELs are resent at once."""
    session = Session("core", expiry_interval=NEVER_EXPIRES)
    old, shell = make(persistent=True, session=session)
    deliver(old, event(10), event(11), event(12, qos=2), qos=2)
    first, second, third = shell.sent()
    shell.receive(Puback(second.packet_id), Pubrec(third.packet_id))  # type: ignore[attr-defined]
    old.snapshot(handled_end=13)
    assert session.position == 10
    assert Inflight.from_json(session.inflight).rel == [third.packet_id]  # type: ignore[attr-defined]

    new, new_shell = make(persistent=True, session=session)
    new.restore()
    (pubrel,) = new_shell.sent()
    assert isinstance(pubrel, Pubrel) and pubrel.packet_id == third.packet_id  # type: ignore[attr-defined]
    deliver(new, event(10), event(11), event(12, qos=2), event(13), qos=2)  # the feed again
    resent, fresh = new_shell.sent()
    assert isinstance(resent, Publish) and resent.dup
    assert resent.packet_id == first.packet_id and resent.payload == b"x"  # type: ignore[attr-defined]
    assert (
        isinstance(fresh, Publish)
        and not fresh.dup
        and fresh.packet_id
        not in (
            first.packet_id,  # type: ignore[attr-defined]
            third.packet_id,  # type: ignore[attr-defined]
        )
    )


def test_takeover_within_the_will_delay_sends_no_will() -> None:
    will = Will("will/t", b"gone", 1, False, Properties(will_delay_interval=30))
    core, _ = make(session=Session("core", expiry_interval=60))
    taken = Close(ReasonCode.SESSION_TAKEN_OVER, "taken over")
    assert core.will(will, taken) is None
    lost = Close(ReasonCode.UNSPECIFIED_ERROR, "lost", reply=False)
    planned = core.will(will, lost)
    assert planned is not None and planned[1] == 30 and planned[0].topic == "will/t"
    normal = Close(ReasonCode.NORMAL_DISCONNECTION, "bye", will=False)
    assert core.will(will, normal) is None


def test_retained_deliveries_carry_the_retain_flag() -> None:
    core, shell = make()
    retained = Event(5, 0, "r", b"kept", 0, True)
    deliver(core, retained, qos=1, source=core.planner.retained)
    (message,) = shell.sent()
    assert isinstance(message, Publish) and message.retain
    assert core.planner.retained.kind == RETAINED and core.planner.main.kind == MAIN


def test_subscribe_and_unsubscribe_are_requests_in_order_with_publishes() -> None:
    core, _ = make()
    requests = core.receive(
        [
            Publish("a", b"", 0),
            Subscribe(1, [Subscription("x", 1)]),
            Publish("b", b"", 0),
        ],
        0.0,
    )
    assert [type(r).__name__ for r in requests] == ["PublishRequest", "Subscribe", "PublishRequest"]


# -- fuzzing the core without sockets --------------------------------------------------

_small_ids = st.integers(1, 4)
_client_packets = st.one_of(
    publishes(5).map(lambda p: attrs.evolve(p, packet_id=p.packet_id and p.packet_id % 4 + 1)),
    st.builds(Puback, _small_ids),
    st.builds(Pubrec, _small_ids),
    st.builds(Pubrel, _small_ids),
    st.builds(Pubcomp, _small_ids),
    st.just(Pingreq()),
)


@settings(max_examples=200, deadline=None)
@given(
    reads=st.lists(st.lists(_client_packets, max_size=6), max_size=8),
    refuse=st.lists(st.booleans(), max_size=8),
    deliveries=st.integers(0, 6),
)
def test_any_packet_sequence_keeps_the_session_consistent(
    reads: list[list[Packet]], refuse: list[bool], deliveries: int
) -> None:
    """Whatever a client sends (within what the decoder lets through), the session
    raises nothing, queues only well-formed packets, and its inbound accounting adds
    up: once every publish request is answered, the unacknowledged count is exactly
    the QoS 2 messages waiting for PUBREL."""
    core, shell = make(receive_maximum=8, topic_alias_maximum=4, window=3)
    deliver(core, *(event(n, qos=n % 3) for n in range(deliveries)), qos=2)
    for n, read in enumerate(reads):
        for request in shell.receive(*read, now=float(n)):
            if n < len(refuse) and refuse[n]:
                core.durable(request.meta, OSError("refused"))
            else:
                shell.commit(request)
        shell.sent()  # decodes everything queued (a malformed packet would raise)
        if core.error is not None or core.disconnected:
            break
    assert core.rx_count == len(core.rx) >= 0
    assert len(core.planner.outstanding) <= 3


def test_pubrel_before_pubrec_leaves_the_message_pending() -> None:
    """Found by the property test: a PUBREL for a QoS 2 PUBLISH not yet stored used to
    forget it, and the commit then marked it stored with nothing counting it (a later
    PUBLISH with that identifier would have been dropped as a resend)."""
    core, shell = make()
    (request,) = shell.receive(Publish("q2", b"x", 2, packet_id=2), Pubrel(2))
    (reply,) = shell.sent()
    assert isinstance(reply, Pubcomp)
    assert reply.reason_code == ReasonCode.PACKET_IDENTIFIER_NOT_FOUND
    shell.commit(request)
    assert [type(p) for p in shell.sent()] == [Pubrec]
    shell.receive(Pubrel(2))
    assert [type(p) for p in shell.sent()] == [Pubcomp]
    assert core.rx == {} and core.rx_count == 0


def test_inbound_qos2_rx_end_is_stored_while_a_publish_may_be_unrecorded() -> None:
    """A persistent session tells a recovery where its client's QoS 2 events not yet in
    ``in`` may lie (``rx_end``), and only while there may be some; a QoS 2 PUBLISH is
    submitted only once the stored session says so (the fence)."""
    core, shell = make(persistent=True, session=Session("dev", expiry_interval=60))
    assert core.needs_rx_fence(horizon=500, count=1)  # nothing stored says so yet
    (request,) = shell.receive(Publish("q2", b"x", 2, packet_id=3))
    event = request.events[0]
    assert event.provenance is not None
    assert (event.provenance.client_id, event.provenance.packet_id) == ("dev", 3)
    token = core.snapshot(handled_end=0, log_end=500)  # the fence's store: 3 is pending
    assert Inflight.from_json(core.session.inflight).rx_end == 500
    assert core.needs_rx_fence(horizon=500, count=1)  # not durable yet
    core.saved(token=token)
    assert not core.needs_rx_fence(horizon=500, count=1)
    assert core.needs_rx_fence(horizon=500 + RX_WINDOW, count=1)  # could land past it
    shell.commit(request)
    acks = core.take_saved_acks()
    later = core.snapshot(handled_end=0, log_end=501)  # 3 stored and listed: complete
    stored = Inflight.from_json(core.session.inflight)
    assert (stored.inbound, stored.rx_end) == ([3], None)
    # a store of "complete" in flight overrides the stored rx_end once durable: the
    # next QoS 2 PUBLISH must not go on the strength of the older store
    assert core.needs_rx_fence(horizon=501, count=1)
    core.saved(acks, later)
    core.saved(token=token)  # an older store finishing late changes nothing
    assert core.rx_stored is None and core.needs_rx_fence(horizon=501, count=1)


def test_recovered_identifiers_count_as_received() -> None:
    core, shell = make(level=4, persistent=True, session=Session("dev", expiry_interval=60))
    core.session.inflight = Inflight(rx_end=10).to_json()
    core.restore()
    assert core.recovery_range(log_end=12) == (10, 12)
    assert core.recovery_range(log_end=10) is None
    mine = Event(10, 0, "q2", b"x", 2, provenance=Provenance("dev", 8))
    qos1 = Event(11, 0, "q1", b"y", 1, provenance=Provenance("dev", 9))
    assert core.recover([mine, qos1]) == [8]
    assert shell.receive(Publish("q2", b"x", 2, packet_id=8, dup=True)) == []
    assert [(type(p), p.packet_id) for p in shell.sent()] == [(Pubrec, 8)]  # type: ignore[attr-defined]
    (request,) = shell.receive(Publish("q1", b"y", 1, packet_id=9, dup=True))  # QoS 1: stored
    assert len(request.events) == 1
