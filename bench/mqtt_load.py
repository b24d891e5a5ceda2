"""Broker-agnostic MQTT load generator: raw trio sockets and tidelog's sans-IO codec.

    python -m bench.mqtt_load --port 1883                      # every scenario, running broker
    python -m bench.mqtt_load --port 1883 --scenario e2e-qos1 --protocol 5 --quick

``bench/mqtt_compare.py`` starts brokers itself and runs them side by side.

The parts, one job each: :mod:`bench.load_scenarios` (the shapes),
:mod:`bench.load_clients` (publishers and subscribers),
:mod:`bench.load_results` (what a run measured), :mod:`bench.process_stats`
(broker CPU and memory from /proc), :mod:`tidelog.testing.mqtt_client` (the raw
MQTT client); this module runs a scenario and is the command line.

Theory of operation
-------------------
A :class:`Scenario` is data: publishers and subscribers, the QoS of each side,
the in-flight window, the message count, an optional fixed rate. New scenarios
(fan-out, fan-in, other payload sizes) are new values in :data:`SCENARIOS`;
:func:`run_scenario` runs any of them against a :class:`Target` (address, and
the broker's pid for CPU accounting when known) and returns a
:class:`ScenarioResult`.

Publishers send pre-encoded PUBLISH packets: a run's packets are encoded once
with tidelog's codec (:func:`encode_many`) into one buffer, cached across runs,
and only the send timestamp inside each payload is written at send time.
Packets leave as slices of that buffer, one ``send_all`` per wake-up, as many
as the in-flight window allows: for QoS 1/2 the window counts messages sent and
not yet acknowledged (PUBACK; PUBCOMP for QoS 2), capped by the broker's Receive
Maximum in MQTT 5. A QoS 0 publisher ends with PINGREQ: a broker answers
PINGRESP only after reading everything sent before it, so the rate counts
messages the broker accepted, not bytes left in socket buffers.

Every payload starts with the message's sequence number and its send time
(``>QQ``, :func:`time.monotonic_ns`; publishers and subscribers run in this one
process, so they share the clock), zero-padded to the payload size. Publishers
check every acknowledgement against the packet identifier it answers (an ack
for nothing in flight counts as duplicated); subscribers keep one byte per
sequence number, so a missing message is lost and a second copy duplicated
whatever the order of arrival.

Progress is watched, not timed: a run ends when every message is acknowledged
and delivered, or when nothing has moved for ``stall_timeout`` seconds (no ack,
no delivery); whatever is missing then counts as lost.

Two scenario kinds are not message streams (:attr:`Scenario.kind`):

* ``idle``: open ``messages`` MQTT connections (CONNECT/CONNACK, no keep
  alive, 200 being opened at any moment) and hold them; the rate is connections accepted per
  second, and the broker's RSS growth per connection is measured one second
  after the last CONNACK (:func:`run_idle`).
* ``burst``: one QoS 1 publisher sends ``messages`` as fast as the broker
  acknowledges while the one subscriber reads at ``read_rate`` msg/s; once
  everything is acknowledged the subscriber drains as fast as it can, so every
  acknowledged message not delivered counts as lost. The rate is the
  publisher's acknowledged msg/s during the burst, its latency publish ->
  PUBACK (delivery latency would measure the pacing); ``drain_s`` the time
  from the last PUBACK until the subscriber had everything.

Broker memory: when the broker's pid is known, /proc/<pid>/status is sampled
every 100 ms during every run (:class:`RssSampler`): VmRSS (all resident
memory, including file pages mapped by the process, such as LMDB's map) and
RssAnon (heap and stacks only).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence

import trio

from bench.load_clients import Publisher, Subscriber, encode_publishes
from bench.load_results import Latency, ScenarioResult, format_result
from bench.load_scenarios import SCENARIOS, Scenario
from bench.process_stats import RssSampler, process_cpu_seconds, raise_fd_limit
from tidelog.concurrency import background_nursery
from tidelog.protocols.mqtt import (
    Connect,
    encode,
)
from tidelog.testing.mqtt_client import (
    ClientConnection,
    LoadError,
    Target,
)

LEVELS = {"3.1.1": 4, "4": 4, "5": 5, "5.0": 5}
"""``--protocol`` spellings -> protocol level."""


# -- running a scenario -----------------------------------------------------------


async def run_scenario(
    target: Target,
    scenario: Scenario,
    *,
    broker: str = "broker",
    protocol_level: int = 4,
    quick: bool = False,
    messages: int | None = None,
    stall_timeout: float | None = None,
    connections: int | None = None,
    publish_to: Sequence[Target] = (),
    subscribe_to: Sequence[Target] = (),
) -> ScenarioResult:
    """Run ``scenario`` once against a broker that is already listening.

    ``messages`` (per publisher) overrides the scenario's count, ``connections``
    a trickle's publishers. ``publish_to`` / ``subscribe_to`` (load scenarios):
    publisher (subscriber) ``i`` connects to the ``i``-th of them, round robin,
    instead of ``target`` (the nodes of a cluster; CPU is then the caller's to
    measure). Connection
    problems raise :class:`LoadError` or :class:`OSError`; a stall ends the run
    with an entry in ``errors`` and what is missing counted as lost.
    """
    per_publisher = messages or (scenario.quick_messages if quick else scenario.messages)
    stall = stall_timeout if stall_timeout is not None else (2.0 if quick else 5.0)
    if stall_timeout is None and scenario.kind == "trickle" and not quick:
        # a saturated broker answers thousands of connections in rounds: 10,000
        # connections on a starved broker were acknowledged after 15-20 s, in one go
        stall = TRICKLE_STALL_S
    level = protocol_level
    if scenario.kind == "idle":
        settle = IDLE_SETTLE_S / 5 if quick else IDLE_SETTLE_S
        return await run_idle(
            target, scenario, per_publisher, broker=broker, level=level, settle=settle
        )
    if scenario.kind == "trickle":
        from bench.trickle import TrickleShape, run_trickle  # only trickle runs need it

        shape = TrickleShape(
            connections=connections or scenario.publisher_count(quick),
            messages=per_publisher,
            rate=scenario.rate or 1.0,
            subscribers=scenario.subscribers,
            payload_size=scenario.payload_size,
            level=level,
        )
        return await run_trickle(target, scenario, shape, broker=broker, stall=stall)
    total = per_publisher * scenario.publishers
    base = f"tidelog-bench/{scenario.name}"
    tag = f"tlbench-{os.getpid()}-{scenario.name}"
    encoded = [
        encode_publishes(
            f"{base}/{p}",
            scenario.publish_qos,
            per_publisher,
            scenario.payload_size,
            level,
            p * per_publisher,
        )
        for p in range(scenario.publishers)
    ]
    result = ScenarioResult(scenario.name, broker, level, total)
    connections: list[ClientConnection] = []
    try:
        subscribers = []
        for s in range(scenario.subscribers):
            where = subscribe_to[s % len(subscribe_to)] if subscribe_to else target
            connection = await ClientConnection.open(where, f"{tag}-sub{s}", level)
            connections.append(connection)
            granted = await connection.subscribe(f"{base}/+", scenario.subscribe_qos)
            if granted != scenario.subscribe_qos:
                result.errors.append(f"subscriber {s}: granted QoS {granted}")
            subscribers.append(Subscriber(connection, total, read_rate=scenario.read_rate))
        publishers = []
        for p in range(scenario.publishers):
            where = publish_to[p % len(publish_to)] if publish_to else target
            connection = await ClientConnection.open(where, f"{tag}-pub{p}", level)
            connections.append(connection)
            publishers.append(
                Publisher(
                    connection,
                    encoded[p],
                    qos=scenario.publish_qos,
                    window=scenario.window,
                    rate=scenario.rate,
                    stamp=bool(scenario.subscribers),
                    stall_timeout=stall,
                )
            )
        result.window = publishers[0].window if scenario.publish_qos else None

        broker_cpu = process_cpu_seconds(target.pid) if target.pid else None
        client_cpu = time.process_time()
        memory = RssSampler(target.pid)
        async with background_nursery() as nursery:
            nursery.start_soon(memory.run)
            for subscriber in subscribers:
                nursery.start_soon(subscriber.run)
            async with background_nursery() as publishing:
                for publisher in publishers:
                    publishing.start_soon(publisher.run)
            acked_ns = time.monotonic_ns()
            for subscriber in subscribers:
                subscriber.read_rate = None  # a burst is acknowledged: drain
            await _wait_for_deliveries(subscribers, stall)
            if scenario.kind == "burst":
                result.drain_s = (time.monotonic_ns() - acked_ns) / 1e9
            nursery.cancel_scope.cancel()
        memory.record(result)
        result.client_cpu_s = time.process_time() - client_cpu
        if broker_cpu is not None and target.pid:
            after = process_cpu_seconds(target.pid)
            result.broker_cpu_s = None if after is None else after - broker_cpu
    finally:
        with trio.CancelScope(shield=True):
            for connection in connections:
                await connection.close()

    _summarize(result, scenario, publishers, subscribers)
    return result


TRICKLE_STALL_S = 30.0
"""Seconds without any acknowledgement or delivery that end a full trickle run."""
IDLE_BATCH = 200
"""Idle connections being opened at any moment."""
IDLE_SETTLE_S = 1.0
"""Seconds between the last CONNACK and the RSS-per-connection sample (quick: a fifth)."""


async def open_idle(target: Target, client_id: str, level: int) -> trio.socket.SocketType:
    """One MQTT connection that stays idle: a plain socket, CONNECT (clean, no keep
    alive), CONNACK checked for success. Lighter than :class:`ClientConnection`, so the
    client holds 10,000 and measures the broker's accept rate, not its own."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    try:
        sock.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, 1)
        await sock.connect((target.host, target.port))
        await sock.send(encode(Connect(client_id, protocol_level=level), level))
        data = b""
        while len(data) < 4:
            chunk = await sock.recv(64)
            if not chunk:
                raise LoadError(f"{client_id}: the broker closed the connection")
            data += chunk
        if data[0] != 0x20:
            raise LoadError(f"{client_id}: expected CONNACK, got packet type {data[0] >> 4}")
        if data[3] >= 0x80 or (level < 5 and data[3]):
            raise LoadError(f"{client_id}: CONNACK refused: 0x{data[3]:02X}")
    except BaseException:
        sock.close()
        raise
    return sock


async def run_idle(
    target: Target,
    scenario: Scenario,
    count: int,
    *,
    broker: str,
    level: int,
    settle: float = IDLE_SETTLE_S,
) -> ScenarioResult:
    """Open ``count`` MQTT connections (:data:`IDLE_BATCH` at a time, :func:`open_idle`),
    hold them ``settle`` s, measure, close them. ``rate`` is CONNACKs/s over the
    whole opening; ``accepted`` and ``connections`` the connections made."""
    result = ScenarioResult(scenario.name, broker, level, count)
    tag = f"tlbench-{os.getpid()}-idle"
    connections: list[trio.socket.SocketType] = []
    failures: list[str] = []
    memory = RssSampler(target.pid)
    broker_cpu = process_cpu_seconds(target.pid) if target.pid else None
    client_cpu = time.process_time()

    async def opener(first: int) -> None:
        for n in range(first, count, IDLE_BATCH):
            try:
                connections.append(await open_idle(target, f"{tag}-{n}", level))
            except (LoadError, OSError) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

    try:
        async with background_nursery() as sampling:
            sampling.start_soon(memory.run)
            started = time.monotonic_ns()
            async with trio.open_nursery() as nursery:
                for first in range(min(count, IDLE_BATCH)):
                    nursery.start_soon(opener, first)
            ended = time.monotonic_ns()
            if target.pid:
                after = process_cpu_seconds(target.pid)
                result.broker_cpu_s = (
                    None if broker_cpu is None or after is None else after - broker_cpu
                )
            result.client_cpu_s = time.process_time() - client_cpu
            await trio.sleep(settle)
            held = memory.sample()
            sampling.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            for sock in connections:
                sock.close()
    memory.record(result)
    result.sent = count
    result.accepted = result.connections = len(connections)
    result.elapsed_s = (ended - started) / 1e9
    result.rate = len(connections) / result.elapsed_s if result.elapsed_s else 0.0
    if held is not None and memory.start is not None and connections:
        result.rss_per_connection_bytes = (held[0] - memory.start[0]) / len(connections)
        result.rss_anon_per_connection_bytes = (held[1] - memory.start[1]) / len(connections)
    if failures:
        result.errors.append(f"{len(failures)} of {count} connections failed, first: {failures[0]}")
    return result


async def _wait_for_deliveries(subscribers: list[Subscriber], stall: float) -> None:
    """Return once every subscriber has everything, or nothing arrived for ``stall`` s."""
    if not subscribers:
        return
    last_progress = time.monotonic()
    delivered = -1
    while not all(subscriber.complete for subscriber in subscribers):
        now_delivered = sum(subscriber.delivered for subscriber in subscribers)
        if now_delivered != delivered:
            delivered = now_delivered
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > stall:
            return
        await trio.sleep(0.01)


def _summarize(
    result: ScenarioResult,
    scenario: Scenario,
    publishers: list[Publisher],
    subscribers: list[Subscriber],
) -> None:
    result.sent = sum(p.sent for p in publishers)
    result.accepted = sum(p.accepted for p in publishers)
    result.refused = sum(p.refused for p in publishers)
    result.delivered = sum(s.delivered for s in subscribers)
    result.duplicated = sum(p.duplicated_acks for p in publishers) + sum(
        s.duplicated for s in subscribers
    )
    for publisher in publishers:
        result.errors.extend(publisher.errors)
    for subscriber in subscribers:
        result.errors.extend(subscriber.errors)
    started = min((p.first_send_ns for p in publishers if p.first_send_ns), default=0)
    if subscribers:
        result.lost = result.messages * len(subscribers) - result.delivered
        ended = max(s.last_delivery_ns for s in subscribers)
        count = result.delivered
        result.latency = Latency.from_samples([x for s in subscribers for x in s.latencies])
    else:
        result.lost = result.messages - result.accepted - result.refused
        ended = max(p.last_ack_ns for p in publishers)
        count = result.accepted
    if scenario.publish_qos:
        result.ack_latency = Latency.from_samples([x for p in publishers for x in p.ack_latencies])
        unacked = result.messages - result.accepted - result.refused
        if subscribers and unacked:
            result.errors.append(f"{unacked} messages were never acknowledged")
    if scenario.kind == "burst":
        # the figure is the publisher's acked rate while the subscriber was slow;
        # delivery latency would measure the pacing, not the broker
        ended = max(p.last_ack_ns for p in publishers)
        count = result.accepted
        result.latency = None
    if started and ended > started:
        result.elapsed_s = (ended - started) / 1e9
        result.rate = count / result.elapsed_s


# -- command line -------------------------------------------------------------------


def parse_protocol(text: str) -> int:
    try:
        return LEVELS[text]
    except KeyError:
        raise argparse.ArgumentTypeError(f"protocol {text!r}: use 3.1.1 or 5") from None


def parse_names(text: str, known: Sequence[str], what: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown)}; choose from {', '.join(known)}"
        )
    return names


def scenario_names(text: str) -> list[str]:
    return parse_names(text, list(SCENARIOS), "scenario")


async def _main(args: argparse.Namespace, emit: Callable[[ScenarioResult], None]) -> int:
    target = Target(args.host, args.port, args.pid)
    failed = False
    for name in args.scenario:
        result = await run_scenario(
            target,
            SCENARIOS[name],
            broker=f"{args.host}:{args.port}",
            protocol_level=args.protocol,
            quick=args.quick,
            messages=args.messages,
        )
        emit(result)
        failed = failed or not result.ok
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.mqtt_load",
        description="Run MQTT load scenarios against a broker that is already running.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--pid", type=int, help="broker pid, for CPU accounting")
    parser.add_argument("--protocol", type=parse_protocol, default=4, help="3.1.1 (default) or 5")
    parser.add_argument(
        "--scenario",
        type=scenario_names,
        default=list(SCENARIOS),
        help=f"comma-separated; default all: {','.join(SCENARIOS)}",
    )
    parser.add_argument("--messages", type=int, help="messages per publisher (overrides)")
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    parser.add_argument("--json", action="store_true", help="print results as JSON lines")
    args = parser.parse_args(argv)

    def emit(result: ScenarioResult) -> None:
        print(json.dumps(result.to_dict()) if args.json else format_result(result), flush=True)

    raise_fd_limit()
    try:
        return trio.run(_main, args, emit)
    except (LoadError, OSError) as exc:
        print(f"mqtt_load: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
