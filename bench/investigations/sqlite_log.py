"""Quick benchmark of the SQLite backend: append, replay, time lookup, topic reads.

    python -m bench.investigations.sqlite_log [--events N] [--batch N] [--fsync POLICY]
                                            [--topics N] [--dir DIR]

Appends ``--events`` events (100-byte payloads, spread round-robin over
``--topics`` topics, plus one rare topic holding 1% of the log) in batches of
``--batch`` under the given fsync policy, then replays the whole log (decoded
events), times ``offset_for_time`` lookups, and reads the rare topic by its
index against a filtered scan that has to examine every offset. The log is a
fresh file in ``--dir`` (a temporary directory by default; use a real disk).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import trio

from tidelog.storage import EventLog, NewEvent, open_log


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:>12,.0f}/s"


async def replay(log: EventLog, topic_filter: str | None) -> int:
    position, seen = 0, 0
    end = (await log.state()).next_offset
    while position < end:
        result = await log.read(position, topic_filter, limit=1000, max_bytes=None)
        seen += len(result)
        position = result.next_offset
    return seen


async def run(args: argparse.Namespace, directory: Path) -> None:
    url = f"sqlite://{directory}/bench.db?fsync={args.fsync}"
    topics = [f"sensors/{n}/temperature" for n in range(args.topics)]
    payload = b"x" * 100
    async with open_log(url) as log:
        started = time.perf_counter()
        appended = 0
        while appended < args.events:
            batch = [
                NewEvent(
                    "rare/topic" if (appended + i) % 100 == 0 else topics[i % len(topics)], payload
                )
                for i in range(args.batch)
            ]
            stored = await log.append(batch)
            appended += len(stored)
        elapsed = time.perf_counter() - started
        state = await log.state()
        print(f"sqlite, fsync {args.fsync}, batch {args.batch}, {args.topics} topics")
        print(
            f"append             {rate(appended, elapsed)}  ({appended:,} events, {elapsed:.2f} s)"
        )

        started = time.perf_counter()
        seen = await replay(log, None)
        print(f"replay (decoded)   {rate(seen, time.perf_counter() - started)}")

        stamps = [
            random.randint(state.first_timestamp or 0, state.last_timestamp or 0)
            for _ in range(2000)
        ]
        started = time.perf_counter()
        for stamp in stamps:
            await log.offset_for_time(stamp)
        print(f"offset_for_time    {rate(len(stamps), time.perf_counter() - started)}")

        started = time.perf_counter()
        rare = await replay(log, "rare/topic")
        indexed = time.perf_counter() - started
        # Against: replay everything and filter here (a log without a topic index).
        started = time.perf_counter()
        position, scanned_rare = 0, 0
        while position < state.next_offset:
            result = await log.read(position, limit=1000, max_bytes=None)
            scanned_rare += sum(1 for event in result if event.topic == "rare/topic")
            position = result.next_offset
        scan = time.perf_counter() - started
        assert scanned_rare == rare
        print(
            f"1% topic read      {indexed * 1000:10.1f} ms indexed, {scan * 1000:.1f} ms scanned "
            f"({scan / indexed:.0f}x), {rare:,} events"
        )
        size = sum(p.stat().st_size for p in directory.glob("bench.db*"))
        print(f"file               {size / state.bytes:10.2f}x the record bytes ({state.bytes:,})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--fsync", default="always")
    parser.add_argument("--topics", type=int, default=100)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    if args.dir is not None:
        trio.run(run, args, args.dir)
        return
    with tempfile.TemporaryDirectory(prefix="tidelog-bench-") as directory:
        trio.run(run, args, Path(directory))


if __name__ == "__main__":
    main()
