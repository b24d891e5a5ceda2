"""tidelog-only benchmarks of issue 7: replay throughput and persistent-session catch-up.

    python -m bench.tidelog_only                   # 1M events / 1M offline messages, 3 repeats
    python -m bench.tidelog_only --quick           # smoke run: 50k events, 20k messages, 1 repeat
    python -m bench.tidelog_only --json bench/results/tidelog-only.json
    python -m bench.tidelog_only --only catch-up --messages 200000

No peer runs these: mosquitto, nats-server and amqtt keep no replayable log.
Each figure is printed beside its own baseline measured in the same run.

**Replay** (in process, no sockets). An LMDB log with ``fsync=always`` is filled
with N 100-byte events over 100 topics by ``Broker.publish_many`` in batches of
1,000 (every batch an fsynced commit), then reopened, and read from the first
offset to the end four ways, each ``--repeat`` times (interleaved, in alternating
order; the median reported):

* ``replay-engine``: ``async for event in broker.replay(None, start="earliest")``
  (the engine's history iterator, 1,000-event pages);
* ``read-engine``: ``Broker.read(offset, limit=1000)`` page after page (what
  cursors, REST and the adapters use);
* ``read-storage``: ``EventLog.read(offset, limit=1000)`` on the same log,
  below the engine: the storage layer's decoded read;
* ``scan-raw-lmdb``: a py-lmdb cursor over every segment's ``events`` database
  (values copied out, nothing decoded): the ceiling for any decoded read.

Target (issue 7): ``replay-engine`` >= 1M events/s.

**Persistent-session catch-up** (over TCP). A fresh ``tidelog serve`` process
(``bench/brokers.py``: LMDB, ``fsync=always``) runs; a client connects with a
persistent session (MQTT 3.1.1 Clean Session 0, or with ``--protocol 5`` Clean
Start 0 and a Session Expiry Interval), subscribes at QoS 1 and disconnects. A
second client then publishes M QoS 1 messages (window 1,000; every PUBACK
checked) while the subscriber is away. The subscriber reconnects: the clock runs
from its TCP connect until the last of the M messages has arrived (each
acknowledged with PUBACK). Every payload carries its sequence number, so a
message never delivered is *lost* and a second copy *duplicated*. The load
generator is ``bench/mqtt_load.py``'s (``ClientConnection``, ``Publisher``,
``Subscriber``; tidelog's sans-IO codec on raw trio sockets). Reported: msg/s,
lost, duplicated, broker CPU us/msg and the client's CPU share (near 100% means
the client, not the broker, set the rate), and the broker's peak RSS.

Target (issue 7): catch-up of 1M offline messages at >= 100k msg/s.

Exit status: 0 when every measurement ran and nothing was lost or duplicated;
1 otherwise (whatever the rates: targets are reported, never enforced).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import lmdb
import trio

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tidelog
from bench.brokers import PEERS, PeerError
from bench.engine import read_ways
from bench.load_clients import Publisher, Subscriber, encode_publishes
from bench.mqtt_load import parse_protocol
from bench.process_stats import process_cpu_seconds
from tidelog import NewEvent
from tidelog.concurrency import background_nursery
from tidelog.protocols.mqtt import NO_PROPERTIES, Properties
from tidelog.testing.mqtt_client import ClientConnection, LoadError, Target

PAYLOAD_SIZE = 100
TOPICS = 100
BATCH = 1000
"""Events per ``publish_many`` when building the replay log, and per read page."""
PUBLISH_CHUNK = 100_000
"""Offline messages are encoded and published this many at a time (bounded memory)."""
PUBLISH_WINDOW = 1000
STALL_SECONDS = 10.0
"""A catch-up that delivers nothing for this long ends; what is missing counts as lost."""

REPLAY_TARGET = 1_000_000.0
CATCH_UP_TARGET = 100_000.0


@attrs.define
class Measurement:
    """One tidelog-only figure: the median of its runs, with the runs themselves.

    ``rate`` is ``count / seconds`` of the median run (events/s or msg/s, see
    ``unit``); ``target`` the issue-7 target for the headline measurements.
    ``lost``/``duplicated`` are summed over the runs. CPU figures are those of the
    median run: ``broker_cpu_us_per_msg`` and ``broker_cpu_share`` (CPU over
    wall time; catch-up: the ``tidelog serve`` process, replay: this process,
    which is the broker) and ``client_cpu_share`` (catch-up: the load
    generator's CPU over wall time). A broker share well under 100% with a low
    client share means the broker waited (or the machine starved it).
    """

    name: str
    description: str
    unit: str
    count: int
    rate: float = 0.0
    seconds: float = 0.0
    target: float | None = None
    runs: list[float] = attrs.field(factory=list)
    lost: int = 0
    duplicated: int = 0
    broker_cpu_us_per_msg: float | None = None
    broker_cpu_share: float | None = None
    client_cpu_share: float | None = None
    broker_peak_rss_mib: float | None = None
    extra: dict[str, Any] = attrs.field(factory=dict)
    errors: list[str] = attrs.field(factory=list)

    @property
    def ok(self) -> bool:
        return not (self.errors or self.lost or self.duplicated)

    @property
    def target_met(self) -> bool | None:
        if self.target is None:
            return None
        return self.ok and self.rate >= self.target


@attrs.frozen
class Run:
    """One timed pass: how many, how long, and CPU figures when measured."""

    count: int
    seconds: float
    cpu_s: float | None = None
    client_cpu_s: float | None = None
    lost: int = 0
    duplicated: int = 0
    peak_rss_mib: float | None = None
    errors: tuple[str, ...] = ()
    extra: dict[str, Any] = attrs.field(factory=dict)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


def fold(measurement: Measurement, runs: list[Run]) -> Measurement:
    """Fill ``measurement`` from its runs: the figures of the median run (the lower
    middle one of an even count), losses summed over all runs."""
    good = [run for run in runs if not run.errors] or runs
    median = sorted(good, key=lambda run: run.rate)[(len(good) - 1) // 2]
    measurement.rate = median.rate
    measurement.seconds = median.seconds
    measurement.count = median.count
    measurement.runs = [run.rate for run in runs]
    measurement.lost = sum(run.lost for run in runs)
    measurement.duplicated = sum(run.duplicated for run in runs)
    if median.cpu_s is not None and median.count:
        measurement.broker_cpu_us_per_msg = median.cpu_s * 1e6 / median.count
    if median.cpu_s is not None and median.seconds > 0:
        measurement.broker_cpu_share = median.cpu_s / median.seconds
    if median.client_cpu_s is not None and median.seconds > 0:
        measurement.client_cpu_share = median.client_cpu_s / median.seconds
    measurement.broker_peak_rss_mib = max(
        (run.peak_rss_mib for run in runs if run.peak_rss_mib is not None), default=None
    )
    measurement.extra.update(median.extra)
    for number, run in enumerate(runs, 1):
        measurement.errors.extend(f"run {number}: {error}" for error in run.errors)
    return measurement


def peak_rss_mib(pid: int | str = "self") -> float | None:
    """VmHWM (peak resident set) of a process from /proc, MiB; None without /proc."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


# -- replay ------------------------------------------------------------------------------


async def build_log(url: str, events: int) -> float:
    """Fill a fresh log with ``events`` events by publish_many(1000); events/s."""
    body = b"r" * PAYLOAD_SIZE
    batch = [NewEvent(f"replay/{i % TOPICS}", body) for i in range(BATCH)]
    started = time.perf_counter()
    async with tidelog.open(url) as broker:
        for number in range(0, events, BATCH):
            await broker.publish_many(batch[: min(BATCH, events - number)])
    return events / (time.perf_counter() - started)


def _timed(count_events: Callable[[], Any]) -> Callable[[], Any]:
    async def run() -> Run:
        cpu = time.process_time()
        started = time.perf_counter()
        count = await count_events()
        seconds = time.perf_counter() - started
        return Run(count, seconds, cpu_s=time.process_time() - cpu)

    return run


async def replay_runs(url: str, events: int, repeat: int) -> dict[str, list[Run]]:
    """Read the whole log ``repeat`` times each way (interleaved); runs by measurement."""
    runs: dict[str, list[Run]] = {
        "replay-engine": [],
        "read-engine": [],
        "read-storage": [],
    }
    async with tidelog.open(url) as broker:
        reads = read_ways(broker, "replay")
        ways = {
            "replay-engine": _timed(reads["Broker.replay"]),
            "read-engine": _timed(reads["Broker.read"]),
            "read-storage": _timed(reads["log.read"]),
        }
        for number in range(repeat):  # alternate the order: drift hits every way alike
            order = list(ways.items())
            for name, way in order if number % 2 == 0 else order[::-1]:
                run: Run = await way()
                if run.count != events:
                    run = attrs.evolve(
                        run,
                        lost=max(0, events - run.count),
                        duplicated=max(0, run.count - events),
                        errors=(f"read {run.count} events of {events}",),
                    )
                runs[name].append(run)
    return runs


def raw_scan(root: Path) -> Run:
    """Copy every record out of every segment's ``events`` database with py-lmdb."""
    segments = sorted(p for p in (root / "segments").iterdir() if not p.name.startswith("."))
    envs = [
        lmdb.open(str(path), readonly=True, lock=False, max_dbs=6, subdir=True) for path in segments
    ]
    try:
        cpu = time.process_time()
        started = time.perf_counter()
        seen = 0
        for env in envs:
            db = env.open_db(b"events", create=False)
            with env.begin(db=db) as txn:
                for _value in txn.cursor(db).iternext(keys=False):
                    seen += 1
        return Run(seen, time.perf_counter() - started, cpu_s=time.process_time() - cpu)
    finally:
        for env in envs:
            env.close()


def measure_replay(events: int, repeat: int, emit: Callable[[str], None]) -> list[Measurement]:
    measurements = [
        Measurement(
            "replay-engine",
            "Broker.replay(None, start='earliest'): every event of the log, engine iterator",
            "events/s",
            events,
            target=REPLAY_TARGET,
        ),
        Measurement(
            "read-engine",
            "Broker.read(offset, limit=1000) page after page",
            "events/s",
            events,
        ),
        Measurement(
            "read-storage",
            "EventLog.read(offset, limit=1000) page after page (storage layer, decoded)",
            "events/s",
            events,
        ),
        Measurement(
            "scan-raw-lmdb",
            "py-lmdb cursor over every segment's events database (values, not decoded)",
            "events/s",
            events,
        ),
    ]
    with tempfile.TemporaryDirectory(prefix="tidelog-replay-") as tmp:
        root = Path(tmp) / "log"
        url = f"lmdb://{root}?fsync=always"
        try:
            built = trio.run(build_log, url, events)
            emit(f"built the replay log: {events:,} events by publish_many(1000), "
                 f"fsync always, {built:,.0f} events/s")  # fmt: skip
            runs = trio.run(replay_runs, url, events, repeat)
            runs["scan-raw-lmdb"] = []
            for _ in range(repeat):
                run = raw_scan(root)
                if run.count != events:
                    run = attrs.evolve(run, errors=(f"scanned {run.count} records of {events}",))
                runs["scan-raw-lmdb"].append(run)
        except Exception as exc:  # reported as a failed measurement, the others still run
            for measurement in measurements:
                measurement.errors.append(f"{type(exc).__name__}: {exc}")
            return measurements
    for measurement in measurements:
        fold(measurement, runs[measurement.name])
        measurement.extra["build_events_per_s"] = built
    return measurements


# -- persistent-session catch-up ----------------------------------------------------------


def _session_properties(level: int) -> Properties:
    return Properties(session_expiry_interval=3600) if level == 5 else NO_PROPERTIES


async def _wait_until_complete(subscriber: Subscriber, stall: float) -> None:
    """Return once ``subscriber`` has everything, or nothing arrived for ``stall`` s."""
    delivered, last_progress = -1, time.monotonic()
    while not subscriber.complete:
        if subscriber.delivered != delivered:
            delivered, last_progress = subscriber.delivered, time.monotonic()
        elif time.monotonic() - last_progress > stall:
            return
        await trio.sleep(0.005)


async def _publish_offline(target: Target, messages: int, level: int, topic: str) -> list[str]:
    """Publish ``messages`` QoS 1 messages (payload sequence numbers 0..messages-1),
    every one acknowledged; returns errors."""
    errors: list[str] = []
    connection = await ClientConnection.open(target, f"tlbench-{os.getpid()}-catchup-pub", level)
    try:
        for first in range(0, messages, PUBLISH_CHUNK):
            count = min(PUBLISH_CHUNK, messages - first)
            packets = encode_publishes(topic, 1, count, PAYLOAD_SIZE, level, first)
            publisher = Publisher(
                connection,
                packets,
                qos=1,
                window=PUBLISH_WINDOW,
                rate=None,
                stamp=False,
                stall_timeout=STALL_SECONDS,
            )
            await publisher.run()
            errors.extend(publisher.errors)
            if publisher.accepted != count:
                errors.append(f"published {publisher.accepted} of {count} acknowledged")
            if publisher.duplicated_acks:
                errors.append(f"{publisher.duplicated_acks} PUBACKs for nothing in flight")
            if errors:
                break
    finally:
        with trio.CancelScope(shield=True):
            await connection.close()
    return errors


async def catch_up_once(messages: int, level: int) -> Run:
    """One catch-up run against a fresh ``tidelog serve``."""
    peer = PEERS["tidelog"]
    client_id = f"tlbench-{os.getpid()}-catchup-sub"
    topic_base = "tidelog-bench/catch-up"
    properties = _session_properties(level)
    with tempfile.TemporaryDirectory(prefix="tidelog-catchup-") as tmp:
        async with peer.start(Path(tmp)) as running:
            target = Target(running.host, running.port, running.pid)
            first = await ClientConnection.open(
                target, client_id, level, clean_start=False, properties=properties
            )
            try:
                granted = await first.subscribe(f"{topic_base}/+", 1)
            finally:
                await first.close()
            if granted != 1:
                return Run(0, 0.0, errors=(f"SUBSCRIBE granted QoS {granted}",))

            published_at = time.perf_counter()
            errors = await _publish_offline(target, messages, level, f"{topic_base}/0")
            publish_seconds = time.perf_counter() - published_at
            if errors:
                return Run(0, 0.0, lost=messages, errors=tuple(errors))

            broker_cpu = process_cpu_seconds(running.pid)
            client_cpu = time.process_time()
            started = time.perf_counter()
            started_ns = time.monotonic_ns()
            connection = await ClientConnection.open(
                target, client_id, level, clean_start=False, properties=properties
            )
            try:
                subscriber = Subscriber(connection, messages)
                async with background_nursery() as nursery:
                    nursery.start_soon(subscriber.run)
                    await _wait_until_complete(subscriber, STALL_SECONDS)
                    nursery.cancel_scope.cancel()
                client_cpu_s = time.process_time() - client_cpu
                broker_after = process_cpu_seconds(running.pid)
                wall = time.perf_counter() - started
            finally:
                with trio.CancelScope(shield=True):
                    await connection.close()
            rss = peak_rss_mib(running.pid)
            errors = list(subscriber.errors)
            if not connection.session_present:
                errors.append("the broker did not resume the session (session present 0)")
            lost = messages - subscriber.delivered
            if lost:
                errors.append(f"{lost} messages not delivered within {STALL_SECONDS:g} s stall")
            ended_ns = subscriber.last_delivery_ns or time.monotonic_ns()
            seconds = (ended_ns - started_ns) / 1e9 if subscriber.delivered else wall
            cpu = None
            if broker_cpu is not None and broker_after is not None:
                cpu = broker_after - broker_cpu
            return Run(
                subscriber.delivered,
                seconds,
                cpu_s=cpu,
                client_cpu_s=client_cpu_s * seconds / wall if wall > 0 else client_cpu_s,
                lost=lost,
                duplicated=subscriber.duplicated,
                peak_rss_mib=rss,
                errors=tuple(errors),
                extra={"offline_publish_msg_per_s": messages / publish_seconds},
            )


def measure_catch_up(
    messages: int, repeat: int, level: int, emit: Callable[[str], None]
) -> Measurement:
    measurement = Measurement(
        "catch-up",
        f"persistent session (QoS 1) reconnects after {messages:,} QoS 1 messages published "
        "while it was offline; tidelog serve, LMDB fsync=always, over TCP",
        "msg/s",
        messages,
        target=CATCH_UP_TARGET,
    )
    reason = PEERS["tidelog"].unavailable()
    if reason:
        measurement.errors.append(reason)
        return measurement
    runs: list[Run] = []
    for number in range(repeat):
        try:
            run = trio.run(catch_up_once, messages, level)
        except (LoadError, PeerError, OSError, ExceptionGroup) as exc:
            run = Run(0, 0.0, lost=messages, errors=(f"{type(exc).__name__}: {exc}",))
        runs.append(run)
        cpu = "-" if run.cpu_s is None or not run.count else f"{run.cpu_s * 1e6 / run.count:.1f}"
        emit(
            f"[run {number + 1}/{repeat}] catch-up {run.rate:>12,.0f} msg/s  "
            f"delivered {run.count} lost {run.lost} dup {run.duplicated}  "
            f"broker CPU us/msg {cpu}  client cpu {run.client_cpu_s or 0:.2f} s  "
            f"offline publish {run.extra.get('offline_publish_msg_per_s', 0):,.0f} msg/s"
            + (f"\n    ERRORS: {'; '.join(run.errors[:3])}" if run.errors else "")
        )
    return fold(measurement, runs)


# -- command line --------------------------------------------------------------------------


def format_table(measurements: list[Measurement]) -> str:
    header = (
        f"{'measurement':<15} {'rate':>12} {'unit':<9} {'count':>10} {'lost':>6} {'dup':>5} "
        f"{'CPU us/msg':>10} {'broker':>6} {'client':>6} {'target':>10} {'met':>5}"
    )
    lines = [header, "-" * len(header)]
    for m in measurements:
        target = "-" if m.target is None else f"{m.target:,.0f}"
        met = {None: "-", True: "yes", False: "NO"}[m.target_met]
        cpu = "-" if m.broker_cpu_us_per_msg is None else f"{m.broker_cpu_us_per_msg:.2f}"
        client = "-" if m.client_cpu_share is None else f"{m.client_cpu_share:.0%}"
        broker = "-" if m.broker_cpu_share is None else f"{m.broker_cpu_share:.0%}"
        lost = f"{m.lost}!!" if m.lost else "0"
        dup = f"{m.duplicated}!!" if m.duplicated else "0"
        lines.append(
            f"{m.name:<15} {m.rate:>12,.0f} {m.unit:<9} {m.count:>10,} {lost:>6} {dup:>5} "
            f"{cpu:>10} {broker:>6} {client:>6} {target:>10} {met:>5}"
            + ("  FAILED" if m.errors else "")
        )
    return "\n".join(lines)


def ratios(measurements: list[Measurement]) -> list[str]:
    by_name = {m.name: m for m in measurements}
    raw = by_name.get("scan-raw-lmdb")
    storage = by_name.get("read-storage")
    lines = []
    for name in ("replay-engine", "read-engine", "read-storage"):
        m = by_name.get(name)
        if m is None or not m.rate:
            continue
        parts = []
        if storage is not None and storage.rate and name != "read-storage":
            parts.append(f"{m.rate / storage.rate:.2f}x storage read")
        if raw is not None and raw.rate:
            parts.append(f"{m.rate / raw.rate:.2f}x raw LMDB scan")
        lines.append(f"{name}: {', '.join(parts)}")
    return lines


LEGEND = """\
rate: median over the runs. CPU us/msg: replay, this process's CPU per event (the
engine runs in it); catch-up, the tidelog serve process's CPU per message.
broker, client: CPU / wall time of the broker (replay: this process) and of the load
generator (catch-up; near 100% means the client set the rate).
met: the issue-7 target (replay-engine >= 1M events/s, catch-up >= 100k msg/s)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.tidelog_only",
        description="tidelog-only benchmarks: replay throughput, persistent-session catch-up.",
    )
    parser.add_argument("--quick", action="store_true", help="small counts, 1 repeat (smoke)")
    parser.add_argument("--events", type=int, help="events in the replay log (1M; quick 50k)")
    parser.add_argument("--messages", type=int, help="offline messages (1M; quick 20k)")
    parser.add_argument("--repeat", type=int, help="runs per measurement (default 3, quick 1)")
    parser.add_argument("--protocol", type=parse_protocol, default=4, help="3.1.1 (default) or 5")
    parser.add_argument(
        "--only", choices=["replay", "catch-up"], help="run one of the two groups only"
    )
    parser.add_argument("--json", type=Path, help="write the measurements here")
    args = parser.parse_args(argv)
    events = args.events or (50_000 if args.quick else 1_000_000)
    messages = args.messages or (20_000 if args.quick else 1_000_000)
    repeat = args.repeat or (1 if args.quick else 3)

    meta = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "tidelog": PEERS["tidelog"].version(),
        "quick": args.quick,
        "repeat": repeat,
        "events": events,
        "messages": messages,
        "protocol_level": args.protocol,
        "payload_bytes": PAYLOAD_SIZE,
    }
    print(f"tidelog-only benchmark {meta['date']} on {meta['host']}, Python {meta['python']}")
    print(f"{meta['tidelog']}, {repeat} run(s) per measurement, 100-byte payloads", flush=True)

    def emit(line: str) -> None:
        print(line, flush=True)

    measurements: list[Measurement] = []
    if args.only in (None, "replay"):
        measurements += measure_replay(events, repeat, emit)
    if args.only in (None, "catch-up"):
        measurements.append(measure_catch_up(messages, repeat, args.protocol, emit))

    print()
    print(format_table(measurements))
    for line in ratios(measurements):
        print(line)
    print()
    print(LEGEND)
    damaged = [m for m in measurements if m.lost or m.duplicated]
    for m in damaged:
        print(f"!!! {m.name}: lost {m.lost}, duplicated {m.duplicated}")
    failed = [m for m in measurements if m.errors]
    if failed:
        print("\nFAILED MEASUREMENTS:")
        for m in failed:
            print(f"  {m.name}: {'; '.join(m.errors[:3])}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "meta": meta,
            "measurements": [
                {**attrs.asdict(m), "ok": m.ok, "target_met": m.target_met} for m in measurements
            ],
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0 if all(m.ok for m in measurements) else 1


if __name__ == "__main__":
    sys.exit(main())
