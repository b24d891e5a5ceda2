"""A batch's shape (one origin, one hop, rising offsets): found while the hops are
checked, and deduplication and positions per batch agree with the per-event rules."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidelog.mesh import wire
from tidelog.mesh.positions import MeshPositions
from tidelog.storage import records
from tidelog.storage.records import Event, NewEvent, Properties, Provenance, encode_record


def _payload(*events: tuple[str, int | None, tuple[str, ...]]) -> bytes:
    """A ``$link/events`` payload of one record per (origin, origin offset, hop path)."""
    payload = b""
    for origin, offset, hop_path in events:
        came = Provenance(origin_node=origin, origin_offset=offset, hop_path=hop_path)
        record = encode_record(NewEvent("t", b"p", provenance=came), 5)
        payload += len(record).to_bytes(4, "big") + record
    return payload


def test_a_senders_own_events_have_a_shape() -> None:
    local = [Event(offset, 1, "t/a", b"x", 1) for offset in (3, 4, 9, 12)]
    payload = wire.encode_batch(local, "edge", "cafe")
    events, shape = wire.decode_shaped(payload, "edge")
    assert shape == wire.BatchShape("edge", "cafe", 3, 12)
    assert events == wire.decode_batch(payload, "edge")
    one = wire.encode_batch(local[:1], "edge", "cafe")
    assert wire.decode_shaped(one, "edge")[1] == wire.BatchShape("edge", "cafe", 3, 3)


def test_batches_that_differ_per_event_have_no_shape() -> None:
    assert wire.decode_shaped(_payload(("e", 1, ("e/i/1",)), ("e", 2, ("e/i/2",))))[1]
    transit = _payload(("x", 1, ("x/i/1", "e/k/7")), ("x", 4, ("x/i/4", "e/k/9")))
    assert wire.decode_shaped(transit, "e")[1] == wire.BatchShape("x", "i", 1, 4)
    for events in (
        [("e", 1, ("e/i/1",)), ("f", 2, ("f/i/2", "e/i/2"))],  # another origin
        [("e", 1, ("e/i/1",)), ("e", 2, ("e/j/2",))],  # another incarnation
        [("e", 2, ("e/i/2",)), ("e", 0, ("e/j/0",))],  # fall: a new incarnation
        [("e", None, ("e/i/1",)), ("e", 2, ("e/i/2",))],  # no origin offset
        [("e", 1, ("e/i/1",)), ("e", None, ("e/i/2",))],
        [("x", 1, ("x/i/1", "e/i/7")), ("x", 2, ("x/i/2", "f/i/8"))],  # another path
        [("x", 1, ("x/i/1", "e/i/7")), ("x", 2, ("x/j/2", "e/i/8"))],
        [("e", 1, ("e/i/1",)), ("x", 2, ("x/i/2", "e/i/8"))],  # one hop, then two
    ):
        assert wire.decode_shaped(_payload(*events))[1] is None, events
    assert wire.decode_shaped(b"") == ([], None)


@pytest.mark.parametrize(
    "events",
    [
        [("e", 2, ("e/i/2",)), ("e", 1, ("e/i/1",))],  # offsets fall
        [("e", 1, ("e/i/1",)), ("e", 1, ("e/i/1",))],  # or repeat
        [("e", 1, ("e/i/1",)), ("f", 5, ("f/i/5", "e/i/2")), ("e", 1, ("e/i/3",))],
        [("f", 7, ("f/i/7", "e/i/1")), ("f", 7, ("f/i/7", "x/y/1", "e/i/2"))],  # other paths
        [("e", 3, ("e/i/3",)), ("e", 0, ("e/j/0",)), ("e", 2, ("e/i/4",))],  # i: 3, then 2
    ],
)
def test_offsets_of_one_origin_that_repeat_or_fall_in_a_batch_are_refused(
    events: list[tuple[str, int, tuple[str, ...]]],
) -> None:
    """A sender reads its log in order: offsets of one origin incarnation that do not
    rise within a batch are its fault, refused loudly, on either decode path."""
    for decode in (wire.decode_shaped, wire.decode_shaped_python):
        with pytest.raises(wire.LinkProtocolError, match="repeat or fall in a batch"):
            decode(_payload(*events), "e")


def test_joined_shapes_need_one_origin_and_rising_offsets() -> None:
    a, b = wire.BatchShape("e", "i", 1, 5), wire.BatchShape("e", "i", 6, 9)
    assert wire.joined_shape([a, b]) == wire.BatchShape("e", "i", 1, 9)
    assert wire.joined_shape([a]) == a
    for shapes in ([b, a], [a, a], [a, None], [None, a], [a, b._replace(origin="f")],
                   [a, b._replace(incarnation="j")], []):  # fmt: skip
        assert wire.joined_shape(shapes) is None


_events = st.lists(
    st.tuples(
        st.sampled_from(["e", "f"]),  # origin (the first hop's node; the sender is e)
        st.sampled_from(["i", "j"]),  # incarnation
        st.integers(0, 12),  # offset
        st.booleans(),  # a second hop, the sender's (transit; always for origin f)
    ),
    max_size=12,
)


@settings(max_examples=1000, deadline=None)
@given(
    first=_events,
    second=_events,
    known=st.dictionaries(
        st.sampled_from(["e", "f"]), st.tuples(st.sampled_from(["i", "j", "k"]), st.integers(0, 27))
    ),
    usual=st.sampled_from([None, 1, 2]),
    after=st.booleans(),
)
def test_per_batch_dedup_and_positions_agree_with_the_per_event_rules(
    first: list[tuple[str, str, int, bool]],
    second: list[tuple[str, str, int, bool]],
    known: dict[str, tuple[str, int]],
    usual: int | None,
    after: bool,
) -> None:
    """Two consecutive batches, decoded and joined: whenever they have a shape,
    ``append_fresh``'s per-batch path keeps the events the per-event ``fresh`` keeps
    and leaves the positions where ``observe`` of all of them leaves them."""

    def payload(items: list[tuple[str, str, int, bool]], base: int = 0) -> bytes:
        if usual:  # the usual batch: one origin, one path (one hop or two), rising offsets
            offsets = sorted({base + o for _, _, o, _ in items})
            items = [("e", "i", offset, usual == 2) for offset in offsets]
        return _payload(
            *(
                (
                    origin,
                    off,
                    (f"{origin}/{inc}/{off}", f"e/k/{n}")
                    if transit or origin != "e"
                    else (f"e/{inc}/{off}",),
                )
                for n, (origin, inc, off, transit) in enumerate(items)
            )
        )

    try:
        events_a, shape_a = wire.decode_shaped(payload(first), "e")
        events_b, shape_b = wire.decode_shaped(payload(second, 13 if after else 0), "e")
    except wire.LinkProtocolError:  # offsets of one origin incarnation that do not rise
        assert not usual
        assert any(
            sorted(set(offsets)) != offsets
            for items in (first, second)
            for key in {(origin, inc) for origin, inc, _, _ in items}
            if (offsets := [off for origin, inc, off, _ in items if (origin, inc) == key])
        )
        return
    if usual and first:
        assert shape_a is not None
    events: list[NewEvent] = [*events_a, *events_b]
    shape = wire.joined_shape([s for e, s in ((events_a, shape_a), (events_b, shape_b)) if e])
    if usual and after and first:
        assert shape is not None
    if shape is None:
        return
    per_event, per_batch = MeshPositions(), MeshPositions()
    per_event.origins = dict(known)
    per_batch.origins = dict(known)
    expected = per_event.fresh(events)
    assert per_batch.fresh_shaped(events, shape) == expected
    if expected:
        per_event.observe(expected)
        per_batch.observe(expected[-1:])
    assert (per_batch.origins, per_batch.senders) == (per_event.origins, per_event.senders)


_good_hops = ["e/i/1", "e/i/7", "e/j/2", "f/i/3", "x/k/5", "é/i/4", "e/i/" + "9" * 20]
_bad_hops = ["e/i/x", "e/i/", "e/i/1/2", "e/i/" + "1" * 21, "e/i/\u00b2", "e1", "e/i/-1", ""]
_records = st.tuples(
    st.sampled_from(["first hop's"] * 8 + ["e", "f", "", "é"]),  # origin
    st.integers(0, 12) | st.none(),  # origin offset
    st.lists(st.sampled_from(["x/k/5", "f/i/3"]), max_size=2),  # transit hops
    st.sampled_from(["e/i/", "e/i/", "e/i/", "e/j/", "f/i/", "é/i/"]),  # the last hop's
    st.integers(0, 99),  # its offset
    st.sampled_from(["usual"] * 12 + ["properties", "client id", "damaged", "no hop"])
    | st.sampled_from(_good_hops + _bad_hops),  # or a hop put first
)


def _record(
    origin: str, offset: int | None, transit: list[str], last: str, number: int, kind: str
) -> bytes:
    path = [*transit, f"{last}{number}"]
    if "/" in kind or kind in _bad_hops:
        path.insert(0, kind)
    elif kind == "no hop":
        path = []
    if origin == "first hop's":
        origin = path[0].split("/", 1)[0] if path else "e"
    came = Provenance(
        client_id="c" if kind == "client id" else None,
        origin_node=origin,
        origin_offset=offset,
        hop_path=path,
    )
    props = Properties(content_type="x") if kind == "properties" else None
    record = encode_record(NewEvent("t/a", b"p", 1, False, props, came), 5)
    return record[:-1] + bytes([record[-1] ^ 1]) if kind == "damaged" else record


def _shaped(decode: object, payload: bytes, sender: str | None) -> object:
    try:
        return decode(payload, sender)  # type: ignore[operator]
    except wire.LinkProtocolError as exc:
        return str(exc)


@settings(max_examples=500, deadline=None)
@given(
    rows=st.lists(_records, max_size=8),
    sender=st.sampled_from([None, "e", "e", "e", "f", "é", "\ud800"]),
    cut=st.integers(0, 40) | st.none(),
    ordered=st.booleans(),
)
def test_the_compiled_batch_decode_matches_python(
    rows: list[tuple[str, int | None, list[str], str, int, str]],
    sender: str | None,
    cut: int | None,
    ordered: bool,
) -> None:
    """``decode_shaped`` (the compiled ``decode_link`` when built) gives the Python
    loops' events and shape, or the same error, for any batch: good and bad hops, a
    sender that is or is not the last hop's node, other kinds of records, a damaged
    record, a batch cut short; ``ordered``: the usual batch's one origin, path and
    rising offsets (each row's own offset plus one added to the one before), kinds kept."""
    if ordered and rows:
        origin, _, transit, last, _, _ = rows[0]
        rising = [sum(row[4] + 1 for row in rows[: n + 1]) for n in range(len(rows))]
        rows = [
            (origin, o if o is None else rising[n], transit, last, rising[n], kind)
            for n, (_, o, _, _, _, kind) in enumerate(rows)
        ]
    payload = b"".join(len(r).to_bytes(4, "big") + r for r in (_record(*row) for row in rows))
    cut_short = cut is not None and payload != b""
    if cut is not None and payload:
        payload = payload[: -1 - cut % len(payload)]
    result = _shaped(wire.decode_shaped, payload, sender)
    assert result == _shaped(wire.decode_shaped_python, payload, sender)
    if records.decode_link is not None and isinstance(result, tuple):
        raw = None if sender is None else sender.encode("utf-8", "surrogatepass")
        taken = records.decode_link(payload, raw)
        usual = all(
            kind not in ("properties", "client id", "damaged") and offset is not None
            for _, offset, *_, kind in rows
        )
        assert (taken is not None) == (usual and not cut_short)
        if taken is not None:
            assert (taken[0], None if taken[1] is None else wire.BatchShape(*taken[1])) == result


def test_the_compiled_batch_decode_takes_the_usual_batch_and_refuses_bad_arguments() -> None:
    if records.decode_link is None:
        pytest.skip("the extension is not built, or TIDELOG_PURE_PYTHON")
    local = [Event(offset, 1, "t/a", b"x", 1) for offset in (3, 4, 9, 12)]
    payload = wire.encode_batch(local, "edge", "cafe")
    assert records.decode_link(payload, b"edge") == (
        wire.decode_shaped_python(payload, "edge")[0],
        ("edge", "cafe", 3, 12),
    )
    assert records.decode_link(payload, b"edg") is None  # not the sender: Python names it
    assert records.decode_link(b"", None) == ([], None)
    with pytest.raises(TypeError, match="takes bytes"):
        records.decode_link(bytearray(payload), None)
    with pytest.raises(TypeError, match="takes bytes"):
        records.decode_link(payload, "edge")
