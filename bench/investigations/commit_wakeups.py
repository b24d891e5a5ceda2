"""Where a light-load hop's CPU goes: per thread, per wake-up, per durable commit.

    python -m bench.investigations.commit_wakeups            # all three steps
    python -m bench.investigations.commit_wakeups --only pair

Three steps, each printing CPU time and wake-ups from ``/proc`` (run time from
``schedstat``, its kernel part from ``stat``, sleeps from the voluntary context
switches, preemptions from the involuntary ones):

1. ``wake``: what one wake-up costs with nothing to do: a trio loop sleeping
   until the next 10 ms tick, against ``time.sleep`` in a plain loop. The
   difference is the loop's own code run with cold caches.
2. ``commit``: one synced LMDB commit of ten small records every 10 ms in a
   plain single-threaded loop (what ``Segment.write_batch`` does under
   ``fsync=always``, without the thread hand-off), per commit.
3. ``pair``: two ``tidelog serve`` joined by a link at 1,000 QoS 1 msg/s in
   bursts of ten (``bench.mesh``'s latency step), per message and per thread of
   each node: the trio thread and the log's writer thread.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
import time
from pathlib import Path

import trio

TICK_US = 1e6 / os.sysconf("SC_CLK_TCK")

Counters = tuple[int, int, int, int, int]
"""Run ns, user ticks, system ticks, voluntary and involuntary context switches."""


def _counters(task: Path) -> Counters:
    ran = int((task / "schedstat").read_text().split()[0])
    stat = (task / "stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    status = (task / "status").read_text()
    voluntary = int(status.split("\nvoluntary_ctxt_switches:")[1].split()[0])
    involuntary = int(status.split("nonvoluntary_ctxt_switches:")[1].split()[0])
    return ran, int(fields[11]), int(fields[12]), voluntary, involuntary


def _delta(after: Counters, before: Counters, per: int) -> str:
    ran, user, system, voluntary, involuntary = (a - b for a, b in zip(after, before, strict=True))
    return (
        f"CPU {ran / per / 1000:6.1f} µs (user {user * TICK_US / per:5.1f}, kernel "
        f"{system * TICK_US / per:5.1f}), sleeps {voluntary / per:4.2f}, "
        f"preempted {involuntary / per:4.2f}"
    )


def wake(ticks: int = 300, interval: float = 0.01) -> None:
    """Step 1: CPU per wake-up of an idle trio loop and of ``time.sleep``."""
    me = Path("/proc/thread-self")

    async def loop() -> None:
        start = trio.current_time()
        for i in range(ticks):
            await trio.sleep_until(start + interval * (i + 1))

    before = _counters(me)
    trio.run(loop)
    spent = _delta(_counters(me), before, ticks)
    print(f"trio loop woken every {interval * 1000:g} ms: per wake-up {spent}")
    before = _counters(me)
    for _ in range(ticks):
        time.sleep(interval)
    spent = _delta(_counters(me), before, ticks)
    print(f"time.sleep({interval:g}) loop:          per wake-up {spent}")


def commit(commits: int = 300, records: int = 10) -> None:
    """Step 2: synced LMDB commits of ``records`` small records in a plain loop."""
    import lmdb

    key = struct.Struct(">Q")
    me = Path("/proc/thread-self")
    with tempfile.TemporaryDirectory(prefix="commit-wakeups-") as tmp:
        env = lmdb.open(tmp, map_size=1 << 28, max_dbs=2, sync=True, metasync=True)
        events = env.open_db(b"events")
        times = env.open_db(b"times")
        offset = 0

        def write() -> None:
            nonlocal offset
            with env.begin(write=True) as txn:
                txn.cursor(events).putmulti(
                    [(key.pack(offset + i), b"x" * 100) for i in range(records)], append=True
                )
                txn.put(key.pack(offset), b"", append=True, db=times)
            offset += records

        for _ in range(20):
            write()
        before, spent = _counters(me), []
        for _ in range(commits):
            started = time.perf_counter()
            write()
            spent.append(time.perf_counter() - started)
            time.sleep(0.01)
        after = _counters(me)
        env.close()
    spent.sort()
    print(
        f"synced LMDB commit of {records} records, plain loop: per commit "
        f"{_delta(after, before, commits)} (one of the sleeps is the loop's 10 ms pause; "
        f"user and kernel in clock ticks, coarse); commit p50 {spent[commits // 2] * 1000:.2f} "
        f"ms, p99 {spent[int(commits * 0.99)] * 1000:.2f} ms"
    )


def _threads(pid: int) -> dict[str, Counters]:
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip()
            name = "trio thread" if task.name == str(pid) else f"{comm} {task.name}"
            out[name] = _counters(task)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


async def _pair(seconds: float) -> None:
    from bench.mesh import _latency, _line_nodes

    with tempfile.TemporaryDirectory(prefix="commit-wakeups-") as tmp:
        async with _line_nodes(Path(tmp), "pair", 1) as nodes:
            names = {"origin": nodes[0].pid, "receiver": nodes[1].pid}
            before = {name: _threads(pid) for name, pid in names.items()}
            result = await _latency(nodes[0].mqtt, nodes[1].mqtt, 1000, seconds)
            after = {name: _threads(pid) for name, pid in names.items()}
    messages = int(1000 * seconds)
    print(
        f"pair at 1,000 msg/s in bursts of ten, {messages} messages: added by the hop, per "
        f"message, p50 {result['each_hop_p50_ms']:.1f} ms, p99 {result['each_hop_p99_ms']:.1f} ms"
    )
    for name in names:
        for thread, counters in sorted(after[name].items()):
            start = before[name].get(thread, (0, 0, 0, 0, 0))  # the writer starts late
            if counters[0] > start[0]:
                print(f"  {name:8s} {thread:18s} per message: {_delta(counters, start, messages)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("wake", "commit", "pair"))
    parser.add_argument("--seconds", type=float, default=8.0, help="the pair step's length")
    args = parser.parse_args(argv)
    if args.only in (None, "wake"):
        wake()
    if args.only in (None, "commit"):
        commit()
    if args.only in (None, "pair"):
        trio.run(_pair, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
