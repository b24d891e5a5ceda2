"""``kafka://`` benchmark: tidelog's Kafka log beside Kafka's own producer and ``lmdb://``.

Usage (from the repository root; Kafka's jars come from ``scripts/kafka/fetch.sh``)::

    python bench/kafka_log.py              # 100,000 events of 100 bytes
    python bench/kafka_log.py --events 20000

One single-broker KRaft Kafka is started for the run (tests/kafka_broker.py).
In the same run, interleaved, best of ``--repeat``:

* ``kafka-producer-perf-test`` (``org.apache.kafka.tools.ProducerPerformance``)
  with ``acks=all`` and records the size of tidelog's (value: the encoded
  tidelog record; key: the topic) against the same broker: the log's own ceiling;
* ``log.append`` on ``kafka://`` in batches of 1000 and 100 events (what the
  group-commit writer hands over under load), each batch returned only once Kafka
  acknowledged it (``acks=all``) and this node's tail has read it;
* the same on ``lmdb://`` (``fsync=always``) in a temporary directory;
* a filtered read of a rare topic (1 in 10,000 events) on ``kafka://`` with a 1 MiB
  cache (so records come from Kafka): through the block index, against the scan
  the index saves (every record fetched and its topic checked: the same data, the
  same call with no filter, filtered in Python).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import trio

from tests.kafka_broker import KafkaCluster, _java, ensure_jars
from tidelog.storage import NewEvent, open_log
from tidelog.storage.records import encode_record

TOPIC = "bench/t"


def _new_topic(kafka: KafkaCluster, prefix: str) -> str:
    """A fresh one-partition topic (replication 1) for one of Kafka's own tools."""
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        [
            _java(),
            "-cp",
            f"{ensure_jars()}/*",
            "org.apache.kafka.tools.TopicCommand",
            "--bootstrap-server",
            kafka.bootstrap,
            "--create",
            "--topic",
            topic,
            "--partitions",
            "1",
            "--replication-factor",
            "1",
        ],
        check=True,
        capture_output=True,
    )
    return topic


def end_to_end_latency(kafka: KafkaCluster, messages: int, record_size: int) -> tuple[int, int]:
    """Kafka's own ``kafka-e2e-latency`` (``EndToEndLatency``), acks=all: p50 and p99
    in whole milliseconds from a send to its consumer receiving it, one message at a
    time (the next is sent when the last arrived)."""
    topic = _new_topic(kafka, "e2e")
    result = subprocess.run(
        [
            _java(),
            "-Xmx512m",
            "-cp",
            f"{ensure_jars()}/*",
            "org.apache.kafka.tools.EndToEndLatency",
            *(kafka.bootstrap, topic, str(messages), "all", str(record_size)),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    match = re.search(r"50th = (\d+), 99th = (\d+)", result.stdout)
    assert match, result.stdout
    return int(match.group(1)), int(match.group(2))


def producer_perf_test(kafka: KafkaCluster, events: int, record_size: int) -> float:
    """Kafka's own producer test, acks=all: records/s."""
    topic = _new_topic(kafka, "perf")
    result = subprocess.run(
        [
            _java(),
            "-Xmx512m",
            "-cp",
            f"{ensure_jars()}/*",
            "org.apache.kafka.tools.ProducerPerformance",
            "--topic",
            topic,
            "--num-records",
            str(events),
            "--record-size",
            str(record_size),
            "--throughput",
            "-1",
            "--producer-props",
            f"bootstrap.servers={kafka.bootstrap}",
            "acks=all",
            "enable.idempotence=true",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    last = result.stdout.strip().splitlines()[-1]
    match = re.search(r"([\d.]+) records/sec", last)
    assert match, result.stdout
    return float(match.group(1))


async def append_rate(url: str, events: int, batch: int, payload: bytes) -> float:
    async with open_log(url) as log:
        started = time.perf_counter()
        for _ in range(events // batch):
            await log.append([NewEvent(TOPIC, payload, qos=1) for _ in range(batch)])
        return events / (time.perf_counter() - started)


async def rare_reads(url: str, events: int) -> tuple[float, float]:
    """Seconds to read every ``rare`` event: through the index, and by a scan."""
    async with open_log(url, cache_bytes=1024 * 1024) as log:
        for start in range(0, events, 1000):
            batch = [NewEvent("common", b"x" * 100) for _ in range(1000)]
            if start % 10_000 == 5000:
                batch[500] = NewEvent("rare", b"%d" % start)
            await log.append(batch)
        end = (await log.state()).next_offset

        async def read(topic_filter: str | None) -> int:
            found = 0
            position = 0
            while position < end:
                page = await log.read(position, topic_filter, limit=1000, max_bytes=None)
                found += sum(1 for e in page.events if e.topic == "rare")
                position = page.next_offset
            return found

        started = time.perf_counter()
        indexed = await read("rare")
        index_seconds = time.perf_counter() - started
        started = time.perf_counter()
        scanned = await read(None)
        scan_seconds = time.perf_counter() - started
        assert indexed == scanned == events // 10_000
        return index_seconds, scan_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--payload", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    payload = b"p" * args.payload
    record_size = len(encode_record(NewEvent(TOPIC, payload, qos=1), 0)) + len(TOPIC)
    directory = Path(tempfile.mkdtemp(prefix="tidelog-bench-kafka-"))
    kafka = KafkaCluster(directory, 1, heap_mb=768).start()
    results: dict[str, list[float]] = {}
    try:
        for _ in range(args.repeat):
            results.setdefault("kafka-producer-perf-test", []).append(
                producer_perf_test(kafka, args.events, record_size)
            )
            for batch in (1000, 100):
                url = kafka.url(f"bench-{uuid.uuid4().hex[:8]}")
                rate = trio.run(append_rate, url, args.events, batch, payload)
                results.setdefault(f"kafka:// append, batch {batch}", []).append(rate)
                lmdb = f"lmdb://{directory}/lmdb-{uuid.uuid4().hex[:6]}"
                rate = trio.run(append_rate, lmdb, args.events, batch, payload)
                results.setdefault(f"lmdb:// append, batch {batch}", []).append(rate)
        url = kafka.url(f"rare-{uuid.uuid4().hex[:8]}")
        index_seconds, scan_seconds = trio.run(rare_reads, url, args.events)
    finally:
        kafka.stop()
        shutil.rmtree(directory, ignore_errors=True)
    peer = max(results["kafka-producer-perf-test"])
    print(f"{args.events} events, record {record_size} bytes (value + key), acks=all")
    for name, rates in results.items():
        best = max(rates)
        print(f"  {name:<32} {best:>10,.0f} events/s  {best / peer:5.2f}x perf-test")
    print(
        f"  rare topic (1 in 10,000), records from Kafka: index {index_seconds * 1000:,.0f} ms, "
        f"scan {scan_seconds * 1000:,.0f} ms ({scan_seconds / index_seconds:.1f}x)"
    )


if __name__ == "__main__":
    main()
