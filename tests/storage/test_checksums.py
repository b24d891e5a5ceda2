"""Record checksums and the record hot paths: the compiled module and its Python twins
give the same results."""

from __future__ import annotations

import gc
import os
import shutil
import struct
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidelog.storage import checksums, records
from tidelog.storage.checksums import raw_crc32c_python, seal_python
from tidelog.storage.records import (
    CorruptRecordError,
    EncodedEvent,
    Event,
    NewEvent,
    Properties,
    Provenance,
    checksum,
    decode_encoded_python,
    decode_record,
    encode_record,
    restamp_python,
)

try:
    from tidelog.storage import _crc32c  # type: ignore[attr-defined]
except ImportError:
    _crc32c = None

compiled = pytest.mark.skipif(_crc32c is None, reason="tidelog.storage._crc32c is not built")
compiled_records = pytest.mark.skipif(
    records._decode_forwarded is None,
    reason="records.py uses the Python path (the module is not built, or TIDELOG_PURE_PYTHON)",
)
states = st.integers(0, 2**32 - 1)


def test_python_crc_is_crc32c() -> None:
    # The CRC-32C check value (RFC 3720): CRC of b"123456789" with the usual inversions.
    assert raw_crc32c_python(0xFFFF_FFFF, b"123456789") ^ 0xFFFF_FFFF == 0xE3069283


def test_python_seal_makes_records_that_check() -> None:
    head = encode_record(NewEvent("a/b", b""), 5)[:-4]
    record = seal_python(head, raw_crc32c_python(0, head), b"payload")
    assert raw_crc32c_python(0, record) == 0
    assert decode_record(3, record).payload == b"payload"
    damaged = bytearray(record)
    damaged[-6] ^= 0x10
    with pytest.raises(Exception, match="record 3: checksum mismatch"):
        decode_record(3, bytes(damaged))


@compiled
def test_compiled_check_value_on_both_paths() -> None:
    assert _crc32c.crc32c(0xFFFF_FFFF, b"123456789") ^ 0xFFFF_FFFF == 0xE3069283
    assert _crc32c.IMPLEMENTATION in ("sse4.2", "table")


@compiled
@settings(deadline=None)
@given(st.binary(max_size=40), st.binary(max_size=300), states)
def test_compiled_matches_python(head: bytes, payload: bytes, state: int) -> None:
    assert _crc32c.crc32c(state, payload) == raw_crc32c_python(state, payload)
    head_state = raw_crc32c_python(0, head)
    sealed = _crc32c.seal(head, head_state, payload)
    assert sealed == seal_python(head, head_state, payload)
    assert _crc32c.seal(head, head_state, bytearray(payload)) == sealed
    assert _crc32c.crc32c(0, memoryview(sealed)) == 0


@compiled
def test_compiled_refuses_bad_arguments() -> None:
    with pytest.raises(TypeError, match="head must be bytes"):
        _crc32c.seal("text", 0, b"x")
    with pytest.raises(OverflowError):
        _crc32c.seal(b"h", 2**32, b"x")
    with pytest.raises(TypeError, match="takes 3 positional arguments"):
        _crc32c.seal(b"h", 0)
    with pytest.raises(TypeError):
        _crc32c.crc32c(0, "text")


@pytest.mark.skipif(
    os.environ.get("CI") != "true" or shutil.which("cc") is None or checksums.PURE_PYTHON,
    reason="CI with a C compiler builds the compiled module; elsewhere it is optional",
)
def test_ci_uses_the_compiled_module() -> None:
    assert checksums.IMPLEMENTATION.startswith("c/")


def test_the_switch_picks_the_path() -> None:
    """TIDELOG_PURE_PYTHON=1 makes records use the Python functions (a fresh process:
    the choice is made at import)."""
    code = (
        "from tidelog.storage import checksums, records; "
        "print(checksums.IMPLEMENTATION, *(getattr(f, '__module__', f) for f in ("
        "records.restamp, records._decode_plain, records._stored_events, "
        "records._decode_forwarded)))"
    )
    python = ["python", "tidelog.storage.records", "tidelog.storage.records", "None", "None"]
    env = {**os.environ, "TIDELOG_PURE_PYTHON": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == python
    env["TIDELOG_PURE_PYTHON"] = "0"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    if _crc32c is None:
        assert out.stdout.split() == python
    else:  # the record functions too, from the compiled module
        assert out.stdout.split() == [
            f"c/{_crc32c.IMPLEMENTATION}",
            *["tidelog.storage._crc32c"] * 4,
        ]


@compiled
@pytest.mark.parametrize(
    "change",
    [
        "_crc32c.RECORDS_API = 0",  # record functions of another version
        "del _crc32c.RECORDS_API",  # built before the version was exported
        "del _crc32c.decode_plain",  # the right version said, a function missing
        "_crc32c.configure_records = lambda *args: _crc32c.crc32c(*args)",  # takes others
    ],
)
def test_an_extension_built_from_other_sources_leaves_records_in_python(change: str) -> None:
    """An extension whose record functions are not the ones records.py calls (built
    from another commit) is not used for records, and says so; importing still works."""
    if checksums.PURE_PYTHON:
        pytest.skip("TIDELOG_PURE_PYTHON: the extension is not imported")
    code = (  # the extension loaded before tidelog (whose import imports records)
        "import importlib.util, sys\n"
        "name = 'tidelog.storage._crc32c'\n"
        f"spec = importlib.util.spec_from_file_location(name, {_crc32c.__file__!r})\n"
        "_crc32c = sys.modules[name] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(_crc32c)\n"
        f"{change}\n"
        "from tidelog.storage import records\n"
        "print(records._compiled, records._decode_forwarded, records._stored_events,"
        " records._decode_plain.__module__, records.restamp.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["None"] * 3 + ["tidelog.storage.records"] * 2
    assert "record" in out.stderr and "Python" in out.stderr  # the logged warning


@compiled_records
def test_the_extension_exports_the_record_functions_version_records_expects() -> None:
    assert _crc32c.RECORDS_API == records.RECORDS_API


# -- the record hot paths in the compiled module: the same results as records.py's --

hop_texts = st.text(max_size=12) | st.builds(
    "{}/{}/{}".format, st.sampled_from(["e", "édge"]), st.text(max_size=4), st.integers(0, 99)
)
topics = st.sampled_from(["a", "a/b", "température/1", "🌊"]) | st.text(
    st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30
)
forwarded_provenance = st.builds(
    Provenance,
    origin_node=st.text(max_size=10),
    origin_offset=st.integers(0, 2**64 - 1),
    hop_path=st.lists(hop_texts, min_size=1, max_size=4),
)
link_events = st.builds(
    NewEvent,
    topic=topics,
    payload=st.binary(max_size=40),
    qos=st.sampled_from([0, 1, 2]),
    retain=st.booleans(),
    properties=st.none() | st.just(Properties(content_type="x")),
    provenance=forwarded_provenance | st.none() | st.just(Provenance(client_id="c")),
)


def _mutated(record: bytes, where: int, value: int, reseal: bool) -> bytes:
    """``record`` with one byte set to ``value``; its checksum sealed again when
    ``reseal`` (so the damage reaches the parser instead of the checksum)."""
    body = bytearray(record[:-4])
    if body:
        body[where % len(body)] = value
    return bytes(body) + (checksum(bytes(body)) if reseal else record[-4:])


def _damaged(record: bytes, damage: str, where: int, value: int) -> bytes:
    """``record`` as it came (``o``), one byte changed and the checksum sealed again
    (``r``) or not (``k``), cut short at ``where`` and sealed again (``t``), or its
    topic length changed by ``value - 128`` and sealed again (``l``)."""
    if damage == "o":
        return record
    if damage == "t":
        body = record[: where % len(record)]
        return body + checksum(body)
    if damage == "l":
        length = (int.from_bytes(record[10:12], "big") + value - 128) % 65536
        body = record[:10] + length.to_bytes(2, "big") + record[12:-4]
        return body + checksum(body)
    return _mutated(record, where, value, damage == "r")


def _decoded(decode: object, batch: list[bytes]) -> object:
    """What ``decode(batch)`` returns, or the message of the CorruptRecordError it raises."""
    try:
        return decode(batch)  # type: ignore[operator]
    except CorruptRecordError as exc:
        return str(exc)


@compiled_records
@settings(deadline=None)
@given(
    st.lists(
        st.tuples(link_events, st.integers(0, 200), st.integers(0, 255), st.sampled_from("orktl")),
        max_size=12,
    ),
    st.integers(0, 2**64 - 1),
)
def test_compiled_decode_forwarded_matches_python(
    rows: list[tuple[NewEvent, int, int, str]], timestamp: int
) -> None:
    """decode_encoded on the compiled path gives the Python path's events (the same
    objects: fields, provenance, the record kept), or the same error for a damaged
    record (:func:`_damaged`)."""
    batch = [
        _damaged(encode_record(event, timestamp), damage, where, value)
        for event, where, value, damage in rows
    ]
    compiled_result = _decoded(records.decode_encoded, batch)
    assert compiled_result == _decoded(decode_encoded_python, batch)
    if isinstance(compiled_result, list):
        assert all(type(e) is EncodedEvent for e in compiled_result)
        assert [e.record for e in compiled_result] == batch
        assert all(type(e.provenance.hop_path) is tuple for e in compiled_result if e.provenance)


@compiled_records
def test_compiled_decode_forwarded_takes_any_hop_count_and_iterables() -> None:
    came = Provenance(origin_node="o", origin_offset=7, hop_path=[f"h/i/{n}" for n in range(70)])
    batch = [encode_record(NewEvent("a", b"p", provenance=came), 5)] * 2
    events = records.decode_encoded(iter(batch))
    assert events == decode_encoded_python(batch)
    assert events[0].provenance == came
    events, others = _crc32c.decode_forwarded(batch)
    assert events == [None, None] and others == [0, 1]  # over 64 hops: the Python way
    with pytest.raises(TypeError, match="list of bytes"):
        _crc32c.decode_forwarded(tuple(batch))


@compiled_records
@settings(deadline=None)
@given(link_events, st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_compiled_restamp_matches_python(event: NewEvent, theirs: int, ours: int) -> None:
    record = encode_record(event, theirs)
    assert records.restamp is _crc32c.restamp
    assert _crc32c.restamp(record, ours) == restamp_python(record, ours)
    assert _crc32c.restamp(record, ours) == encode_record(event, ours)


@compiled_records
def test_compiled_record_functions_refuse_bad_arguments() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        _crc32c.restamp(b"\x02" * 15, 1)
    with pytest.raises(ValueError, match="16 bytes"):
        restamp_python(b"\x02" * 15, 1)
    with pytest.raises(OverflowError):
        _crc32c.restamp(b"\x02" * 16, 2**64)
    with pytest.raises(TypeError, match="record must be bytes"):
        _crc32c.restamp(bytearray(16), 1)
    fields = ("topic", "payload", "qos", "retain", "properties", "provenance", "record")
    stored = ("offset", "timestamp", *fields[:6])
    provenance = ("client_id", "packet_id", "origin_node", "origin_offset", "hop_path")
    with pytest.raises(TypeError, match="not a slot"):
        _crc32c.configure_records(
            NewEvent,
            EncodedEvent,
            ("__weakref__",) * 7,
            Event,
            stored,
            Provenance,
            provenance,
            {},
            10,
        )
    with pytest.raises(TypeError, match="must extend"):
        _crc32c.configure_records(
            Event, EncodedEvent, fields, Event, stored, Provenance, provenance, {}, 10
        )

    class Borrowed:  # another class's slot descriptors: offsets into objects of that class
        __slots__ = tuple(f"s{i}" for i in range(8))

    for name in stored:
        setattr(Borrowed, name, Event.__dict__[name])
    with pytest.raises(TypeError, match="not an object slot"):
        _crc32c.configure_records(
            NewEvent, EncodedEvent, fields, Borrowed, stored, Provenance, provenance, {}, 10
        )
    twice = ("offset", "offset", *stored[2:])
    with pytest.raises(TypeError, match="one slot"):
        _crc32c.configure_records(
            NewEvent, EncodedEvent, fields, Event, twice, Provenance, provenance, {}, 10
        )
    came = Provenance(origin_node="o", origin_offset=1, hop_path=("o/i/1",))
    record = encode_record(NewEvent("a", b"p", provenance=came), 5)
    assert records.decode_encoded([record])[0].provenance == came  # still configured


@compiled_records
@settings(deadline=None)
@given(st.lists(link_events, max_size=20), st.integers(0, 2**62), st.integers(0, 2**63))
def test_compiled_stored_events_match_python(batch: list[NewEvent], first: int, ts: int) -> None:
    """The compiled stored_events makes the Events the Python loop makes, for NewEvents
    and EncodedEvents; any other item makes it hand the batch back (None)."""
    encoded = records.decode_encoded([encode_record(e, 1) for e in batch])
    for events in (batch, encoded, [*batch, *encoded]):
        made = _crc32c.stored_events(events, first, ts)
        assert made == records.stored_events(tuple(events), first, ts)  # a tuple: Python's
        assert all(type(e) is records.Event for e in made)

    class Other(NewEvent):
        pass

    assert _crc32c.stored_events([*batch, Other("a", b"")], first, ts) is None
    unset = object.__new__(NewEvent)
    assert _crc32c.stored_events([unset], first, ts) is None
    assert records.stored_events([Other("a", b"")], 3, ts)[0].offset == 3


@pytest.mark.parametrize("first", [2**63 - 1, 2**63, 2**64 + 5, -(2**63) - 1])
def test_stored_events_take_any_first_offset(first: int) -> None:
    """Offsets past a C long long: the compiled stored_events hands them to Python
    (None) rather than overflow (undefined) or raise."""
    made = records.stored_events([NewEvent("a", b"p"), NewEvent("b", b"q")], first, 7)
    assert [(e.offset, e.topic) for e in made] == [(first, "a"), (first + 1, "b")]
    if records._stored_events is not None:
        assert records._stored_events([NewEvent("a", b"p")] * 2, first, 7) is None


@compiled_records
def test_compiled_stored_events_survive_a_finalizer_deleting_fields() -> None:
    """Making an Event can run the GC, whose finalizers run any code: one that deletes
    a field of an event not copied yet makes stored_events hand the batch back."""
    events = [NewEvent("a", b"p") for _ in range(50)]

    class Bomb:
        def __del__(self) -> None:
            for event in events:
                if hasattr(event, "payload"):
                    del event.payload

    bomb = Bomb()
    bomb.cycle = bomb  # type: ignore[attr-defined]
    del bomb
    threshold = gc.get_threshold()
    gc.set_threshold(1)
    try:
        made = _crc32c.stored_events(events, 0, 1)
    finally:
        gc.set_threshold(*threshold)
        gc.collect()
    assert made is None or all(hasattr(e, "payload") for e in made)


plain_events = st.builds(
    NewEvent,
    topic=topics,
    payload=st.binary(max_size=40),
    qos=st.sampled_from([0, 1, 2]),
    retain=st.booleans(),
)


@compiled_records
@settings(deadline=None)
@given(
    st.lists(st.tuples(plain_events, st.integers(0, 2**64 - 1)), min_size=1, max_size=20),
    st.sampled_from([1, 2]),
    st.integers(0, 2**40),
    st.booleans(),
    st.none() | st.tuples(st.integers(0, 100), st.integers(0, 255), st.sampled_from("rtl")),
    st.integers(0, 3),
)
def test_compiled_decode_plain_matches_python(
    rows: list[tuple[NewEvent, int]],
    version: int,
    first: int,
    as_range: bool,
    damage: tuple[int, int, str] | None,
    spare: int,
) -> None:
    """The replay's loop over plain records: the compiled one makes the Python one's
    Events, or says None where it does (a record that is not plain, or is cut short;
    the Python loop raises struct.error for one shorter than a header). ``spare``
    more offsets than records: a replay's max_bytes cut the records short."""
    batch = [encode_record(event, timestamp, version) for event, timestamp in rows]
    if damage is not None:
        index, value, how = damage
        batch[index % len(batch)] = _damaged(batch[index % len(batch)], how, index, value)
    count = len(batch) + spare
    offsets = range(first, first + count) if as_range else [first + 3 * i for i in range(count)]
    kinds, tail = (records._PLAIN_V1_KINDS, 0) if version == 1 else (records._PLAIN_V2_KINDS, 4)
    made = _crc32c.decode_plain(batch, offsets, kinds, tail)
    try:
        expected = records._decode_plain_python(batch, offsets, kinds, tail)
    except (struct.error, UnicodeDecodeError):
        expected = None
    assert made == expected
    if made is not None:
        assert [e.offset for e in made] == list(offsets[: len(batch)])


@compiled_records
def test_compiled_decode_plain_refuses_bad_arguments() -> None:
    batch = [encode_record(NewEvent("a", b"payload"), 1)] * 3
    kinds = records._PLAIN_V2_KINDS
    assert [e.offset for e in _crc32c.decode_plain(batch, range(5, 10), kinds, 4)] == [5, 6, 7]
    with pytest.raises(ValueError, match="an offset per record"):
        _crc32c.decode_plain(batch, [1, 2], kinds, 4)
    with pytest.raises(ValueError, match="tail must not be negative"):
        _crc32c.decode_plain(batch, [1, 2, 3], kinds, -4)
    with pytest.raises(OverflowError):
        _crc32c.decode_plain(batch, [1, 2, 3], 2**70, 4)
    with pytest.raises(TypeError):
        _crc32c.decode_plain(batch, [1, 2, 3], kinds, "4")
    assert _crc32c.decode_plain(batch, [1, 2, 3], kinds, 2**40) is None  # cut short


@compiled_records
@settings(deadline=None)
@given(
    st.lists(link_events, max_size=12),
    st.integers(0, 2**64 - 1),
    st.lists(st.sampled_from(["ok", "new topic", "qos 3", "qos True", "plain"]), max_size=12),
)
def test_compiled_restamp_all_matches_the_python_loop(
    batch: list[NewEvent], timestamp: int, changes: list[str]
) -> None:
    """encode_records of a link's batch (EncodedEvents) gives the same records, and
    calls ``check`` for the same events, on the compiled path (``restamp_all``) as in
    the Python loop; a batch it does not take whole (a topic not checked before, an
    unusual QoS, another type of event) goes to the loop."""
    events: list[NewEvent] = records.decode_encoded([encode_record(e, 1) for e in batch])
    changes = changes[: len(events)]
    for index, change in enumerate(changes):
        if change == "qos 3":
            events[index].qos = 3
        elif change == "qos True":
            events[index].qos = True
        elif change == "plain":
            events[index] = NewEvent(events[index].topic, b"x")
    known = {e.topic: e.topic.encode() for e in events if "new topic" not in changes}

    def encoded(restamp_all: object) -> tuple[object, list[int]]:
        checked: list[int] = []

        def check(index: int, event: NewEvent) -> None:
            checked.append(index)
            if event.qos not in (0, 1, 2):
                raise ValueError("qos")

        saved = records._restamp_all
        records._restamp_all = restamp_all  # type: ignore[assignment]
        try:
            return records.encode_records(events, timestamp, check, dict(known)), checked
        except ValueError as exc:
            return str(exc), checked
        finally:
            records._restamp_all = saved

    compiled_result = encoded(_crc32c.restamp_all)
    assert compiled_result == encoded(None)
    if isinstance(compiled_result[0], list) and not {"qos 3", "qos True"} & set(changes):
        assert compiled_result[0] == [encode_record(e, timestamp) for e in events]
    usual = all(type(e) is EncodedEvent and e.qos in (0, 1, 2) for e in events)
    whole = _crc32c.restamp_all(events, timestamp, known)
    if usual and "new topic" not in changes and "qos True" not in changes:
        assert whole is not None  # taken whole
    else:
        assert whole is None


@compiled_records
def test_compiled_restamp_all_refuses_bad_arguments_and_hands_back_odd_batches() -> None:
    came = Provenance(origin_node="o", origin_offset=1, hop_path=("o/i/1",))
    events = records.decode_encoded([encode_record(NewEvent("a", b"p", provenance=came), 5)])
    assert _crc32c.restamp_all(events, 9, {"a": b"a"}) == [encode_record(events[0], 9)]
    assert _crc32c.restamp_all(events, 2**64, {"a": b"a"}) is None  # Python raises
    assert _crc32c.restamp_all(events, -1, {"a": b"a"}) is None
    short = records.decode_encoded([encode_record(NewEvent("a", b"p", provenance=came), 5)])
    short[0].record = b"\x02" * 15
    assert _crc32c.restamp_all(short, 9, {"a": b"a"}) is None
    with pytest.raises(TypeError, match="takes a list"):
        _crc32c.restamp_all(tuple(events), 9, {})
    with pytest.raises(TypeError, match="takes a list"):
        _crc32c.restamp_all(events, 9, None)
