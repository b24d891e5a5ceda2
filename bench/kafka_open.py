"""How long a node takes to open a long ``kafka://`` log: block index from checkpoints
against the index rebuilt by reading the whole partition.

Usage (from the repository root; Kafka's jars come from ``scripts/kafka/fetch.sh``)::

    python -m bench.kafka_open                 # 600,000 events of 100 bytes, 50 topics
    python -m bench.kafka_open --events 300000

One single-broker KRaft Kafka is started for the run. The log is filled once;
then it is opened alternately with checkpoints (the default
``index_checkpoint_events``) and with ``index_checkpoint_events=0`` (the tail
reads the partition from its start), twice each, in the same run.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import trio

from tests.kafka_broker import KafkaCluster
from tidelog.storage import LogOptions, NewEvent, open_log


async def measure(kafka: KafkaCluster, events: int) -> None:
    url = kafka.url(f"open-{uuid.uuid4().hex[:8]}")
    span = LogOptions().index_checkpoint_events
    async with open_log(url) as log:
        for _ in range(0, events, 1000):
            await log.append([NewEvent(f"t/{n % 50}", b"x" * 100) for n in range(1000)])
        with trio.fail_after(60):  # checkpoints are stored in the background
            while len(await log.list_state("kafka.index")) < events // span:
                await trio.sleep(0.1)
    for _ in range(2):
        for name, option in (("checkpoints", ""), ("rebuilt", "?index_checkpoint_events=0")):
            started = time.perf_counter()
            async with open_log(url + option) as log:
                opened = time.perf_counter() - started
                count = (await log.state()).next_offset
            print(f"  {name:<12} {count:,} events: open {opened:.2f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=600_000)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="tidelog-bench-open-"))
    kafka = KafkaCluster(directory, 1, heap_mb=768).start()
    try:
        trio.run(measure, kafka, args.events)
    finally:
        kafka.stop()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
