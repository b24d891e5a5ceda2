"""Record format v2 on real files: every flipped bit of a stored record is an error
naming where it is and what to do, never a wrong event; version 1 logs written by
the old encoder still read, and take version 2 appends after them.

The bit flips go into the LMDB segment file and the SQLite database file
themselves, at the place the record's bytes are stored, and the log is opened
afresh for each flip (as a broker restarting on a damaged disk would).
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.storage.data.make_v1_logs import EVENTS as V1_EVENTS
from tests.storage.data.make_v1_logs import T as V1_T
from tidelog.errors import CorruptLogError
from tidelog.storage import Event, EventLog, NewEvent, Properties, Provenance, open_log
from tidelog.storage.lmdb_check import verify
from tidelog.storage.records import (
    DAMAGED_ADVICE,
    CorruptRecordError,
    decode_record,
    encode_record,
)
from tidelog.topics import compile_filter

DATA = Path(__file__).parent / "data"
T = 1_700_000_000_000

PLAIN = NewEvent("flip/plain", b"payload!", qos=1)
RICH = NewEvent(
    "flip/rich",
    b"rich payload",
    qos=2,
    retain=True,
    properties=Properties(content_type="text/plain", user_properties=(("k", "v"),)),
    provenance=Provenance(
        client_id="pub-1", packet_id=7, origin_node="n1", origin_offset=99, hop_path=("n1", "n2")
    ),
)
NEIGHBOURS = [NewEvent("flip/other", b"before"), PLAIN, RICH, NewEvent("flip/other", b"after")]
"""Offsets 0-3; the tests flip the bits of offset 1 (a plain record, decoded by the
fast path) and offset 2 (provenance and properties, decoded record by record)."""


def url_of(backend: str, root: Path) -> str:
    return f"lmdb://{root}/data" if backend == "lmdb" else f"sqlite://{root}/log.db"


def data_file(backend: str, root: Path) -> Path:
    if backend == "lmdb":
        return root / "data" / "segments" / ("0" * 20) / "data.mdb"
    return root / "log.db"


async def read_everything(log: EventLog, topic_filter: str | None = None) -> list[Event]:
    out: list[Event] = []
    state = await log.state()
    position = state.first_offset
    while position < state.next_offset:
        result = await log.read(position, topic_filter, limit=3)  # several reads, runs of 1-3
        out += result.events
        position = result.next_offset
    return out


async def live_copy(url: str, path: Path, original: bytes, record: bytes) -> int:
    """Where the copy of ``record`` that reads see starts in the file.

    LMDB writes copy-on-write, so a freed page can still hold an older copy of a
    record; the live one is found by damaging each copy's checksum in turn."""
    starts = [i for i in range(len(original)) if original.startswith(record, i)]
    assert starts, "the record is stored contiguously"
    if len(starts) == 1:
        return starts[0]
    for start in starts:
        damaged = bytearray(original)
        damaged[start + len(record) - 1] ^= 1
        path.write_bytes(damaged)
        try:
            async with open_log(url) as log:
                await read_everything(log)
        except CorruptLogError:
            return start
        finally:
            path.write_bytes(original)
    raise AssertionError("no copy of the record is the one reads see")


@pytest.mark.parametrize("backend", ["lmdb", "sqlite"])
@pytest.mark.parametrize("offset", [1, 2])
async def test_every_flipped_bit_of_a_stored_record_is_a_clear_error(
    tmp_path: Path, backend: str, offset: int
) -> None:
    url = url_of(backend, tmp_path)
    async with open_log(url, clock=lambda: T) as log:
        stored = await log.append(NEIGHBOURS)
    record = encode_record(NEIGHBOURS[offset], T)
    path = data_file(backend, tmp_path)
    original = path.read_bytes()
    start = await live_copy(url, path, original, record)
    where = f"segment {path.parent}" if backend == "lmdb" else f"sqlite log {path}"
    for bit in range(len(record) * 8):
        damaged = bytearray(original)
        damaged[start + bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(damaged)
        with pytest.raises(CorruptLogError) as caught:
            async with open_log(url) as log:
                delivered = await read_everything(log)
                pytest.fail(f"bit {bit}: read {len(delivered)} events without an error")
        message = str(caught.value)
        assert where in message and f"record {offset}:" in message, (bit, message)
        assert "tidelog verify" in message, (bit, message)
        assert isinstance(caught.value, CorruptRecordError) and caught.value.offset == offset
        # A filtered read returns the other events untouched, or stops at the damage.
        try:
            async with open_log(url) as log:
                delivered = await read_everything(log, "flip/other")
        except CorruptRecordError as exc:
            assert exc.offset == offset
        else:
            assert delivered == [stored[0], stored[3]], bit
    path.write_bytes(original)
    async with open_log(url) as log:
        assert await read_everything(log) == stored


async def test_verify_lists_a_damaged_record_and_the_events_around_it(tmp_path: Path) -> None:
    url = url_of("lmdb", tmp_path)
    async with open_log(url, clock=lambda: T) as log:
        await log.append(NEIGHBOURS)
    path = data_file("lmdb", tmp_path)
    data = bytearray(path.read_bytes())
    record = encode_record(PLAIN, T)
    data[data.index(record) + len(record) - 6] ^= 0x10  # a payload bit
    path.write_bytes(data)
    report = verify(tmp_path / "data")
    assert report.problems == (f"segment {'0' * 20}: record 1: checksum mismatch",)
    result = subprocess.run(
        [sys.executable, "-m", "tidelog", "verify", "--storage", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3, result.stderr
    assert "record 1: checksum mismatch" in result.stdout
    assert "verified 4 events" in result.stdout  # read on past the damaged record
    assert "tidelog verify" in result.stdout  # the read pass says what to do


@pytest.mark.parametrize("backend", ["lmdb", "sqlite"])
async def test_a_version_1_log_written_by_the_old_encoder_reads_and_takes_v2_appends(
    tmp_path: Path, backend: str
) -> None:
    with tarfile.open(DATA / f"v1-{backend}.tar.gz") as archive:
        archive.extractall(tmp_path, filter="data")
    path = tmp_path / "data"
    url = f"lmdb://{path}" if backend == "lmdb" else f"sqlite://{path}/log.db"
    async with open_log(url, clock=lambda: V1_T + 5000) as log:
        old = await read_everything(log)
        assert [(e.offset, e.timestamp) for e in old] == [
            (0, V1_T), (1, V1_T), (2, V1_T + 1000), (3, V1_T + 1000)
        ]  # fmt: skip
        for event, written in zip(old, V1_EVENTS, strict=True):
            assert (event.topic, event.payload, event.qos, event.retain, event.properties) == (
                written.topic, written.payload, written.qos, written.retain, written.properties
            )  # fmt: skip
            assert event.provenance is None
        assert (await log.load_cursor("reader")).position == 3  # type: ignore[union-attr]
        new = await log.append([PLAIN, RICH])
        mixed = await read_everything(log)
        assert mixed == old + new
        for topic_filter in ("v1/a", "flip/#", "#"):
            match = compile_filter(topic_filter)
            assert await read_everything(log, topic_filter) == [e for e in mixed if match(e.topic)]
    async with open_log(url) as log:
        result = await log.read(0, limit=10)  # one run across both versions
        assert result.events == mixed
    if backend == "lmdb":
        report = verify(path)
        assert report.ok, report.problems


def test_a_record_names_its_version_1_twin() -> None:
    """The version 1 encoder the tests and benchmarks compare with writes what it always did."""
    for event in V1_EVENTS:
        v1 = encode_record(event, T, version=1)
        v2 = encode_record(event, T)
        assert v1[0] == 1 and v2[0] == 2 and v2[1:-4] == v1[1:]
        assert decode_record(5, v1) == decode_record(5, v2)
    with pytest.raises(ValueError, match="provenance"):
        encode_record(RICH, T, version=1)


def test_damaged_advice_is_in_the_storage_docs() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "storage.md").read_text()
    assert "## Damaged records" in docs
    assert "tidelog verify" in DAMAGED_ADVICE
