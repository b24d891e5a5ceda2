"""The sans-IO parts of the mesh: batches and hops, routes and cycles, positions."""

from __future__ import annotations

import pytest

from tidelog.mesh import wire
from tidelog.mesh.positions import MeshPositions
from tidelog.mesh.routing import Route, closes_cycle, reachable
from tidelog.mesh.seen import MAX_ABOVE, SeenOffsets
from tidelog.mesh.stamps import digest, stamp, stamped_origin
from tidelog.storage import records
from tidelog.storage.records import Event, NewEvent, Properties, Provenance, encode_record


def event(offset: int, topic: str = "t/a", provenance: Provenance | None = None) -> Event:
    return Event(
        offset, 1_000 + offset, topic, f"p{offset}".encode(), 1, False, Properties(), provenance
    )


def test_a_local_event_leaves_with_this_node_as_origin_and_first_hop() -> None:
    local = event(7, provenance=Provenance(client_id="dev", packet_id=3))
    out = wire.forwarded(local, "edge-1", "aa11")
    assert out.provenance == Provenance(
        origin_node="edge-1", origin_offset=7, hop_path=("edge-1/aa11/7",)
    )  # the MQTT publish's client id and packet id stay behind


def test_a_forwarded_event_keeps_its_origin_and_gains_a_hop() -> None:
    came = event(
        40,
        provenance=Provenance(origin_node="edge-1", origin_offset=7, hop_path=("edge-1/aa11/7",)),
    )
    out = wire.forwarded(came, "region", "bb22")
    assert out.provenance is not None
    assert (out.provenance.origin_node, out.provenance.origin_offset) == ("edge-1", 7)
    assert [str(h) for h in wire.hops(out.provenance)] == ["edge-1/aa11/7", "region/bb22/40"]


def test_batches_round_trip_with_provenance() -> None:
    events = [event(i, f"t/{i}") for i in range(5)]
    decoded = wire.decode_batch(wire.encode_batch(events, "n1", "cafe"))
    assert [(e.topic, e.payload) for e in decoded] == [(e.topic, e.payload) for e in events]
    assert [e.provenance.origin_offset for e in decoded if e.provenance] == [0, 1, 2, 3, 4]


def test_a_batch_holds_the_records_the_log_format_gives_the_forwarded_events() -> None:
    from tidelog.storage.records import encode_record

    came = Provenance(origin_node="e1", origin_offset=9, hop_path=("e1/aa/9", "r/bb/40"))
    events = [
        event(0),
        Event(1, 5, "t/b", b"", 2, True, None, Provenance(client_id="dev", packet_id=4)),
        Event(2, 6, "t/c", b"x" * 300, 0, False, Properties(content_type="a/b"), came),
        Event(3, 7, "t/a", b"y", 1, False, None, Provenance(origin_offset=3)),
    ]
    rename = {"t/a": "up/t/a"}.get
    payload = wire.encode_batch(events, "n1", "cafe", rename)
    expected = b"".join(
        len(r).to_bytes(4, "big") + r
        for r in (
            encode_record(wire.forwarded(e, "n1", "cafe", rename), e.timestamp) for e in events
        )
    )
    assert payload == expected
    assert [e.topic for e in wire.decode_batch(payload)] == ["up/t/a", "t/b", "t/c", "up/t/a"]


LOCAL_EVENTS = [
    Event(0, 0, "t/a", b"", 0, False, None, None),
    Event(1, 5, "t/b", b"p" * 300, 2, True, None, Provenance(client_id="dev", packet_id=4)),
    Event(10_000_000, 1_700_000_000_000, "a" * 500, b"y" * 70_000, 3, True, None, None),
    Event(2**63 - 1, 2**64 - 1, "t/\u00e9\u4e2d", b"x", 1, False, None, None),
]
"""In offset order, as a log gives them (a batch whose offsets fall is refused)."""


@pytest.mark.parametrize("path", ["compiled", "python"])
def test_a_batch_of_local_events_is_the_same_bytes_on_either_path(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The usual live batch (local events, no prefixes) is built by the extension's
    ``link_batch`` when it is built, else in Python: the same records either way."""
    if path == "compiled":
        if records.link_batch is None:
            pytest.skip("the extension (with link_batch) is not built, or TIDELOG_PURE_PYTHON")
        assert records.link_batch(LOCAL_EVENTS, b"\x03\x00\x02n1", b"n1/cafe/") is not None
    else:
        monkeypatch.setattr(wire, "link_batch", None)
    expected = b"".join(
        len(r).to_bytes(4, "big") + r
        for r in (encode_record(wire.forwarded(e, "n1", "cafe"), e.timestamp) for e in LOCAL_EVENTS)
    )
    assert wire.encode_batch(LOCAL_EVENTS, "n1", "cafe") == expected
    decoded = wire.decode_batch(expected, "n1")
    assert [e.topic for e in decoded] == [e.topic for e in LOCAL_EVENTS]


@pytest.mark.parametrize(
    "other",
    [
        event(5),  # MQTT 5 properties
        event(5, provenance=Provenance(origin_node="e1", origin_offset=2, hop_path=("e1/aa/2",))),
        Event(5, 1, "t/x", bytearray(b"x"), 1, False, None, None),  # not bytes
        Event(-1, 1, "t/x", b"x", 1, False, None, None),  # Python's struct refuses it
        Event(5, 1, "t/\ud800", b"x", 1, False, None, None),  # not UTF-8: Python's raises
    ],
)
def test_the_compiled_batch_leaves_any_other_event_to_python(other: Event) -> None:
    if records.link_batch is None:
        pytest.skip("the extension (with link_batch) is not built, or TIDELOG_PURE_PYTHON")
    assert records.link_batch([*LOCAL_EVENTS[:2], other], b"\x03\x00\x02n1", b"n1/c/") is None


@pytest.mark.parametrize(
    "payload",
    [b"\x00\x00\x00\x09abc", b"\x00\x00", b"\x00\x00\x00\x03xyz"],
)
def test_bad_batches_are_protocol_errors(payload: bytes) -> None:
    with pytest.raises(wire.LinkProtocolError):
        wire.decode_batch(payload)


def test_a_batch_of_events_without_provenance_is_refused() -> None:
    from tidelog.storage.records import encode_record

    record = encode_record(NewEvent("t", b"x"), 1)
    with pytest.raises(wire.LinkProtocolError, match="origin"):
        wire.decode_batch(len(record).to_bytes(4, "big") + record)


def via(*hops: str) -> Provenance:
    origin, _, offset = hops[0].split("/")[0], None, int(hops[0].split("/")[2])
    return Provenance(origin_node=origin, origin_offset=offset, hop_path=hops)


def test_local_mode_forwards_only_events_that_originated_here() -> None:
    route = Route("core", ("t/#",), "local", 8)
    assert route.admits(event(1))
    assert not route.admits(event(2, provenance=via("edge-2/x/5")))
    assert not route.admits(event(3, "other/a"))


def test_what_a_bridge_appended_is_not_local_but_transit_forwards_it_from_here() -> None:
    """A bridge's messages (client id ``bridge:<name>``) are not forwarded by ``local``
    links (two bridged brokers could otherwise circulate them); ``transit`` ones
    forward them with this node as their origin."""
    bridged = Provenance(client_id="bridge:mosq")
    assert not bridged.local and Provenance(client_id="sensor-1").local
    assert not Route("core", ("t/#",), "local", 8).admits(event(1, provenance=bridged))
    assert Route("core", ("t/#",), "transit", 8).admits(event(1, provenance=bridged))
    assert Route("core", ("t/#",), "local", 8).admits(event(2, provenance=Provenance("c", 7)))
    sent = wire.forwarded(event(5, provenance=bridged), "edge-1", "i1")
    assert sent.provenance is not None and sent.provenance.origin_node == "edge-1"


def test_transit_never_goes_back_to_a_node_on_the_path_and_stops_at_the_hop_limit() -> None:
    route = Route("core", ("#",), "transit", 3)
    assert route.admits(event(1, provenance=via("edge-2/x/5")))
    assert not route.admits(event(2, provenance=via("core/c/1", "region/r/9")))
    assert not route.admits(event(3, provenance=via("a/x/1", "b/x/2", "c/x/3")))


def test_transit_tells_the_peer_from_nodes_whose_ids_it_begins_or_ends() -> None:
    route = Route("core", ("#",), "transit", 8)
    assert route.admits(event(1, provenance=via("cor/x/5", "core-2/y/6", "edge.core/z/7")))
    assert not route.admits(event(2, provenance=via("cor/x/5", "core/c/6", "core-2/y/7")))


def stamped(origin: str, offset: int, hops: int) -> Properties:
    return Properties(
        user_properties=[
            ("k", "v"),
            ("tidelog-origin", origin),
            ("tidelog-incarnation", "i1"),
            ("tidelog-offset", str(offset)),
            ("tidelog-hops", str(hops)),
        ]
    )


def test_stamps_name_a_bridged_events_origin_and_count_bridges_toward_the_hop_limit() -> None:
    """A bridged event's stamps: never over a link to its origin, and the bridges it
    crossed count toward the hop limit with the links after them; a stamp pushed on
    keeps the event's own user properties and replaces the old stamps."""
    bridged = Provenance(client_id="bridge:m1")

    def arrived(offset: int, properties: Properties, provenance: Provenance) -> Event:
        return Event(offset, 1, "t/a", b"", 1, False, properties, provenance)

    route = Route("core", ("#",), "transit", 3)
    assert stamped_origin(arrived(1, stamped("edge", 4, 1), bridged)) == ("edge", "i1", 4)
    assert route.admits(arrived(1, stamped("edge", 4, 2), bridged))
    assert not route.admits(arrived(1, stamped("core", 4, 1), bridged))  # back to its origin
    assert not route.admits(arrived(1, stamped("edge", 4, 3), bridged))  # the hop limit
    assert not route.admits(arrived(1, stamped("edge", 4, 2), via("x/i/1", "y/i/2")))
    local = Provenance(client_id="sensor")  # a client's own stamps are not trusted
    assert stamped_origin(arrived(1, stamped("edge", 4, 1), local)) is None
    assert stamp(stamped("edge", 4, 1), ("core", "c1", 9), 2, "t", b"p") == (
        ("k", "v"),
        ("tidelog-origin", "core"),
        ("tidelog-incarnation", "c1"),
        ("tidelog-offset", "9"),
        ("tidelog-hops", "2"),
        ("tidelog-digest", digest("t", b"p")),
    )
    positions = MeshPositions()  # stamps deduplicate like hop paths, per origin
    copies = [NewEvent("t", b"", 1, False, stamped("edge", n, 1), bridged) for n in (4, 5, 4)]
    assert positions.fresh(copies) == copies[:2]
    positions.observe(copies[:2])
    assert positions.origins == {}  # a stamp never moves a link position
    seen = positions.stamped["edge", "i1"]
    assert 4 in seen and 5 in seen and 6 not in seen and 3 not in seen


def test_stamps_never_drop_a_link_event_and_late_stamped_offsets_are_kept() -> None:
    """(a) a bridge delivered the origin's offset 11 first: the link's 10 is still
    appended; (b) one bridge path delivers 12 before the 11 a remote refused once:
    11 is stored; forged stamps cannot silence a link."""
    bridged = Provenance(client_id="bridge:m")
    positions = MeshPositions()
    positions.observe([NewEvent("b", b"", 1, False, stamped("x", 11, 1), bridged)])
    linked = [incoming("x", 10, "x/i1/10"), incoming("x", 11, "x/i1/11")]
    assert positions.fresh(linked) == linked
    positions.observe([NewEvent("b", b"", 1, False, stamped("x", 10**18, 1), bridged)])
    assert positions.fresh(linked) == linked  # forged: still nothing dropped
    late = NewEvent("b", b"", 1, False, stamped("x", 9, 1), bridged)
    assert positions.fresh([late]) == [late]
    again = NewEvent("b", b"", 1, False, stamped("x", 11, 1), bridged)
    assert positions.fresh([again]) == []
    copy = MeshPositions()  # the seen offsets survive a checkpoint
    copy.restore(positions.checkpoint(5))
    assert copy.fresh([late, again]) == [late]


def test_seen_offsets_are_exact_and_bounded() -> None:
    seen = SeenOffsets()
    for offset in (3, 1, 0, 2, 7):
        seen.add(offset)
    assert (seen.low, seen.above) == (4, {7})
    assert 5 not in seen and 7 in seen and 2 in seen
    for offset in range(10, 10 + 2 * MAX_ABOVE, 2):  # gaps: nothing contiguous
        seen.add(offset)
    assert len(seen.above) == MAX_ABOVE  # the oldest evicted count as seen
    assert seen.low == 8 and 9 not in seen  # 7 evicted: below it counts as seen
    seen.add(10 + 2 * MAX_ABOVE)  # evicts 10
    assert seen.low == 11 and 9 in seen and 11 not in seen and 12 in seen
    assert SeenOffsets.load(seen.dump()).above == seen.above


def test_cycles_are_found_from_the_reachable_sets() -> None:
    assert reachable("b", [{"a"}, {"c", "d"}]) == ["a", "b", "c", "d"]
    assert closes_cycle(["a", "b"], ["c", "d"]) == set()
    assert closes_cycle(["a", "b", "c"], ["c", "d"]) == {"c"}


def incoming(origin: str, origin_offset: int, *hops: str) -> NewEvent:
    return NewEvent(
        "t",
        b"",
        provenance=Provenance(origin_node=origin, origin_offset=origin_offset, hop_path=hops),
    )


def test_positions_drop_what_was_appended_and_advance_per_sender_and_origin() -> None:
    positions = MeshPositions()
    first = [incoming("e1", i, f"e1/i1/{i}", f"r/ir/{10 + i}") for i in range(3)]
    assert positions.fresh(first) == first
    positions.observe(first)
    assert positions.sender("r") == ("ir", 13)
    assert positions.origins["e1"] == ("i1", 3)
    again = [incoming("e1", i, f"e1/i1/{i}", f"r/ir/{10 + i}") for i in range(2, 5)]
    assert [e.provenance.origin_offset for e in positions.fresh(again) if e.provenance] == [3, 4]
    # a new incarnation of the origin is new events, whatever the offsets say
    replaced = [incoming("e1", 0, "e1/i2/0", "r/ir/20")]
    assert positions.fresh(replaced) == replaced


def test_a_checkpoint_stays_below_appends_in_progress_and_round_trips() -> None:
    positions = MeshPositions()
    positions.observe([incoming("e1", 4, "e1/i1/4")])
    token = positions.begin_append(100)
    assert positions.safe_offset(120) == 100
    positions.end_append(token)
    assert positions.safe_offset(120) == 120
    copy = MeshPositions()
    copy.restore(positions.checkpoint(120))
    assert (copy.scanned_to, copy.senders, copy.origins) == (
        120,
        {"e1": ("i1", 5)},
        {"e1": ("i1", 5)},
    )


def test_the_latest_incarnation_wins_whatever_the_order_of_senders() -> None:
    positions = MeshPositions()
    positions.observe(
        [
            incoming("e1", 9, "e1/old/9", "r1/a/100"),
            incoming("e1", 0, "e1/new/0", "r2/b/5"),
            incoming("x", 3, "x/i/3", "r1/a/101"),
        ]
    )
    assert positions.origins == {"e1": ("new", 1), "x": ("i", 4)}
    assert positions.senders == {"r1": ("a", 102), "r2": ("b", 6)}


def test_the_link_right_is_its_own_and_all_does_not_grant_it() -> None:
    from tidelog.security.acl import ACL, Access, Principal, Right, parse_acl

    acl = ACL(parse_acl("user edge\nallow link telemetry/#\nuser app\nallow all #\n"))
    edge = Access(acl, Principal("edge"))
    app = Access(acl, Principal("app"))
    assert edge.allows(Right.LINK, "telemetry/a") and not edge.allows(Right.PUBLISH, "telemetry/a")
    assert app.allows(Right.PUBLISH, "telemetry/a") and not app.allows(Right.LINK, "telemetry/a")
    assert Right.LINK not in Right.ALL


def test_the_3x_bridge_bit_round_trips_and_is_refused_on_mqtt5() -> None:
    from tidelog.protocols.mqtt import encode
    from tidelog.protocols.mqtt.decoder import Decoder
    from tidelog.protocols.mqtt.errors import MQTTProtocolError
    from tidelog.protocols.mqtt.packets import Connect

    data = encode(Connect("b", 4, clean_start=False, bridge=True), 4)
    assert data[8] == 0x84  # the protocol level byte carries the bit
    (decoded,) = Decoder().feed(data)
    assert isinstance(decoded, Connect)
    assert decoded.bridge and decoded.protocol_level == 4
    with pytest.raises(MQTTProtocolError):
        Connect("b", 5, bridge=True)


def test_a_batch_whose_last_hop_is_not_the_senders_is_refused() -> None:
    payload = wire.encode_batch([event(1)], "n1", "cafe")
    assert len(wire.decode_batch(payload, "n1")) == 1
    with pytest.raises(wire.LinkProtocolError, match="last hop is not n2"):
        wire.decode_batch(payload, "n2")


def test_a_batch_with_a_malformed_first_hop_is_refused() -> None:
    came = Provenance(origin_node="e", origin_offset=1, hop_path=("e-without-slashes",))
    payload = wire.encode_batch([event(1, provenance=came)], "n1", "cafe")
    with pytest.raises(wire.LinkProtocolError, match="a hop is node/incarnation/offset"):
        wire.decode_batch(payload, "n1")


def test_positions_read_each_events_own_origin_and_incarnation_in_a_mixed_batch() -> None:
    positions = MeshPositions()
    positions.origins = {"e1": ("i1", 10), "e2": ("i1", 10), "e10": ("i1", 0)}
    batch = [
        incoming("e1", 3, "e1/i1/3"),  # appended before
        incoming("e2", 4, "e2/i1/4"),  # appended before: another origin, same incarnation
        incoming("e2", 0, "e2/i2/0"),  # a new incarnation
        incoming("e1", 11, "e1/i1/11"),
        incoming("e10", 2, "e10/i1/2", "r/x/1"),  # "e1/..." is not its prefix
        incoming("e1", 9, "e1/i10/9"),  # nor "e1/i1/" of this one
    ]
    assert positions.fresh(batch) == batch[2:]


def _batch(*hop_paths: tuple[str, ...]) -> bytes:
    """A ``$link/events`` payload of one event per hop path (its origin the first hop's
    node)."""
    payload = b""
    for offset, hop_path in enumerate(hop_paths):
        origin = hop_path[0].split("/", 1)[0]
        came = Provenance(origin_node=origin, origin_offset=offset, hop_path=hop_path)
        record = encode_record(NewEvent("t", b"p", provenance=came), 5)
        payload += len(record).to_bytes(4, "big") + record
    return payload


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("n1/cafe/2x", "a hop is"),
        ("n1/cafe/", "a hop is"),
        ("n1/cafe/3/4", "a hop is"),
        ("n2/cafe/3", "last hop is not n1"),
    ],
)
def test_every_hop_of_a_batch_is_checked_after_good_ones(bad: str, message: str) -> None:
    good = [("n1/cafe/0",), ("n1/cafe/1",)]
    assert len(wire.decode_batch(_batch(*good, ("n1/cafe/2",)), "n1")) == 3
    with pytest.raises(wire.LinkProtocolError, match=message):
        wire.decode_batch(_batch(*good, (bad,)), "n1")
    with pytest.raises(wire.LinkProtocolError, match=message):
        wire.decode_batch(_batch(*good, ("x/y/1", bad), ("n1/cafe/4",)), "n1")


@pytest.mark.parametrize(
    ("hop_paths", "message"),
    [
        ((("\x007",),), "a hop is"),  # no "node/incarnation/" checked before it
        ((("x/y/1", "n1/cafe/0"), ("\x009",)), "a hop is"),  # nor after a longer path
        ((("\x00n1/cafe/7",),), "last hop is not n1"),
        ((("n1/cafe/\u00b2",),), "a hop is"),  # a digit to isdigit(), not to int()
        ((("n1/cafe/0",), ("n1/cafe/\u00b3",)), "a hop is"),
        ((("n1/cafe/" + "1" * 5000,),), "a hop is"),  # int() refuses it
        ((("x/y/\u00b9", "n1/cafe/0"),), "a hop is"),
        ((("x/y/1", "bad/middle", "n1/cafe/0"),), "a hop is"),  # routing parses each hop
    ],
)
def test_hops_that_hop_parsing_refuses_are_refused_by_decode_batch(
    hop_paths: tuple[tuple[str, ...], ...], message: str
) -> None:
    """What decode_batch accepts, Hop.parse (observe, routing) reads without an error: a
    hop refused later would be stored first, and the link dropped after each resend."""
    with pytest.raises(wire.LinkProtocolError, match=message):
        wire.decode_batch(_batch(*hop_paths), "n1")


def test_every_hop_decode_batch_accepts_parses() -> None:
    paths = [("n1/cafe/0",), ("x/y/1", "z/w/2", "n1/cafe/1"), ("n1/cafe/2",), ("n1/cafe/3",)]
    for event_ in wire.decode_batch(_batch(*paths), "n1"):
        assert [str(hop) for hop in wire.hops(event_.provenance)] == list(
            event_.provenance.hop_path if event_.provenance else ()
        )
    with pytest.raises(wire.LinkProtocolError, match="a hop is"):
        wire.Hop.parse("n1/cafe/\u00b2")


def _origin_batch(*events: tuple[str, tuple[str, ...]]) -> bytes:
    """A ``$link/events`` payload of one event per (origin node, hop path)."""
    payload = b""
    for offset, (origin, hop_path) in enumerate(events):
        came = Provenance(origin_node=origin, origin_offset=offset, hop_path=hop_path)
        record = encode_record(NewEvent("t", b"p", provenance=came), 5)
        payload += len(record).to_bytes(4, "big") + record
    return payload


@pytest.mark.parametrize(
    "events",
    [
        [("n2", ("n1/cafe/0",))],  # the origin is not the node that stored it first
        [("n1", ("n1/cafe/0",)), ("n2", ("n1/cafe/1",))],  # after a good one, same hop
        [("x", ("x/y/0", "n1/cafe/0")), ("z", ("x/y/1", "n1/cafe/1"))],  # a longer path
        [("x", ("n1/cafe/0", "x/y/0", "n1/cafe/1"))],  # its origin further on the path
        [("n1", ("n1/cafe/0",)), ("n11", ("n1/cafe/1",)), ("n1", ("n1/cafe/2",))],
        [("n1/cafe", ("n1/cafe/0",))],  # not a prefix of the hop: its node
    ],
)
def test_a_batch_whose_first_hop_is_not_the_events_origin_is_refused(
    events: list[tuple[str, tuple[str, ...]]],
) -> None:
    """The first hop names the node an event was first stored at: its origin. A batch
    saying otherwise would put the origin's incarnation (which the positions and the
    batch's shape take from the first hop) under another node: refused by the
    compiled decode (the Python loops then name what is wrong) and by Python."""
    payload = _origin_batch(*events)
    for decode in (wire.decode_shaped, wire.decode_shaped_python):
        with pytest.raises(wire.LinkProtocolError, match="first hop is not its origin's"):
            decode(payload, "n1")
    if records.decode_link is not None:
        assert records.decode_link(payload, b"n1") is None
    good = [(hops[0].split("/", 1)[0], hops) for _, hops in events]
    assert len(wire.decode_batch(_origin_batch(*good), "n1")) == len(events)


def test_positions_split_a_first_hop_that_starts_with_nul() -> None:
    """fresh() reads the incarnation of any first hop, even one starting with "\\0"
    (the old "no prefix yet" value): "b", not "" here."""
    positions = MeshPositions()
    positions.origins = {"\x00a": ("b", 5)}
    assert positions.fresh([incoming("\x00a", 3, "\x00a/b/3")]) == []


def test_a_source_sends_what_its_route_and_the_peers_interest_admit_per_topic() -> None:
    from tidelog.mesh.stream import _admitted
    from tidelog.topics import compile_filter

    route = Route("core", ("t/#",), "transit", 8)
    local = [Event(i, 1, f"t/{i % 2}", b"x", 1, False, None, None) for i in range(4)]
    passes: dict[str, bool] = {}
    assert _admitted(local, route, passes, None, None, None) is local  # taken whole
    assert passes == {"t/0": True, "t/1": True}
    back = Provenance(origin_node="core", origin_offset=1, hop_path=("core/i/1",))
    mixed = [
        *local,
        Event(4, 1, "u/x", b"x", 1, False, None, None),  # not under the route's filter
        Event(5, 1, "t/0", b"x", 1, False, None, back),  # came from the peer: not back
        Event(6, 1, "t/0", b"x", 2, False, None, Provenance("dev", 3)),  # QoS 2, published here
    ]
    sent = _admitted(mixed, route, {}, None, None, None)
    assert [e.offset for e in sent] == [0, 1, 2, 3, 6]
    interest = [compile_filter("t/1")]
    assert [e.offset for e in _admitted(mixed, route, {}, None, None, interest)] == [1, 3]
