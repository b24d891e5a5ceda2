"""Storage benchmark: the LMDB log against raw py-lmdb on the same disk.

Usage (from the repository root)::

    python bench/storage.py            # the full run (a few minutes)
    python bench/storage.py --quick    # a smoke run (seconds)

Data goes to a temporary directory under ``--dir`` (default /tmp), removed at
the end. Events carry ``--payload`` bytes (default 100) on 100 topics unless
stated. Every figure is the best of ``--repeat`` runs (default 3): the
machines this runs on are shared and noisy, and the best run is the one least
disturbed; raw py-lmdb gets the same treatment, interleaved with tidelog.

What it measures:

* raw py-lmdb on the same disk: ``putmulti(append=True)`` of pre-encoded
  records in 1000-record transactions with ``sync=True`` (the ceiling for an
  fsynced append), and a cursor scan of those records (the ceiling for a replay);
* for fsync ``always`` and ``never`` and batch sizes 1, 100 and 1000: append
  events/s (``log.append``, which returns the stored events), replay events/s
  (``log.read`` from the first offset to the end, ``limit=1000``, decoded
  events), and ``offset_for_time`` lookups/s at random timestamps;
* a ``--events`` log (1M by default) where the topic ``rare/one`` holds 1%:
  reading that topic through the topic index, against the same read with the
  index disabled on that log instance (``LmdbLog.index_fraction = 0``, so every
  segment is scanned checking each record's topic bytes: same data, same call,
  same decoding; the scan is what any read without an index has to do); and a
  full replay of that log;
* append rate with 100 against 10,000 distinct topics (fsync ``always``,
  batch 1000);
* decoding alone (records already in memory, 1000 per call): the one-record
  ``decode_record`` in a loop against the batch ``decode_run`` the reads use;
* where the index stops paying: for a topic holding 1% to 50% of a
  ``--fraction-events`` log, the read through the index against the scan (this
  is how ``INDEX_FRACTION`` was chosen).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import random
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

import lmdb
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tidelog.storage import EventLog, NewEvent, open_log
from tidelog.storage.lmdb_log import LmdbLog
from tidelog.storage.records import Event, decode_record, decode_run, encode_record

U64 = struct.Struct(">Q").pack


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def fmt(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    return f"{value:.0f}"


def make_events(count: int, topics: int, payload: int, offset: int = 0) -> list[NewEvent]:
    body = b"x" * payload
    return [NewEvent(f"sensors/{(offset + i) % topics}/value", body) for i in range(count)]


# -- raw py-lmdb ---------------------------------------------------------------------------


def raw_records(count: int, payload: int) -> list[bytes]:
    return [
        encode_record(NewEvent(f"sensors/{i % 100}/value", b"x" * payload), 1_700_000_000_000)
        for i in range(count)
    ]


def raw_putmulti(path: Path, records: list[bytes]) -> float:
    """Raw putmulti(append=True), sync on, 1000-record transactions; events/s."""
    env = lmdb.open(str(path), map_size=4 * len(records) * 200 + (64 << 20), max_dbs=2)
    db = env.open_db(b"events")
    started = time.perf_counter()
    for first in range(0, len(records), 1000):
        chunk = records[first : first + 1000]
        with env.begin(write=True) as txn:
            keys = map(U64, range(first, first + len(chunk)))
            txn.cursor(db).putmulti(zip(keys, chunk, strict=True), append=True)
    result = rate(len(records), time.perf_counter() - started)
    env.close()
    return result


def raw_scan(path: Path) -> float:
    """A raw cursor scan (keys and values) of the database raw_putmulti wrote; events/s."""
    env = lmdb.open(str(path), max_dbs=2, readonly=True, lock=False)
    db = env.open_db(b"events", create=False)
    started = time.perf_counter()
    seen = 0
    with env.begin() as txn:
        for _key, _value in txn.cursor(db):
            seen += 1
    result = rate(seen, time.perf_counter() - started)
    env.close()
    return result


# -- tidelog -------------------------------------------------------------------------------


async def append_for(
    log: EventLog, batch: int, max_events: int, seconds: float, topics: int, payload: int
) -> float:
    """Append batches until ``max_events`` or ``seconds`` have passed; events/s."""
    batches = [make_events(batch, topics, payload, i * batch) for i in range(16)]
    done = number = 0
    started = time.perf_counter()
    deadline = started + seconds
    while done < max_events and time.perf_counter() < deadline:
        await log.append(batches[number % len(batches)])
        done += batch
        number += 1
    return rate(done, time.perf_counter() - started)


async def replay(log: EventLog, topic_filter: str | None = None) -> tuple[float, int, float]:
    """Read from the first offset to the end; (events/s, events, seconds)."""
    state = await log.state()
    position, seen = state.first_offset, 0
    started = time.perf_counter()
    while position < state.next_offset:
        result = await log.read(position, topic_filter, limit=1000)
        seen += len(result.events)
        position = result.next_offset
    seconds = time.perf_counter() - started
    return rate(seen, seconds), seen, seconds


async def best_replay(
    log: EventLog, repeat: int, topic_filter: str | None = None
) -> tuple[float, int, float]:
    runs = [await replay(log, topic_filter) for _ in range(repeat)]
    return max(runs)


async def lookups_per_second(log: EventLog, lookups: int, repeat: int) -> float:
    state = await log.state()
    assert state.first_timestamp is not None and state.last_timestamp is not None
    stamps = [
        random.randint(state.first_timestamp, state.last_timestamp + 1) for _ in range(lookups)
    ]
    best = 0.0
    for _ in range(repeat):
        started = time.perf_counter()
        for stamp in stamps:
            await log.offset_for_time(stamp)
        best = max(best, rate(lookups, time.perf_counter() - started))
    return best


async def bench_matrix(
    workdir: Path, args: argparse.Namespace
) -> tuple[list[list[str]], dict[str, float]]:
    rows: list[list[str]] = []
    results: dict[str, float] = {}
    for fsync in ("always", "never"):
        for batch in (1, 100, 1000):
            appended = replayed = lookups = 0.0
            count = 0
            for number in range(args.repeat):
                path = workdir / f"m-{fsync}-{batch}-{number}"
                async with open_log(f"lmdb://{path}", fsync=fsync) as log:
                    appended = max(
                        appended,
                        await append_for(
                            log, batch, args.append_events, args.seconds, 100, args.payload
                        ),
                    )
                    if number == args.repeat - 1:
                        replayed, count, _ = await best_replay(log, args.repeat)
                        lookups = await lookups_per_second(log, args.lookups, args.repeat)
                shutil.rmtree(path)
            results[f"append/{fsync}/{batch}"] = appended
            rows.append(
                [fsync, str(batch), fmt(appended), f"{fmt(replayed)} ({count} ev)", fmt(lookups)]
            )
            print(
                f"  fsync={fsync:6} batch={batch:4}: append {fmt(appended)}/s, replay "
                f"{fmt(replayed)}/s over {count}, offset_for_time {fmt(lookups)}/s",
                flush=True,
            )
    return rows, results


async def bench_headline_append(workdir: Path, args: argparse.Namespace) -> tuple[float, float]:
    """Raw putmulti and tidelog append (batch 1000, fsync always), interleaved; best of each."""
    records = raw_records(args.raw_events, args.payload)
    raw = tide = 0.0
    for number in range(args.repeat):
        path = workdir / f"raw-{number}"
        path.mkdir()
        raw = max(raw, raw_putmulti(path, records))
        shutil.rmtree(path)
        path = workdir / f"headline-{number}"
        async with open_log(f"lmdb://{path}", fsync="always") as log:
            tide = max(
                tide,
                await append_for(log, 1000, args.raw_events, 1e9, 100, args.payload),
            )
        shutil.rmtree(path)
    return raw, tide


async def build_topic_log(path: Path, events: int, payload: int) -> None:
    """``events`` events; ``rare/one`` holds every 100th (1%), 99 other topics the rest."""
    body = b"x" * payload
    async with open_log(f"lmdb://{path}", fsync="never") as log:
        for first in range(0, events, 1000):
            await log.append(
                [
                    NewEvent("rare/one" if n % 100 == 0 else f"common/{n % 99}", body)
                    for n in range(first, min(first + 1000, events))
                ]
            )


async def bench_topic_log(path: Path, repeat: int) -> tuple[float, float, int, float]:
    """``rare/one`` by index and by scan, and a full replay: (index s, scan s, events, ev/s)."""
    async with open_log(f"lmdb://{path}") as log:
        assert isinstance(log, LmdbLog)
        _, count, index_s = min(
            [await replay(log, "rare/one") for _ in range(repeat)], key=lambda r: r[2]
        )
        saved = log.index_fraction
        log.index_fraction = 0.0  # the same read, scanning every segment
        _, scanned, scan_s = min(
            [await replay(log, "rare/one") for _ in range(repeat)], key=lambda r: r[2]
        )
        log.index_fraction = saved
        assert scanned == count
        full, _, _ = await best_replay(log, repeat)
    return index_s, scan_s, count, full


async def bench_topics(workdir: Path, args: argparse.Namespace) -> tuple[float, float]:
    best = {100: 0.0, 10_000: 0.0}
    for number in range(args.repeat):
        for topics in best:
            path = workdir / f"topics-{topics}-{number}"
            async with open_log(f"lmdb://{path}", fsync="always") as log:
                best[topics] = max(
                    best[topics],
                    await append_for(
                        log, 1000, args.topic_events, args.seconds, topics, args.payload
                    ),
                )
            shutil.rmtree(path)
    return best[100], best[10_000]


def bench_decode(records: list[bytes], repeat: int) -> tuple[float, float]:
    """ns per event: decode_record in a loop, and decode_run, over 1000-record chunks."""
    chunks = [records[i : i + 1000] for i in range(0, len(records), 1000)]
    gc.disable()  # as during a read (see LmdbLog.read), for both
    try:
        return _bench_decode(chunks, len(records), repeat)
    finally:
        gc.enable()


def _bench_decode(chunks: list[list[bytes]], total: int, repeat: int) -> tuple[float, float]:
    one = run = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for number, chunk in enumerate(chunks):
            base = number * 1000
            [decode_record(base + i, record) for i, record in enumerate(chunk)]
        one = min(one, (time.perf_counter() - started) / total * 1e9)
        started = time.perf_counter()
        for number, chunk in enumerate(chunks):
            out: list[Event] = []
            decode_run(list(chunk), range(number * 1000, number * 1000 + len(chunk)), out, None, 0)
        run = min(run, (time.perf_counter() - started) / total * 1e9)
    return one, run


async def bench_fractions(workdir: Path, args: argparse.Namespace) -> list[list[str]]:
    rows = []
    rng = random.Random(args.seed)
    body = b"x" * args.payload
    for fraction in (0.01, 0.05, 0.1, 0.25, 0.5):
        path = workdir / f"fraction-{fraction}"
        async with open_log(f"lmdb://{path}", fsync="never") as log:
            assert isinstance(log, LmdbLog)
            for _ in range(0, args.fraction_events, 1000):
                await log.append(
                    [
                        NewEvent("hit" if rng.random() < fraction else "miss", body)
                        for _ in range(1000)
                    ]
                )
            seconds = {}
            for name, setting in (("index", 1.0), ("scan", 0.0)):
                log.index_fraction = setting
                runs = [await replay(log, "hit") for _ in range(args.repeat)]
                seconds[name] = min(run[2] for run in runs)
                count = runs[0][1]
        shutil.rmtree(path)
        rows.append(
            [
                f"{fraction:.0%}",
                str(count),
                f"{seconds['index'] * 1000:.1f}",
                f"{seconds['scan'] * 1000:.1f}",
                f"{seconds['index'] / seconds['scan']:.2f}",
            ]
        )
        print(
            f"  topic at {fraction:.0%}: index {seconds['index'] * 1000:.1f} ms, "
            f"scan {seconds['scan'] * 1000:.1f} ms",
            flush=True,
        )
    return rows


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


async def run(workdir: Path, args: argparse.Namespace) -> None:
    print(f"tidelog storage benchmark, {datetime.date.today()}, data in {workdir}")
    print(
        f"python {platform.python_version()}, lmdb {lmdb.__version__} "
        f"(liblmdb {'.'.join(map(str, lmdb.version()))}), {os.cpu_count()} cpus, "
        f"{platform.platform()}"
    )
    print(f"payload {args.payload} bytes, best of {args.repeat} runs\n", flush=True)

    raw_append, tide_append = await bench_headline_append(workdir, args)
    print(
        f"append, batch 1000, fsync always: raw putmulti {fmt(raw_append)}/s, "
        f"tidelog {fmt(tide_append)}/s",
        flush=True,
    )
    rows, _ = await bench_matrix(workdir, args)

    topic_path = workdir / "topic-log"
    started = time.perf_counter()
    await build_topic_log(topic_path, args.events, args.payload)
    built = time.perf_counter() - started
    index_s, scan_s, rare, full_replay = await bench_topic_log(topic_path, args.repeat)
    raw_path = workdir / "raw-scan"
    raw_path.mkdir()
    raw_putmulti(raw_path, raw_records(args.events, args.payload))
    scan = max(raw_scan(raw_path) for _ in range(args.repeat))
    shutil.rmtree(raw_path)
    print(
        f"topic log: {args.events} events written in {built:.1f}s; replay {fmt(full_replay)}/s "
        f"(raw scan {fmt(scan)}/s); rare/one ({rare} events) by index {index_s * 1000:.1f} ms, "
        f"by scan {scan_s * 1000:.1f} ms",
        flush=True,
    )

    one, run_ns = bench_decode(raw_records(args.raw_events, args.payload), args.repeat)
    print(f"decode: decode_record {one:.0f} ns/event, decode_run {run_ns:.0f} ns/event", flush=True)
    few, many = await bench_topics(workdir, args)
    print(f"topics: 100 -> {fmt(few)}/s, 10k -> {fmt(many)}/s", flush=True)
    fractions = await bench_fractions(workdir, args)

    print()
    print(table(["fsync", "batch", "append ev/s", "replay ev/s", "offset_for_time /s"], rows))
    print()
    summary = [
        ["raw putmulti (sync, 1000/txn)", f"{fmt(raw_append)} ev/s", ""],
        [
            "append, batch 1000, fsync always",
            f"{fmt(tide_append)} ev/s",
            f"{tide_append / raw_append:.2f}x raw putmulti (target >= 0.5x)",
        ],
        [f"raw cursor scan, {args.events} records", f"{fmt(scan)} ev/s", ""],
        [
            f"replay, {args.events} events",
            f"{fmt(full_replay)} ev/s",
            f"{full_replay / scan:.2f}x raw scan (target >= 1M ev/s)",
        ],
        [
            f"1% topic ({rare} events): index vs scan",
            f"{index_s * 1000:.1f} ms vs {scan_s * 1000:.1f} ms",
            f"{scan_s / index_s:.1f}x faster (target >= 20x)",
        ],
        [
            "decode only: decode_record loop vs decode_run",
            f"{one:.0f} vs {run_ns:.0f} ns/event",
            f"{one / run_ns:.2f}x faster",
        ],
        [
            "append with 100 vs 10k topics",
            f"{fmt(few)} vs {fmt(many)} ev/s",
            f"{max(few, many) / min(few, many):.2f}x apart (target <= 1.5x)",
        ],
    ]
    print(table(["measure", "result", "ratio"], summary))
    print()
    print(f"Index against scan by the share of a {args.fraction_events}-event log a topic holds:")
    print()
    print(table(["topic share", "events", "index ms", "scan ms", "index / scan"], fractions))


async def main(args: argparse.Namespace) -> None:
    base = Path(args.dir)
    base.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="tidelog-bench-", dir=base))
    try:
        await run(workdir, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="tidelog storage benchmark")
    parser.add_argument("--quick", action="store_true", help="a small smoke run (seconds)")
    parser.add_argument("--dir", default="/tmp", help="parent of the temporary data directory")
    parser.add_argument("--payload", type=int, default=100, help="payload bytes per event")
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the topic log")
    parser.add_argument("--raw-events", type=int, default=200_000, help="events per headline run")
    parser.add_argument("--append-events", type=int, default=200_000, help="max per append run")
    parser.add_argument("--topic-events", type=int, default=200_000, help="per 100/10k run")
    parser.add_argument("--seconds", type=float, default=3.0, help="max seconds per append run")
    parser.add_argument("--lookups", type=int, default=20_000, help="offset_for_time lookups")
    parser.add_argument("--fraction-events", type=int, default=200_000, help="per share log")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (best kept)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.raw_events = 50_000, 20_000
        args.append_events, args.topic_events = 10_000, 10_000
        args.seconds, args.lookups, args.repeat = 0.3, 1000, 1
        args.fraction_events = 10_000
    random.seed(args.seed)
    return args


if __name__ == "__main__":
    trio.run(main, parse_args())
