"""Failover benchmark: what a node's death in a cluster delivers twice in a shared group.

Usage (from the repository root; Kafka's jars come from ``scripts/kafka/fetch.sh``)::

    python -m bench.cluster_failover                        # this checkout
    python -m bench.cluster_failover --checkout /work/main  # and another, same run

One single-broker KRaft Kafka is started for the run (tests/kafka_broker.py). For
each checkout in turn: two ``tidelog serve --storage kafka://...`` nodes over a
fresh log, a ``$share`` group with one MQTT 5 member on each (QoS 1, acknowledging
everything), and a QoS 1 publisher on the first node at a fixed rate. After
``--before`` seconds the second node is SIGKILLed; publishing goes on for
``--after`` seconds (past the 6 s in which the survivor takes the dead node's
share over), then every delivery is counted: lost (published and acknowledged,
never delivered to a member) and duplicated (delivered more than once, on
either member). Duplicates come from the events the dead node's member
acknowledged after its node last wrote the group's progress (docs/cluster.md,
"Failure modes").
"""

from __future__ import annotations

import argparse
import queue
import shutil
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.kafka_broker import KafkaCluster
from tidelog.testing.server import SOURCE_ROOT, ServerProcess

GROUP = "$share/failover/fo/#"


def node(checkout: Path, url: str, name: str, workdir: Path) -> ServerProcess:
    server = ServerProcess(
        "--storage",
        url,
        "--node-id",
        name,
        "--mqtt-port",
        "0",
        "--http-port",
        "0",
        "--ws-port",
        "0",
        "--log-level",
        "info",  # the listeners' ports are logged at info
        cwd=workdir,
        checkout=checkout,
    )
    server.launch()
    server.wait_ready(("MQTT",))
    return server


def client(port: int, received: queue.Queue[bytes] | None = None) -> paho.Client:
    mqtt = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    mqtt.max_inflight_messages_set(1000)
    connected = queue.Queue[object]()
    mqtt.on_connect = lambda c, u, f, rc, p: connected.put(rc)
    if received is not None:
        mqtt.on_message = lambda c, u, message: received.put(bytes(message.payload))
    mqtt.connect("127.0.0.1", port)
    mqtt.loop_start()
    connected.get(timeout=30)
    return mqtt


def run_once(checkout: Path, kafka: KafkaCluster, args: argparse.Namespace) -> dict[str, int]:
    workdir = Path(tempfile.mkdtemp(prefix="tidelog-failover-"))
    url = kafka.url(f"failover-{uuid.uuid4().hex[:10]}")
    survivor = node(checkout, url, "node-1", workdir)
    victim = node(checkout, url, "node-2", workdir)
    received: queue.Queue[bytes] = queue.Queue()
    members = [client(server.ports["MQTT"], received) for server in (survivor, victim)]
    publisher = client(survivor.ports["MQTT"])
    try:
        for member in members:
            member.subscribe(GROUP, qos=1)
        time.sleep(3)  # both joins read back by both nodes
        infos = []
        start = time.monotonic()
        total = int(args.rate * (args.before + args.after))
        killed = False
        for n in range(total):
            infos.append(publisher.publish("fo/x", b"%08d" % n, qos=1))
            due = start + (n + 1) / args.rate
            if not killed and due - start >= args.before:
                victim.kill()
                killed = True
            if (pause := due - time.monotonic()) > 0:
                time.sleep(pause)
        for info in infos:
            info.wait_for_publish(30)
        acked = {b"%08d" % n for n, info in enumerate(infos) if info.is_published()}
        got: Counter[bytes] = Counter()
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 3:
            try:
                got[received.get(timeout=0.2)] += 1
                quiet_since = time.monotonic()
            except queue.Empty:
                continue
        return {
            "published": total,
            "acknowledged": len(acked),
            "lost": len(acked - set(got)),
            "duplicated": sum(count - 1 for count in got.values()),
        }
    finally:
        for mqtt in (*members, publisher):
            mqtt.loop_stop()
        survivor.kill()
        victim.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500, help="messages per second")
    parser.add_argument("--before", type=float, default=4, help="seconds before the kill")
    parser.add_argument("--after", type=float, default=10, help="seconds after it")
    parser.add_argument("--runs", type=int, default=1, help="runs per checkout")
    parser.add_argument(
        "--checkout", action="append", type=Path, help="another source tree to compare"
    )
    args = parser.parse_args()
    checkouts = [SOURCE_ROOT, *(args.checkout or [])]
    directory = Path(tempfile.mkdtemp(prefix="tidelog-kafka-"))
    kafka = KafkaCluster(directory, brokers=1)
    try:
        kafka.start()
        for _ in range(args.runs):
            for checkout in checkouts:  # alternating, so load hits both alike
                result = run_once(checkout, kafka, args)
                print(checkout, result, flush=True)
    finally:
        kafka.stop()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
