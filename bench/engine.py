"""Engine benchmark: durable publish, fan-out and catch-up, in process (no sockets).

    python bench/engine.py            # full run, LMDB in a temp dir, fsync always
    python bench/engine.py --quick    # a few seconds, for CI smoke runs
    python bench/engine.py --storage memory://

Every figure is printed beside its peer measured in the same run (the storage
layer's own append rate for publishing), because absolute numbers on a shared
machine drift.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import tidelog
from tidelog import NewEvent
from tidelog.engine.broker import Broker
from tidelog.storage import ReadResult, open_log

PAYLOAD = b"x" * 100


def make_url(storage: str, tmp: str, name: str) -> str:
    if storage == "lmdb":
        return f"lmdb://{tmp}/{name}"
    if storage == "sqlite":
        return f"sqlite://{tmp}/{name}.db"
    return storage


async def storage_append(url: str, total: int, batch: int) -> float:
    """events/s appending directly to the log, one batch per call."""
    events = [NewEvent(f"t/{i % 100}", PAYLOAD) for i in range(batch)]
    async with open_log(url) as log:
        started = time.perf_counter()
        for _ in range(total // batch):
            await log.append(events)
        return total / (time.perf_counter() - started)


async def broker_publish(url: str, total: int, publishers: int, batch: int) -> tuple[float, float]:
    """events/s through the broker: ``publishers`` tasks calling publish_many(batch)."""
    events = [NewEvent(f"t/{i % 100}", PAYLOAD) for i in range(batch)]
    per_publisher = total // publishers // batch
    async with tidelog.open(url) as broker:
        started = time.perf_counter()

        async def publisher() -> None:
            for _ in range(per_publisher):
                await broker.publish_many(events)

        async with trio.open_nursery() as nursery:
            for _ in range(publishers):
                nursery.start_soon(publisher)
        elapsed = time.perf_counter() - started
        stats = broker.statistics().writer
        return per_publisher * publishers * batch / elapsed, stats.events / max(1, stats.batches)


async def fanout(url: str, total: int, subscribers: int, topics: int) -> float:
    """deliveries/s: publish ``total`` events over ``topics`` topics to ``subscribers``
    subscribers of '#', each draining its feed concurrently."""
    batch = 1000
    async with tidelog.open(url, feed_max_events=50_000) as broker:
        finished = [0]
        all_done = trio.Event()

        async def subscriber(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            async with broker.subscribe("bench/#") as events:
                task_status.started()
                received = 0
                while received < total:
                    received += len(await events.receive_batch(10_000))
            finished[0] += 1
            if finished[0] == subscribers:
                all_done.set()

        async with trio.open_nursery() as nursery:
            for _ in range(subscribers):
                await nursery.start(subscriber)
            started = time.perf_counter()
            for start in range(0, total, batch):
                broker.publish_nowait(
                    [NewEvent(f"bench/{(start + i) % topics}", PAYLOAD) for i in range(batch)],
                    lambda result: None,
                )
                await broker.wait_writable()
                await trio.sleep(0)
            await all_done.wait()
            elapsed = time.perf_counter() - started
        return total * subscribers / elapsed


async def catch_up(url: str, total: int) -> float:
    """events/s a subscriber starting at 'earliest' reads history then goes live."""
    async with tidelog.open(url) as broker:
        events = [NewEvent(f"h/{i % 100}", PAYLOAD) for i in range(1000)]
        for _ in range(total // 1000):
            await broker.publish_many(events)
        started = time.perf_counter()
        count = 0
        async with broker.subscribe("h/#", start="earliest") as sub:
            while count < total:
                count += len(await sub.receive_batch(10_000))
            elapsed = time.perf_counter() - started
            assert sub.feed.live
        return count / elapsed


def read_ways(broker: Broker, prefix: str) -> dict[str, Callable[[], Awaitable[int]]]:
    """Every way of reading a broker's whole log; each returns the events it got.

    The log is fresh (starts at offset 0) and its events are on the topics
    ``<prefix>/0`` .. ``<prefix>/99``: ``log.read`` and ``Broker.read`` pages of
    1000 (the storage layer, the engine), ``Broker.replay`` (the engine's async
    iterator), and feed catch-up from ``earliest`` (``receive_batch(10_000)``
    until it has every event) for ``<prefix>/#`` (all) and ``<prefix>/7`` (1%,
    through the topic index). Shared by this bench, bench/investigations/read_instructions.py
    and bench/tidelog_only.py, so they measure the same reads.
    """
    end = broker.end_offset

    async def pages(read: Callable[..., Awaitable[ReadResult]]) -> int:
        position = count = 0
        while position < end:
            result = await read(position, limit=1000)
            count += len(result.events)
            position = result.next_offset
        return count

    async def replay() -> int:
        count = 0
        async for _ in broker.replay(None, start="earliest"):
            count += 1
        return count

    async def catch_up(topic_filter: str, expected: int) -> int:
        count = 0
        async with broker.subscribe(topic_filter, start="earliest") as sub:
            while count < expected:
                count += len(await sub.receive_batch(10_000))
            # the last event of the log was read: the feed is live again
            assert sub.feed.live or expected < end
        return count

    return {
        "log.read": lambda: pages(broker.log.read),
        "Broker.read": lambda: pages(broker.read),
        "Broker.replay": replay,
        f"catch-up {prefix}/#": lambda: catch_up(f"{prefix}/#", end),
        f"catch-up {prefix}/7": lambda: catch_up(f"{prefix}/7", end // 100),
    }


async def history(url: str, total: int, runs: int) -> dict[str, tuple[float, float]]:
    """Reading a ``total``-event log (100 topics) through the engine.

    Returns, per way of reading, the median events/s (wall clock) and the median
    process CPU microseconds per event (steadier than the rate on a shared
    machine: other processes' load stretches the wall clock, not our CPU time).

    The same log, in the same process, read ``runs`` times each of the
    :func:`read_ways`, interleaved; ``log.read`` (the storage layer) is the peer.
    """
    rates: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    async with tidelog.open(url) as broker:
        batch = [NewEvent(f"h/{i % 100}", PAYLOAD) for i in range(1000)]
        for _ in range(total // 1000):
            await broker.publish_many(batch)
        ways = read_ways(broker, "h")
        for _ in range(runs):
            for name, way in ways.items():
                started, cpu_started = time.perf_counter(), time.process_time()
                count = await way()
                rates.setdefault(name, []).append(count / (time.perf_counter() - started))
                cpu.setdefault(name, []).append((time.process_time() - cpu_started) / count * 1e6)
    return {name: (_median(rates[name]), _median(cpu[name])) for name in rates}


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def median_run(runs: int, url: Callable[[], str], bench: Callable[..., Any], *args: Any) -> Any:
    """Run ``bench(fresh url, *args)`` ``runs`` times; the run with the median first value."""
    results = sorted(
        (trio.run(bench, url(), *args) for _ in range(runs)),
        key=lambda r: r[0] if isinstance(r, tuple) else r,
    )
    return results[len(results) // 2]


def publish_and_fan_out(runs: int, n: int, url: Callable[[], str]) -> None:
    """The publish, fan-out and replay-then-live measurements (fresh log each run)."""
    raw = median_run(runs, url, storage_append, n, 1000)
    print(f"storage append, batch 1000:            {raw:>12,.0f} events/s")
    for publishers, batch in [(1, 1000), (10, 100), (100, 10)]:
        rate, avg_batch = median_run(runs, url, broker_publish, n, publishers, batch)
        print(
            f"broker publish {publishers:>3} x publish_many({batch:>4}): "
            f"{rate:>12,.0f} events/s  ({rate / raw:.2f}x storage; "
            f"avg commit {avg_batch:,.0f} events)"
        )
    for subscribers in (1, 10, 100):
        for topics in (1, 100, 10_000):
            total = max(2000, n // subscribers)
            rate = median_run(runs, url, fanout, total, subscribers, topics)
            print(
                f"fan-out {subscribers:>3} subscribers, {topics:>6} topics:   "
                f"{rate:>12,.0f} deliveries/s"
            )
    rate = median_run(runs, url, catch_up, n)
    print(f"replay-then-live catch-up:             {rate:>12,.0f} events/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default="lmdb", help="lmdb, sqlite or a URL (memory://)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run")
    parser.add_argument("--runs", type=int, default=3, help="repetitions (median reported)")
    parser.add_argument(
        "--history-events", type=int, default=1_000_000, help="events of the read/replay log"
    )
    parser.add_argument(
        "--history-only", action="store_true", help="only the read/replay/catch-up section"
    )
    args = parser.parse_args()
    scale = 0.02 if args.quick else 1.0
    runs = 1 if args.quick else args.runs
    n = max(10_000, int(500_000 * scale))
    print(f"engine benchmark: storage={args.storage}, fsync=always, {n} events, median of {runs}")
    with tempfile.TemporaryDirectory(prefix="tidelog-bench-") as tmp:
        counter = iter(range(10_000))

        def url() -> str:
            return make_url(args.storage, tmp, f"run{next(counter)}")

        if not args.history_only:
            publish_and_fan_out(runs, n, url)
        history_events = max(10_000, int(args.history_events * scale))
        print(f"reading a {history_events}-event log (100 topics), median of {runs}:")
        rates = trio.run(history, url(), history_events, runs)
        peer, peer_cpu = rates["log.read"]
        for name, (value, cpu) in rates.items():
            print(
                f"  {name:<25} {value:>12,.0f} events/s  ({value / peer:.2f}x log.read)"
                f"  CPU {cpu:.2f} us/event ({1e6 / cpu:>9,.0f} events/CPU-s,"
                f" {peer_cpu / cpu:.2f}x log.read)"
            )


if __name__ == "__main__":
    main()
