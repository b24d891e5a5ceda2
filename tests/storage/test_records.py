"""The batch fast paths of the record format agree with the one-record reference."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidelog.errors import CorruptLogError, InvalidTopicError
from tidelog.storage.common import check_event, encode_batch
from tidelog.storage.records import (
    EncodedEvent,
    NewEvent,
    Properties,
    Provenance,
    decode_encoded,
    decode_record,
    decode_run,
    encode_record,
    encode_records,
)

topics = st.sampled_from(["a", "a/b", "température/1", "$SYS/x", "🌊"])
properties = st.none() | st.builds(
    Properties,
    payload_format=st.none() | st.sampled_from([0, 1]),
    content_type=st.none() | st.text(max_size=10),
    correlation_data=st.none() | st.binary(max_size=10),
    user_properties=st.lists(st.tuples(st.text(max_size=5), st.text(max_size=5)), max_size=2),
)
provenances = st.none() | st.builds(
    Provenance,
    client_id=st.none() | st.text(max_size=10),
    packet_id=st.none() | st.integers(1, 65535),
    origin_node=st.none() | st.text(max_size=10),
    origin_offset=st.none() | st.integers(0, 2**64 - 1),
    hop_path=st.lists(st.text(max_size=5), max_size=3),
)
new_events = st.builds(
    NewEvent,
    topic=topics,
    payload=st.binary(max_size=64),
    qos=st.sampled_from([0, 0, 0, 1, 2]),
    retain=st.booleans(),
    properties=properties,
    provenance=st.none() | st.none() | provenances,
)


@settings(deadline=None)  # a CRC call per record: slow examples on a loaded machine
@given(st.lists(new_events, max_size=30), st.integers(0, 2**63))
def test_encode_records_matches_encode_record(batch: list[NewEvent], timestamp: int) -> None:
    assert encode_records(batch, timestamp, check_event, {}) == [
        encode_record(event, timestamp) for event in batch
    ]


forwarded = st.builds(
    Provenance,
    origin_node=st.text(max_size=10),
    origin_offset=st.integers(0, 2**64 - 1),
    hop_path=st.lists(st.text(max_size=12), min_size=1, max_size=4),
)
"""The provenance :func:`decode_encoded` reads in its loop (a link's usual events)."""


@settings(deadline=None)
@given(
    st.lists(new_events | st.builds(NewEvent, topics, st.binary(max_size=9), provenance=forwarded)),
    st.integers(0, 2**63),
    st.integers(0, 2**63),
)
def test_encoded_events_decode_and_encode_as_their_fields(
    batch: list[NewEvent], theirs: int, ours: int
) -> None:
    """:func:`decode_encoded` gives what :func:`decode_record` gives, and its events
    append as the same fields encoded anew under this log's timestamp would."""
    records = [encode_record(event, theirs) for event in batch]
    encoded = decode_encoded(records)
    assert all(type(e) is EncodedEvent for e in encoded)
    assert [e.record for e in encoded] == records
    fields = [
        (e.topic, e.payload, e.qos, e.retain, e.properties, e.provenance)
        for e in [*encoded, *(decode_record(0, r) for r in records)]
    ]
    assert fields[: len(batch)] == fields[len(batch) :]
    assert encode_records(encoded, ours, check_event, {}) == [
        encode_record(event, ours) for event in batch
    ]


def test_decode_encoded_names_a_bad_record_by_its_place() -> None:
    came = Provenance(origin_node="e", origin_offset=1, hop_path=("e/a/1",))
    good = encode_record(NewEvent("a", b"1", provenance=came), 5)
    flipped = good[:-6] + bytes((good[-6] ^ 1,)) + good[-5:]
    with pytest.raises(CorruptLogError, match="record 1: checksum mismatch"):
        decode_encoded([good, flipped])
    with pytest.raises(CorruptLogError, match="record 2: not a version 2 record"):
        decode_encoded([good, good, encode_record(NewEvent("a", b"1"), 5, version=1)])
    with pytest.raises(CorruptLogError, match="record 0"):
        decode_encoded([good[:11]])


@settings(deadline=None)
@given(
    st.lists(new_events, max_size=30),
    st.integers(0, 10**6),
    st.none() | st.integers(0, 2000),
    st.integers(0, 3),
)
def test_decode_run_matches_decode_record(
    batch: list[NewEvent], first: int, max_bytes: int | None, already: int
) -> None:
    records = [encode_record(event, 1_700_000_000_000) for event in batch]
    reference = [decode_record(first + i, r) for i, r in enumerate(records)]
    out = [decode_record(0, encode_record(NewEvent("x", b""), 1))] * already
    done, total, full = decode_run(
        list(records), range(first, first + len(records)), out, max_bytes, 0
    )
    assert out[already:] == reference[:done]
    assert total == sum(map(len, records[:done]))
    if max_bytes is None or total == sum(map(len, records)):
        assert done == len(records) and not full
    else:
        assert full and done < len(records)
        assert total + len(records[done]) > max_bytes  # the next one would not fit
        assert done >= 1 or already  # at least one event overall


def test_decode_run_names_the_bad_record() -> None:
    good = encode_record(NewEvent("a", b"1"), 5)
    out: list = []
    with pytest.raises(CorruptLogError, match="record 11"):
        decode_run([good, b"\x09" + good[1:]], [10, 11], out, None, 0)
    with pytest.raises(CorruptLogError, match="record 21"):
        decode_run([good, good[:12]], [20, 21], [], None, 0)  # truncated topic
    with pytest.raises(CorruptLogError, match="record 31"):
        decode_run([good, b"\x01"], [30, 31], [], None, 0)  # shorter than a header


def test_encode_batch_validates_every_event() -> None:
    with pytest.raises(InvalidTopicError):
        encode_batch([NewEvent("ok", b""), NewEvent("bad/#", b"")], 1, 100)
    with pytest.raises(ValueError, match="qos"):
        encode_batch([NewEvent("ok", b""), NewEvent("ok", b"", qos=3)], 1, 100)
    with pytest.raises(TypeError):
        encode_batch([NewEvent("ok", b""), "not an event"], 1, 100)  # type: ignore[list-item]


@given(
    st.lists(st.tuples(topics, st.binary(max_size=64)), min_size=1, max_size=30),
    st.sampled_from([0, 1, 2]),
    st.booleans(),
    st.integers(0, 10**6),
)
def test_decode_run_uniform_runs_match_decode_record(
    rows: list[tuple[str, bytes]], qos: int, retain: bool, first: int
) -> None:
    """Runs whose records share one QoS and retain flag take their own fast paths."""
    records = [
        encode_record(NewEvent(topic, payload, qos, retain), 1_700_000_000_000 + i)
        for i, (topic, payload) in enumerate(rows)
    ]
    reference = [decode_record(first + i, r) for i, r in enumerate(records)]
    out: list = []
    assert decode_run(list(records), range(first, first + len(records)), out, None, 0) == (
        len(records),
        sum(map(len, records)),
        False,
    )
    assert out == reference
    assert all(type(e.retain) is bool and type(e.qos) is int for e in out)


@pytest.mark.parametrize("qos,retain", [(0, False), (1, True), (2, False)])
def test_decode_run_uniform_run_with_a_cut_record_names_it(qos: int, retain: bool) -> None:
    good = encode_record(NewEvent("a/b", b"12", qos, retain), 5)
    with pytest.raises(CorruptLogError, match="record 41"):
        decode_run([good, good[:14]], [40, 41], [], None, 0)  # topic cut short


@settings(deadline=None)
@given(st.lists(new_events, min_size=1, max_size=10), st.integers(0, 10**6))
def test_every_field_round_trips(batch: list[NewEvent], first: int) -> None:
    records = encode_records(batch, 1_700_000_000_000, check_event, {})
    out: list = []
    decode_run(list(records), range(first, first + len(records)), out, None, 0)
    assert [(e.topic, e.payload, e.qos, e.retain, e.properties, e.provenance) for e in out] == [
        (e.topic, e.payload, e.qos, e.retain, e.properties, e.provenance) for e in batch
    ]
    for event in out:
        if event.provenance is not None:
            assert Provenance.from_dict(event.provenance.to_dict()) == event.provenance


def test_provenance_that_cannot_be_stored_is_refused_before_anything_is() -> None:
    with pytest.raises(ValueError, match="packet_id"):
        encode_batch(
            [NewEvent("ok", b""), NewEvent("ok", b"", provenance=Provenance(packet_id=0))], 1, 100
        )
    with pytest.raises(ValueError, match="unknown provenance"):
        Provenance.from_dict({"client": "x"})


def test_a_run_with_one_damaged_record_names_it() -> None:
    records = [encode_record(NewEvent("a/b", bytes([n]) * 20), 5) for n in range(5)]
    damaged = bytearray(records[3])
    damaged[15] ^= 0x04
    with pytest.raises(CorruptLogError, match="record 13: checksum mismatch"):
        decode_run([*records[:3], bytes(damaged), records[4]], range(10, 15), [], None, 0)
