"""Per-stage breakdown of a broker profile: where the time goes per MQTT message.

    py-spy record --gil -f raw -r 1000 -p <broker pid> -o prof.raw   # while a scenario runs
    python -m bench.investigations.profile_stages prof.raw --messages 5000 [--cpu-us 510]

Reads py-spy's raw (collapsed) output: one line per distinct stack, frames
separated by ``;``, then the sample count. Each sample goes to the first stage
whose frame names appear on its stack (the order of :data:`STAGES` matters:
the LMDB commit in the writer thread before the storage append that waits for
it, the PUBACK callback before the group commit that calls it). Prints each
stage's share of the samples and, with ``--cpu-us`` (the broker CPU per
message the load generator measured in the same run), its share in
microseconds per message. Used for "Where the time goes" in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import collections
import sys

STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("LMDB put + commit (writer thread or inline)", ("_work", "Segment.write_batch")),
    (
        "thread hand-off (to_thread, nursery, entry queue, mailbox)",
        (
            "to_thread_run_sync",
            "_commit_overlapped.<locals>.write",
            "EntryQueue.task",
            "Mailbox",
            "WriterThread.submit",
            "open_nursery",
            "NurseryManager",
        ),
    ),
    ("PUBACK callback (_on_durable)", ("MQTTConnection._on_durable", "MQTTSession.durable")),
    (
        "fan-out + delivery (dispatch, pump, emit)",
        ("Broker._on_commit", "Sender._pump", "Planner.emit", "Feed."),
    ),
    ("encode records, build stored events (LmdbLog.append)", ("LmdbLog.append",)),
    ("group commit bookkeeping", ("GroupCommitWriter",)),
    ("socket send (write loop)", ("Sender._write_loop",)),
    ("decode (Decoder.feed)", ("Decoder.feed",)),
    ("PUBLISH handling (_handle: session.receive, submit)", ("MQTTConnection._handle",)),
    ("socket receive (read loop)", ("MQTTConnection._read_loop",)),
    ("trio scheduler + epoll", ("unrolled_run", "EpollIOManager")),
)


def breakdown(lines: list[str]) -> tuple[int, dict[str, int]]:
    """Total samples and samples per stage (``other`` for the rest)."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in lines:
        stack, _, number = line.rstrip().rpartition(" ")
        if not stack:
            continue
        samples = int(number)
        total += samples
        for stage, frames in STAGES:
            if any(frame in stack for frame in frames):
                counts[stage] += samples
                break
        else:
            counts["other"] += samples
    return total, counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("profile", help="py-spy raw output (-f raw)")
    parser.add_argument("--messages", type=int, required=True, help="messages in the run")
    parser.add_argument("--cpu-us", type=float, help="measured broker CPU us per message")
    args = parser.parse_args(argv)
    with open(args.profile) as file:
        total, counts = breakdown(file.readlines())
    if not total:
        print("no samples", file=sys.stderr)
        return 1
    print(f"{total} samples, {args.messages} messages")
    for stage in [name for name, _ in STAGES] + ["other"]:
        share = counts[stage] / total
        scaled = f"{share * args.cpu_us:7.1f} us" if args.cpu_us else ""
        print(f"  {share * 100:5.1f}%  {scaled}  {stage}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
