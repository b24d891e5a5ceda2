"""The three history figures of issue 19 in one run, each beside its raw py-lmdb peer.

    python -m bench.history                        # 200k events, 3 repeats
    python -m bench.history --events 1000000 --repeat 5

* append: ``EventLog.append`` in batches of 1,000 with ``fsync=always``
  against raw ``putmulti(append=True)`` of the same pre-encoded records in
  1,000-record transactions with LMDB's default durability (a synced commit
  each), interleaved, best of ``--repeat`` (``bench.storage``'s headline);
* replay: ``Broker.replay``, ``Broker.read`` and ``EventLog.read`` over a
  log written by ``publish_many`` (fsync always), against a raw py-lmdb
  cursor scan of the same segments, medians (``bench.tidelog_only``'s replay).

Persistent-session catch-up runs over MQTT in ``python -m bench.tidelog_only
--only catch-up``. Speed is reported, never asserted.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import trio

from bench.storage import bench_headline_append
from bench.tidelog_only import format_table, measure_replay, ratios


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.history", description=__doc__)
    parser.add_argument("--events", type=int, default=200_000, help="events per log")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure")
    parser.add_argument("--payload", type=int, default=100, help="append payload bytes")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="tidelog-history-"))
    try:
        options = argparse.Namespace(
            raw_events=args.events, payload=args.payload, repeat=args.repeat
        )
        raw, tide = trio.run(bench_headline_append, workdir, options)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"append, batches of 1000, fsync always: {tide:,.0f} ev/s; raw putmulti (synced "
        f"commits of 1000) {raw:,.0f} ev/s: {tide / raw:.2f}x (target >= 0.8x)",
        flush=True,
    )
    measurements = measure_replay(args.events, args.repeat, lambda line: print(line, flush=True))
    print(format_table(measurements))
    for line in ratios(measurements):
        print(line)


if __name__ == "__main__":
    main()
