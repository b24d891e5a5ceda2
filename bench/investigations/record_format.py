"""Record format v2 (checksummed) against v1, in the same run: what the checksum costs.

Usage (from the repository root)::

    python -m bench.investigations.record_format            # the full run (a few minutes)
    python -m bench.investigations.record_format --quick    # a smoke run (seconds)

The same process writes and reads logs in both formats, interleaved run by run
(v1, v2, v1, v2, ...), so both see the same machine load; each figure is the
median of ``--repeat`` runs (default 5) and the v2/v1 ratio is printed beside
it. v1 is written by the version 1 encoder that records.py keeps for this
(``encode_records(..., version=1)``); both formats go through the same
``functools.partial`` so neither pays a call the other does not.

Measured, with ``--payload`` byte payloads (default 100) on 100 topics:

* encoding alone: ``encode_records`` of 1000-event batches, ns/event;
* decoding alone: ``decode_run`` of 1000-record runs (records in memory), ns/event;
* LMDB append, ``log.append`` of 1000-event batches, fsync ``never`` and ``always``,
  events/s and process CPU ns/event;
* LMDB replay, ``log.read`` of the whole log (``--events``) in 1000-event reads,
  unfiltered and for one topic of 100 (through the topic index), events/s and
  CPU ns/event;
* SQLite append (fsync ``always``) and replay, the same way.

Wall-clock rates on a shared machine swing with other people's load; instruction
counts do not. ``--instructions`` runs, for each format, a child process under
callgrind that appends ``--count-events`` events to an LMDB log (fsync
``never``, batches of 1000) and replays them (``log.read``, pages of 1000),
and prints instructions per event of each part (the child calls
``os.getppid`` between the parts; callgrind's ``--dump-before=os_getppid``
cuts the profile there, as in ``bench/investigations/read_instructions.py``)::

    python -m bench.investigations.record_format --instructions
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tidelog.storage import EventLog, NewEvent, common, open_log
from tidelog.storage.records import Event, decode_run, encode_records

VERSIONS = (1, 2)


def use_version(version: int) -> None:
    """Make every log of this process write records of ``version``."""
    common.encode_records = functools.partial(encode_records, version=version)  # type: ignore[assignment]


def make_events(count: int, payload: int, start: int = 0) -> list[NewEvent]:
    body = b"x" * payload
    return [NewEvent(f"sensors/{(start + i) % 100}/value", body) for i in range(count)]


def cpu_and_wall(function: Callable[[], object]) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    function()
    return time.process_time() - cpu, time.perf_counter() - wall


async def timed(awaitable: Awaitable[int]) -> tuple[int, float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    count = await awaitable
    return count, time.process_time() - cpu, time.perf_counter() - wall


def encode_ns(version: int, events: list[NewEvent]) -> float:
    batches = [events[i : i + 1000] for i in range(0, len(events), 1000)]
    started = time.perf_counter()
    for batch in batches:
        encode_records(batch, 1_700_000_000_000, lambda i, e: None, {}, version)
    return (time.perf_counter() - started) / len(events) * 1e9


def decode_ns(version: int, events: list[NewEvent]) -> float:
    records = encode_records(events, 1_700_000_000_000, lambda i, e: None, {}, version)
    chunks = [records[i : i + 1000] for i in range(0, len(records), 1000)]
    gc.disable()  # as during a read (see LmdbLog.read)
    try:
        started = time.perf_counter()
        for number, chunk in enumerate(chunks):
            out: list[Event] = []
            decode_run(list(chunk), range(number * 1000, number * 1000 + len(chunk)), out, None, 0)
        return (time.perf_counter() - started) / len(records) * 1e9
    finally:
        gc.enable()


async def append_all(log: EventLog, events: list[NewEvent]) -> int:
    for first in range(0, len(events), 1000):
        await log.append(events[first : first + 1000])
    return len(events)


async def replay(log: EventLog, topic_filter: str | None) -> int:
    state = await log.state()
    position, seen = state.first_offset, 0
    while position < state.next_offset:
        result = await log.read(position, topic_filter, limit=1000)
        seen += len(result.events)
        position = result.next_offset
    return seen


Figures = dict[str, dict[int, list[tuple[float, float]]]]
"""measure -> version -> runs of (events/s or ns/event, CPU ns/event)."""


async def one_round(
    workdir: Path, version: int, args: argparse.Namespace, figures: Figures
) -> None:
    """Every measure once for ``version``."""
    events = make_events(args.events, args.payload)

    def note(name: str, value: float, cpu_ns: float = 0.0) -> None:
        figures.setdefault(name, {}).setdefault(version, []).append((value, cpu_ns))

    note("encode ns/event", encode_ns(version, events[: args.codec_events]))
    note("decode ns/event", decode_ns(version, events[: args.codec_events]))
    use_version(version)
    for scheme, fsyncs in (("lmdb", ("never", "always")), ("sqlite", ("always",))):
        for fsync in fsyncs:
            path = workdir / f"{scheme}-{fsync}-v{version}"
            url = f"lmdb://{path}" if scheme == "lmdb" else f"sqlite://{path}.db"
            count = args.events if fsync == "never" else args.fsync_events
            async with open_log(url, fsync=fsync) as log:
                n, cpu, wall = await timed(append_all(log, events[:count]))
                note(f"{scheme} append fsync={fsync} ev/s", n / wall, cpu / n * 1e9)
            if fsync == "always" and scheme == "lmdb":
                shutil.rmtree(path)
                continue
            async with open_log(url) as log:
                for name, topic_filter in (("all", None), ("one topic", "sensors/7/value")):
                    n, cpu, wall = await timed(replay(log, topic_filter))
                    note(f"{scheme} replay {name} ev/s", n / wall, cpu / n * 1e9)
            if scheme == "lmdb":
                shutil.rmtree(path)
            else:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}.db{suffix}").unlink(missing_ok=True)


def report(figures: Figures) -> str:
    lines = [
        "| measure | v1 | v2 | v2 / v1 | CPU ns/event v1 | v2 | v2 / v1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, runs in figures.items():
        value = {v: statistics.median(r[0] for r in runs[v]) for v in VERSIONS}
        cpu = {v: statistics.median(r[1] for r in runs[v]) for v in VERSIONS}
        fmt = "{:.0f}" if "ns" in name else "{:,.0f}"
        cells = [name, fmt.format(value[1]), fmt.format(value[2]), f"{value[2] / value[1]:.3f}"]
        if cpu[1]:
            cells += [f"{cpu[1]:.0f}", f"{cpu[2]:.0f}", f"{cpu[2] / cpu[1]:.3f}"]
        else:
            cells += ["", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    figures: Figures = {}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for number in range(args.repeat):
            for version in VERSIONS if number % 2 == 0 else reversed(VERSIONS):
                await one_round(Path(tmp), version, args, figures)
            print(f"round {number + 1}/{args.repeat} done", file=sys.stderr, flush=True)
    print(
        f"record format v1 vs v2: {args.events} events of {args.payload} B on 100 topics, "
        f"median of {args.repeat} interleaved runs"
    )
    print(report(figures))


async def child(version: int, path: str, count: int) -> None:
    """The workload ``--instructions`` counts: append, then replay, cut by os.getppid."""
    use_version(version)
    events = make_events(count, 100)
    async with open_log(f"lmdb://{path}", fsync="never") as log:
        await append_all(log, events[:1000])  # warm up: topics, caches, the writer thread
        await replay(log, None)
        os.getppid()
        await append_all(log, events[1000:])
        os.getppid()
        await replay(log, None)
        os.getppid()


def instructions(args: argparse.Namespace) -> None:
    """Instructions per event of append and replay, each format in its own callgrind run."""
    rows = {}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for version in VERSIONS:
            out = f"{tmp}/cg-v{version}"
            subprocess.run(
                [
                    *("valgrind", "--tool=callgrind", "--dump-before=os_getppid"),
                    f"--callgrind-out-file={out}",
                    *(sys.executable, __file__, "--child", str(version), f"{tmp}/log-v{version}"),
                    *("--count-events", str(args.count_events)),
                ],
                check=True,
                capture_output=True,
            )
            totals = []
            for part in (2, 3):  # 1: startup and warm-up; 2: append; 3: replay
                lines = Path(f"{out}.{part}").read_text().splitlines()
                total = next(line for line in lines if line.startswith(("summary:", "totals:")))
                totals.append(int(total.split()[1]))
            appended = args.count_events - 1000
            rows[version] = (totals[0] / appended, totals[1] / args.count_events)
    print(f"instructions per event (callgrind), {args.count_events} events of 100 B, LMDB")
    print("| measure | v1 | v2 | v2 / v1 |")
    print("|---|---|---|---|")
    for index, name in enumerate(("append (fsync never, batches of 1000)", "replay (log.read)")):
        v1, v2 = rows[1][index], rows[2][index]
        print(f"| {name} | {v1:,.0f} | {v2:,.0f} | {v2 / v1:.3f} |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run (seconds)")
    parser.add_argument("--dir", default="/tmp", help="parent of the temporary data directory")
    parser.add_argument("--payload", type=int, default=100, help="payload bytes per event")
    parser.add_argument("--events", type=int, default=200_000, help="events per log")
    parser.add_argument("--fsync-events", type=int, default=50_000, help="events, fsync always")
    parser.add_argument("--codec-events", type=int, default=100_000, help="events, codec alone")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved runs per format")
    parser.add_argument("--instructions", action="store_true", help="count with callgrind")
    parser.add_argument("--count-events", type=int, default=50_000, help="--instructions events")
    parser.add_argument("--child", nargs=2, metavar=("VERSION", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.fsync_events, args.codec_events, args.repeat = 5000, 2000, 5000, 2
    return args


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.child:
        trio.run(child, int(arguments.child[0]), arguments.child[1], arguments.count_events)
    elif arguments.instructions:
        instructions(arguments)
    else:
        trio.run(main, arguments)
