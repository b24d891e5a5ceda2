"""Cluster benchmark: MQTT through 1, 2 and 3 tidelog nodes on one ``kafka://`` log.

Usage (from the repository root; Kafka's jars come from ``scripts/kafka/fetch.sh``)::

    python -m bench.cluster                      # short runs (10,000 messages)
    python -m bench.cluster --messages 20000 --nodes 1,3

One single-broker KRaft Kafka is started for the run (tests/kafka_broker.py),
with the garbage collector Kafka's own start scripts set (G1, a 20 ms pause
target; ``kafka_gc=True``): the tests' small serial-GC JVM stops the broker for
30 ms per young collection and about 100 ms per full one, which set the p99 of
the 1,000 msg/s runs.
In the same run, one after the other:

* ``kafka-producer-perf-test`` (``acks=all``, idempotent) with the record size of
  tidelog's records for these messages (value: the encoded record; key: the topic)
  in two forms: once at the start with ``--perf-records`` (100,000: the JVM
  warms up, the log's ceiling), and right before each ``kafka://`` ingest run
  with as many records as that run (a cold JVM, like the fresh tidelog node, at
  the machine's load of that moment: a ratio against a figure minutes older
  measures the load's drift). Ingest rows give both ratios, adjacent/ceiling.
  Beside the adjacent one, Kafka's ``kafka-e2e-latency`` (acks=all, the same
  record size, ``--latency-messages`` sent one at a time): what delivery through
  the bare broker costs at that moment, the peer of the latency runs;
* one ``tidelog serve`` on ``lmdb://`` (fsync ``always``, the default);
* 1, 2 and 3 ``tidelog serve --storage kafka://... --node-id ...`` processes on one
  fresh log each.

Against each: QoS 1 ingest (window 1000, one publisher per node, the messages
split between them, acked msg/s); QoS 1 end to end (one publisher per node, one
subscriber on the last node, so with several nodes most deliveries cross nodes);
publish -> delivery latency at a fixed 1,000 msg/s from the first node to a
subscriber on the last; then catch-up: a broker opened in this process on the
same log reads every event from the start (topic and payload touched), after
its open (on ``kafka://``: reading the partition to build the block index).
Every load figure comes with the CPU seconds per message of the tidelog nodes
(summed) and of the Kafka broker during that run, and lost/duplicated counts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio

import tidelog
from bench.kafka_log import end_to_end_latency, producer_perf_test
from bench.load_results import ScenarioResult
from bench.load_scenarios import SCENARIOS
from bench.mqtt_load import run_scenario
from bench.process_stats import process_cpu_seconds
from tests.kafka_broker import KafkaCluster, free_port
from tidelog.storage import NewEvent
from tidelog.storage.records import encode_record
from tidelog.testing.mqtt_client import Target
from tidelog.testing.server import ServerProcess

HOST = "127.0.0.1"


@asynccontextmanager
async def nodes(
    url: str, count: int, workdir: Path
) -> AsyncIterator[list[tuple[ServerProcess, int]]]:
    """``count`` tidelog nodes on ``url`` (MQTT only) and their MQTT ports, stopped on exit."""
    started: list[tuple[ServerProcess, int]] = []
    try:
        for index in range(count):
            port = free_port()
            server = ServerProcess(
                *("--storage", url, "--node-id", f"n{index + 1}", "--bind", HOST),
                *("--mqtt-port", str(port), "--http-port", "off", "--ws-port", "off"),
                *("--log-level", "warning"),
                cwd=workdir,
                log_path=workdir / f"node-{uuid.uuid4().hex[:6]}.log",
            )
            server.launch()
            started.append((server, port))
            await server.until_accepting(port, 120)
        yield started
    finally:
        with trio.CancelScope(shield=True):
            for server, _ in started:
                await server.terminate(30)


@attrs.define
class Row:
    """One load run: the result and the CPU it cost."""

    what: str
    result: ScenarioResult
    node_cpu_s: float
    kafka_cpu_s: float

    def line(self, *peers: float) -> str:
        load = os.getloadavg()[0]
        r = self.result
        count = max(1, r.accepted)
        ratio = "/".join(f"{r.rate / peer:.2f}" for peer in peers) + "x perf-test" if peers else ""
        latency = ""
        if r.latency is not None and r.latency.count:
            latency = f"p50 {r.latency.p50_ns / 1e6:6.2f} ms p99 {r.latency.p99_ns / 1e6:6.2f} ms"
        return (
            f"  {self.what:<34} {r.rate:>8,.0f} msg/s {ratio:<18} {latency:<28}"
            f" node {self.node_cpu_s / count * 1e6:5.0f} us/msg"
            f" kafka {self.kafka_cpu_s / count * 1e6:5.0f} us/msg"
            f"  lost {r.lost} dup {r.duplicated} load {load:.1f}"
            + (f" errors {r.errors[:1]}" if r.errors else "")
        )


def _cpu(pids: Sequence[int]) -> float:
    return sum(process_cpu_seconds(pid) or 0.0 for pid in pids)


async def measure(
    what: str,
    scenario_name: str,
    servers: list[ServerProcess],
    ports: list[int],
    kafka_pid: int | None,
    *,
    publishers: int,
    messages: int,
    rate: float | None = None,
) -> Row:
    targets = [Target(HOST, port) for port in ports]
    scenario = attrs.evolve(SCENARIOS[scenario_name], publishers=publishers)
    if rate is not None:
        scenario = attrs.evolve(scenario, rate=rate, window=100)
    pids = [server.pid for server in servers]
    node_before = _cpu(pids)
    kafka_before = _cpu([kafka_pid]) if kafka_pid else 0.0
    result = await run_scenario(
        targets[0],
        scenario,
        broker=what,
        messages=max(1, messages // publishers),
        publish_to=targets[:publishers] if publishers > 1 else targets[:1],
        subscribe_to=targets[-1:],
    )
    node_cpu = _cpu(pids) - node_before
    kafka_cpu = (_cpu([kafka_pid]) - kafka_before) if kafka_pid else 0.0
    return Row(what, result, node_cpu, kafka_cpu)


async def catch_up(url: str) -> tuple[float, float, int]:
    """Seconds to open a broker on ``url`` and to read every event from the start
    through it (topic and payload touched); and the event count."""
    started = time.perf_counter()
    async with tidelog.open(url, cache_bytes=1024 * 1024) as broker:
        opened = time.perf_counter() - started
        total = await broker.count("tidelog-bench/#", 0)
        seen = 0
        size = 0
        started = time.perf_counter()
        async with broker.subscribe("tidelog-bench/#", start="earliest") as events:
            async for event in events:
                seen += 1
                size += len(event.topic) + len(event.payload)
                if seen >= total:
                    break
        return opened, time.perf_counter() - started, seen


async def run(args: argparse.Namespace, workdir: Path) -> None:
    kafka = KafkaCluster(workdir / "kafka", 1, heap_mb=768, kafka_gc=True)
    (workdir / "kafka").mkdir()
    kafka.start()
    kafka_pid = kafka.processes[0].pid
    topic = "tidelog-bench/e2e-qos1/0"
    record_size = len(encode_record(NewEvent(topic, b"p" * 100, qos=1), 0)) + len(topic)
    try:
        peer = await trio.to_thread.run_sync(
            producer_perf_test, kafka, args.perf_records, record_size
        )
        print(
            f"{args.messages} messages of 100 bytes, QoS 1; Kafka record {record_size} bytes;"
            f" kafka-producer-perf-test (acks=all, idempotent, {args.perf_records:,} records):"
            f" {peer:,.0f} records/s",
            flush=True,
        )
        configs: list[tuple[str, str, int]] = [("lmdb://", f"lmdb://{workdir}/lmdb", 1)]
        configs += [
            (
                f"kafka:// {n} node{'s' if n > 1 else ''}",
                kafka.url(f"bench-{n}-{uuid.uuid4().hex[:6]}"),
                n,
            )
            for n in args.nodes
        ]
        for name, url, count in configs:
            pid = kafka_pid if url.startswith("kafka") else None
            adjacent = peer
            if pid is not None:  # the log's own rate right now, as many records as tidelog's
                adjacent = await trio.to_thread.run_sync(
                    producer_perf_test, kafka, args.messages, record_size
                )
                p50, p99 = await trio.to_thread.run_sync(
                    end_to_end_latency, kafka, args.latency_messages, record_size
                )
                print(
                    f"  just before, Kafka's own tools: kafka-producer-perf-test,"
                    f" {args.messages:,} records: {adjacent:,.0f} records/s;"
                    f" kafka-e2e-latency, {args.latency_messages:,} messages one at a time:"
                    f" p50 {p50} ms p99 {p99} ms",
                    flush=True,
                )
            async with nodes(url, count, workdir) as started:
                servers = [server for server, _ in started]
                ports = [port for _, port in started]
                rows = [
                    await measure(
                        f"{name}: ingest",
                        "qos1-publish-w1000",
                        servers,
                        ports,
                        pid,
                        publishers=count,
                        messages=args.messages,
                    ),
                    await measure(
                        f"{name}: end to end",
                        "e2e-qos1",
                        servers,
                        ports,
                        pid,
                        publishers=count,
                        messages=args.messages,
                    ),
                    await measure(
                        f"{name}: 1,000 msg/s",
                        "latency-500",
                        servers,
                        ports,
                        pid,
                        publishers=1,
                        messages=args.latency_messages,
                        rate=1000.0,
                    ),
                ]
                for row in rows:
                    ingest = row.what.endswith("ingest")
                    peers = ((adjacent, peer) if pid else (peer,)) if ingest else ()
                    print(row.line(*peers), flush=True)
            opened, read, seen = await catch_up(url)
            print(
                f"  {name}: catch-up {seen:,} events in {read:.2f} s ({seen / read:,.0f} events/s),"
                f" after an open of {opened:.2f} s",
                flush=True,
            )
    finally:
        kafka.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--latency-messages", type=int, default=3_000)
    parser.add_argument(
        "--perf-records",
        type=int,
        default=100_000,
        help="records of the first kafka-producer-perf-test run (a warm JVM: the log's"
        " ceiling); the runs before each kafka:// ingest send --messages records",
    )
    parser.add_argument(
        "--nodes", type=lambda text: [int(n) for n in text.split(",")], default=[1, 2, 3]
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tidelog-bench-cluster-"))
    try:
        trio.run(run, args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
