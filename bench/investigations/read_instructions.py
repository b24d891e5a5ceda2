"""Instructions per event of the engine's read paths, counted by callgrind.

Wall-clock rates on a shared machine swing by 2x with other people's load;
instruction counts do not. This builds (once) a log of ``--events`` events on
100 topics with 100-byte payloads, runs every read path once to warm up, then
runs each once more with a call to ``os.getppid`` before and after it, so
callgrind can cut the profile there::

    python -m bench.investigations.read_instructions --build /tmp/ri-log  # no valgrind
    valgrind --tool=callgrind --dump-before=os_getppid --callgrind-out-file=/tmp/ri.out \\
        python -m bench.investigations.read_instructions /tmp/ri-log
    python -m bench.investigations.read_instructions /tmp/ri-log --report /tmp/ri.out

Part N+1 of the profile (``/tmp/ri.out.2``, ``.3``, ...) is the N-th way of
reading; ``--report`` divides each part's total by the events it delivered.
Ways: ``log.read`` pages of 1000, ``Broker.read`` pages of 1000,
``Broker.replay``, and feed catch-up (``receive_batch(10_000)``) for ``h/#``
(every event) and ``h/7`` (1% of them, through the topic index).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

import tidelog
from bench.engine import read_ways
from tidelog.storage import NewEvent, open_log

WAYS = ["log.read", "Broker.read", "Broker.replay", "catch-up h/#", "catch-up h/7"]


async def build(path: str, events: int) -> None:
    async with open_log(f"lmdb://{path}?fsync=never") as log:
        batch = [NewEvent(f"h/{i % 100}", b"x" * 100) for i in range(1000)]
        for _ in range(events // 1000):
            await log.append(batch)


async def measure(path: str) -> None:
    async with tidelog.open(f"lmdb://{path}?fsync=never") as broker:
        counts = [await read_ways(broker, "h")[name]() for name in WAYS]  # warm up
        for name in WAYS:
            os.getppid()  # callgrind --dump-before=os_getppid cuts the profile here
            await read_ways(broker, "h")[name]()
        os.getppid()
    Path(f"{path}.counts").write_text(" ".join(map(str, counts)))


def report(out: str, path: str) -> None:
    counts = [int(c) for c in Path(f"{path}.counts").read_text().split()]
    for part, (name, count) in enumerate(zip(WAYS, counts, strict=True), start=2):
        totals = [
            line.split()[1]
            for line in Path(f"{out}.{part}").read_text().splitlines()
            if line.startswith(("summary:", "totals:"))
        ]
        print(f"{name:<15} {int(totals[0]) / count:>8,.0f} instructions/event ({count} events)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", help="the log directory")
    parser.add_argument("--build", action="store_true", help="create the log")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--report", metavar="OUT", help="print the callgrind profile OUT.N")
    args = parser.parse_args()
    if args.build:
        trio.run(build, args.log, args.events)
    elif args.report:
        report(args.report, args.log)
    else:
        trio.run(measure, args.log)


if __name__ == "__main__":
    main()
