"""``tidelog verify``, ``reindex``, ``dump`` and ``load``: tools on a data directory.

They open the storage directly, so no server may hold it (the backends lock
their data directory; a held one gives a clear error).

The dump format is JSON lines, one record per line, ``type`` first:

* ``{"type": "tidelog-dump", "version": 1, "source": URL, "first_offset": N,
  "next_offset": N}`` — the header;
* ``{"type": "event", "offset", "timestamp", "topic", "payload" (base64), "qos",
  "retain", "properties" (null or the REST shape), "provenance" (null or an
  object with any of "client_id", "packet_id", "origin_node", "origin_offset",
  "hop_path"; absent in older dumps)}`` — every stored event, in offset order;
* ``{"type": "cursor", "name", "position", "metadata"}``;
* ``{"type": "state", "namespace", "key", "value" (base64)}`` — the engine's
  durable state (retained messages, MQTT sessions, pending wills, mesh link
  positions, consumer groups' leases, webhooks);
* ``{"type": "end", "events": N}`` — written last, so a truncated dump is
  detected on load.

``load`` writes into an empty log and reproduces offsets and timestamps
exactly: events go in batches of equal timestamp, with the target log's clock
set to that timestamp (a log stamps a batch with ``max(clock, last timestamp)``).
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

from tidelog.cli.common import (
    CLIError,
    Progress,
    add_parser,
    properties_from_json,
    properties_json,
)
from tidelog.engine.consumers import NAMESPACE as CONSUMERS
from tidelog.engine.retained import NAMESPACE as RETAINED
from tidelog.engine.sessions import NAMESPACE as SESSIONS
from tidelog.engine.wills import NAMESPACE as WILLS
from tidelog.mesh.config import LINKS_NAMESPACE as LINKS
from tidelog.mesh.positions import NAMESPACE as MESH
from tidelog.storage import (
    CursorState,
    Event,
    EventLog,
    NewEvent,
    Provenance,
    open_log,
    parse_url,
)
from tidelog.storage.records import CorruptRecordError
from tidelog.webhooks.service import NAMESPACE as WEBHOOKS

DUMP_FORMAT = "tidelog-dump"
DUMP_VERSION = 1
STATE_NAMESPACES = (RETAINED, SESSIONS, WILLS, MESH, LINKS, CONSUMERS, WEBHOOKS)
"""The state namespaces a dump carries: the engine's, the mesh's link positions (not
the node's identity: a loaded log is a new incarnation, docs/mesh.md), consumer groups'
leases and webhooks."""
READ_BATCH = 10_000
LOAD_BATCH_BYTES = 16 * 1024 * 1024

EXIT_PROBLEMS = 3


def _lmdb_check() -> Any | None:
    """:mod:`tidelog.storage.lmdb_check` if this build has the LMDB backend."""
    if importlib.util.find_spec("tidelog.storage.lmdb_check") is None:
        return None
    return importlib.import_module("tidelog.storage.lmdb_check")


def _progress_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar on standard error (default: when it is a terminal)",
    )


# -- verify / reindex --------------------------------------------------------------------


async def _scan_log(log: EventLog, progress: Progress) -> tuple[int, list[str]]:
    """Read every event; check offsets, timestamps and the topic counts."""
    problems: list[str] = []
    state = await log.state()
    expected = state.first_offset
    last_ts: int | None = None
    counts: dict[str, int] = {}
    damaged = 0
    while expected < state.next_offset:
        try:
            result = await log.read(expected, limit=READ_BATCH, max_bytes=None)
        except CorruptRecordError as exc:
            if exc.offset <= expected:  # report it and read on after it
                problems.append(str(exc))
                damaged += 1
                expected = exc.offset + 1
                continue
            result = await log.read(expected, limit=READ_BATCH, max_bytes=None, end=exc.offset)
        if not result.events:
            problems.append(f"no event at offset {expected} (the log ends at {state.next_offset})")
            break
        for event in result.events:
            if event.offset != expected:
                problems.append(f"offset {event.offset} where {expected} was expected")
            if last_ts is not None and event.timestamp < last_ts:
                problems.append(f"event {event.offset}: timestamp goes back to {event.timestamp}")
            last_ts = event.timestamp
            counts[event.topic] = counts.get(event.topic, 0) + 1
            expected = event.offset + 1
        progress.update(expected - state.first_offset)
    listed = {t.topic: t.count for t in await log.topics()}
    if listed != counts and not damaged:  # a damaged record's topic is unknown
        differ = sorted(t for t in set(listed) | set(counts) if listed.get(t) != counts.get(t))
        problems.append(
            f"topic counts differ from the events for {len(differ)} topics "
            f"(first: {differ[0]!r}: listed {listed.get(differ[0])}, "
            f"stored {counts.get(differ[0])})"
        )
    if state.event_count and last_ts != state.last_timestamp:
        problems.append(f"last timestamp {state.last_timestamp} but the last event has {last_ts}")
    return expected - state.first_offset, problems


def _verify(args: argparse.Namespace) -> int:
    import trio

    scheme, path, _ = parse_url(args.storage)
    started = time.monotonic()
    problems: list[str] = []
    checker = _lmdb_check() if scheme == "lmdb" else None
    if checker is not None:
        assert path is not None
        report = _with_ticker("verifying segments and indexes", args, checker.verify, path)
        problems += list(report.problems)
        print(
            f"{args.storage}: {report.segments} segments, {report.events} events, "
            f"{report.topics} topics: indexes {'ok' if report.ok else 'DAMAGED'}",
            file=sys.stderr,
        )

    async def scan() -> tuple[int, list[str], int]:
        async with open_log(args.storage) as log:
            state = await log.state()
            progress = Progress("reading events", state.event_count, enabled=args.progress)
            count, found = await _scan_log(log, progress)
            progress.done(count)
            return count, found, len(await log.topics())

    events, found, topics = trio.run(scan)
    problems += found
    elapsed = time.monotonic() - started
    for problem in problems:
        print(f"problem: {problem}")
    verdict = "ok" if not problems else f"{len(problems)} problems"
    print(f"verified {events} events, {topics} topics in {elapsed:.1f}s: {verdict}")
    return 0 if not problems else EXIT_PROBLEMS


def _with_ticker(label: str, args: argparse.Namespace, function: Any, *call_args: Any) -> Any:
    """Run a blocking check in a thread, showing elapsed time while it runs."""
    import trio

    async def run() -> Any:
        progress = Progress(label, 0, enabled=args.progress)
        async with trio.open_nursery() as nursery:

            async def tick() -> None:
                while True:
                    progress.update(0)
                    await trio.sleep(0.25)

            nursery.start_soon(tick)
            try:
                return await trio.to_thread.run_sync(function, *call_args)
            finally:
                nursery.cancel_scope.cancel()
                progress.done(0)

    return trio.run(run)


def _reindex(args: argparse.Namespace) -> int:
    scheme, path, _ = parse_url(args.storage)
    checker = _lmdb_check() if scheme == "lmdb" else None
    if checker is None:
        raise CLIError(
            f"reindex: {scheme}:// logs keep no derived indexes of their own to rebuild "
            "(only lmdb:// logs do); run 'tidelog verify' to check this one"
        )
    assert path is not None
    started = time.monotonic()
    report = _with_ticker("rebuilding indexes", args, checker.reindex, path)
    sealed = f", sealed {', '.join(report.sealed)}" if report.sealed else ""
    print(
        f"reindexed {report.segments} segments, {report.events} events in "
        f"{time.monotonic() - started:.1f}s{sealed}"
    )
    return 0


# -- dump --------------------------------------------------------------------------------


def _event_record(event: Event) -> dict[str, Any]:
    return {
        "type": "event",
        "offset": event.offset,
        "timestamp": event.timestamp,
        "topic": event.topic,
        "payload": base64.b64encode(event.payload).decode("ascii"),
        "qos": event.qos,
        "retain": event.retain,
        "properties": properties_json(event.properties),
        "provenance": None if event.provenance is None else event.provenance.to_dict(),
    }


def _write(out: IO[str], record: dict[str, Any]) -> None:
    out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")


async def dump_log(log: EventLog, source: str, out: IO[str], progress: Progress) -> int:
    """Write the whole log (events, cursors, state) to ``out``; return the event count."""
    state = await log.state()
    _write(
        out,
        {
            "type": DUMP_FORMAT,
            "version": DUMP_VERSION,
            "source": source,
            "first_offset": state.first_offset,
            "next_offset": state.next_offset,
        },
    )
    count = 0
    position = state.first_offset
    while position < state.next_offset:
        result = await log.read(position, limit=READ_BATCH, end=state.next_offset)
        for event in result.events:
            _write(out, _event_record(event))
        count += len(result.events)
        if result.next_offset <= position:
            raise CLIError(f"the log does not advance at offset {position}")
        position = result.next_offset
        progress.update(count)
    for cursor in await log.list_cursors():
        _write(
            out,
            {
                "type": "cursor",
                "name": cursor.name,
                "position": cursor.position,
                "metadata": cursor.metadata,
            },
        )
    for namespace in STATE_NAMESPACES:
        for key, value in sorted((await log.list_state(namespace)).items()):
            _write(
                out,
                {
                    "type": "state",
                    "namespace": namespace,
                    "key": key,
                    "value": base64.b64encode(value).decode("ascii"),
                },
            )
    _write(out, {"type": "end", "events": count})
    return count


def _dump(args: argparse.Namespace) -> int:
    import trio

    async def run(out: IO[str]) -> int:
        async with open_log(args.storage) as log:
            progress = Progress("dumping", (await log.state()).event_count, enabled=args.progress)
            count = await dump_log(log, args.storage, out, progress)
            progress.done(count)
            return count

    started = time.monotonic()
    if args.output in (None, "-"):
        count = trio.run(run, sys.stdout)
        sys.stdout.flush()
    else:
        with open(args.output, "w", encoding="utf-8") as out:
            count = trio.run(run, out)
    print(
        f"dumped {count} events from {args.storage} in {time.monotonic() - started:.1f}s",
        file=sys.stderr,
    )
    return 0


# -- load --------------------------------------------------------------------------------


def _records(stream: IO[str], name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise CLIError(f"{name}:{number}: not JSON: {exc}") from None
        if not isinstance(record, dict) or "type" not in record:
            raise CLIError(f"{name}:{number}: not a dump record")
        yield number, record


class _Clock:
    """The target log's clock during a load: the timestamp of the batch being appended."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


async def load_log(
    log: EventLog, clock: _Clock, stream: IO[str], name: str, progress: Progress
) -> int:
    """Load a dump into the empty ``log``; return the event count."""
    state = await log.state()
    if state.event_count or state.next_offset or await log.list_cursors():
        raise CLIError("the target log is not empty; load needs a new, empty log")
    records = _records(stream, name)
    first = next(records, None)
    if first is None or first[1].get("type") != DUMP_FORMAT:
        raise CLIError(f"{name}: not a tidelog dump (no header line)")
    header = first[1]
    if header.get("version") != DUMP_VERSION:
        raise CLIError(f"{name}: dump version {header.get('version')} is not supported")
    if header["first_offset"] != state.next_offset:
        raise CLIError(
            f"{name}: the dump starts at offset {header['first_offset']} (retention dropped the "
            f"events before it) but a new log starts at {state.next_offset}; offsets could not "
            "be kept"
        )
    batch: list[NewEvent] = []
    batch_records: list[dict[str, Any]] = []
    batch_bytes = 0
    count = 0
    ended = False

    async def flush() -> None:
        nonlocal batch, batch_records, batch_bytes, count
        if not batch:
            return
        clock.now = batch_records[0]["timestamp"]
        stored = await log.append(batch)
        for event, record in zip(stored, batch_records, strict=True):
            if event.offset != record["offset"] or event.timestamp != record["timestamp"]:
                raise CLIError(
                    f"event {record['offset']} was stored at offset {event.offset}, "
                    f"timestamp {event.timestamp} (dump: {record['timestamp']})"
                )
        count += len(stored)
        progress.update(count)
        batch, batch_records, batch_bytes = [], [], 0

    cursors: list[CursorState] = []
    state_items: dict[str, dict[str, bytes | None]] = {}
    for number, record in records:
        kind = record["type"]
        try:
            if kind == "event":
                if batch_records and (
                    record["timestamp"] != batch_records[0]["timestamp"]
                    or len(batch) >= READ_BATCH
                    or batch_bytes >= LOAD_BATCH_BYTES
                ):
                    await flush()
                payload = base64.b64decode(record["payload"], validate=True)
                batch.append(
                    NewEvent(
                        record["topic"],
                        payload,
                        record["qos"],
                        record["retain"],
                        properties_from_json(record["properties"]),
                        _provenance(record.get("provenance")),
                    )
                )
                batch_records.append(record)
                batch_bytes += len(payload)
            elif kind == "cursor":
                cursors.append(CursorState(record["name"], record["position"], record["metadata"]))
            elif kind == "state":
                value = base64.b64decode(record["value"], validate=True)
                state_items.setdefault(record["namespace"], {})[record["key"]] = value
            elif kind == "end":
                await flush()
                if record["events"] != count:
                    raise CLIError(f"{name}: the dump says {record['events']} events, read {count}")
                ended = True
            else:
                raise CLIError(f"{name}:{number}: unknown record type {kind!r}")
        except (KeyError, TypeError, ValueError) as exc:
            raise CLIError(f"{name}:{number}: bad {kind} record: {exc}") from None
    if not ended:
        raise CLIError(f"{name}: the dump is truncated (no end record); the target is incomplete")
    if cursors:
        await log.commit_cursors(cursors)
    for namespace, items in state_items.items():
        await log.put_state(namespace, items)
    return count


def _provenance(value: Any) -> Provenance | None:
    """An event's ``provenance`` from a dump (absent in dumps made before issue 17)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("provenance must be an object or null")
    return Provenance.from_dict(value)


def _load(args: argparse.Namespace) -> int:
    import trio

    clock = _Clock()

    async def run(stream: IO[str], name: str, total: int) -> int:
        async with open_log(args.storage, clock=clock) as log:
            progress = Progress("loading", total, enabled=args.progress)
            count = await load_log(log, clock, stream, name, progress)
            progress.done(count)
            return count

    started = time.monotonic()
    if args.input in (None, "-"):
        count = trio.run(run, sys.stdin, "stdin", 0)
    else:
        total = _peek_total(args.input)
        with open(args.input, encoding="utf-8") as stream:
            count = trio.run(run, stream, args.input, total)
    print(f"loaded {count} events into {args.storage} in {time.monotonic() - started:.1f}s")
    return 0


def _peek_total(path: str) -> int:
    """The event count from the dump's header (for the progress bar)."""
    try:
        file = open(path, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror}") from None
    with file:
        try:
            header = json.loads(file.readline())
            return int(header["next_offset"]) - int(header["first_offset"])
        except (ValueError, KeyError, TypeError):
            return 0


# -- registration ------------------------------------------------------------------------


def register(commands: Any) -> None:
    verify = add_parser(
        commands,
        "verify",
        "check a stopped log: every record, offsets, timestamps and indexes",
        "tidelog verify --storage lmdb://./tidelog-data",
    )
    verify.add_argument("--storage", required=True, metavar="URL", help="the log to check")
    _progress_flag(verify)
    verify.set_defaults(func=_verify)

    reindex = add_parser(
        commands,
        "reindex",
        "rebuild a stopped LMDB log's indexes from its events",
        "tidelog reindex --storage lmdb://./tidelog-data",
    )
    reindex.add_argument("--storage", required=True, metavar="URL", help="the log to reindex")
    _progress_flag(reindex)
    reindex.set_defaults(func=_reindex)

    dump = add_parser(
        commands,
        "dump",
        "export a stopped log (events, cursors, retained messages, sessions) as JSON lines",
        "tidelog dump --storage lmdb://./tidelog-data -o backup.jsonl\n"
        "tidelog dump --storage lmdb://./old | tidelog load --storage sqlite://./new.db",
    )
    dump.add_argument("--storage", required=True, metavar="URL", help="the log to export")
    dump.add_argument("--output", "-o", metavar="FILE", help="write here (default stdout)")
    _progress_flag(dump)
    dump.set_defaults(func=_dump)

    load = add_parser(
        commands,
        "load",
        "import a dump into a new, empty log, keeping offsets and timestamps",
        "tidelog load backup.jsonl --storage sqlite://./restored.db",
    )
    load.add_argument("input", nargs="?", metavar="FILE", help="the dump (default stdin)")
    load.add_argument("--storage", required=True, metavar="URL", help="the (empty) target log")
    _progress_flag(load)
    load.set_defaults(func=_load)
