"""The live steps of ``bench.mesh``: ``qos1-publish-w1000`` into one broker, a QoS 1
subscriber on another, and what the path between them carries (docs/mesh.md,
"Throughput").

Three rates come out of one run, each over its own span, so that the load
generator's and the subscriber's start and end are not in the link's figure:

* ``rate``: the far subscriber's, from its first delivery to its last (the same
  for mosquitto), which includes the far node's QoS 1 delivery and this process
  reading and acknowledging;
* ``link_rate`` (tidelog): the events that crossed the link(s) per second, from
  the origin's first append to the receiver's last, both taken from the
  timestamps the two logs gave the events (one clock: same machine);
* ``origin_rate``: the origin's own appends per second over the same run (its
  first to its last), and ``ingest_rate``, the generator's acknowledged rate.

The CPU time of each node (all threads, ``/proc``) from the generator's start
to the end of the step is divided by the run's events (``cpu_us_per_event``;
``subscriber``: this process), beside the generator's own count and the
machine's idle share while events flow (``idle``: idle and iowait of all CPUs,
from the first delivery, or the first growth of the far log, to the end;
``steal`` is what the hypervisor took). A node that waits adds no CPU, so the
generator's start does not dilute the per-event figures.

``rate_from_spawn`` is the far subscriber's rate timed as this step did before:
from the generator's start, which includes a Python process importing, encoding
its messages and connecting before its first publish.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import trio

from bench.brokers import HOST, REPO
from bench.process_stats import process_cpu_seconds
from tidelog.protocols.mqtt import Puback, Publish
from tidelog.testing.mqtt_client import ClientConnection, Target, encoded_ack

FILTER = "tidelog-bench/#"
SEQ = struct.Struct(">Q")
"""bench/mqtt_load.py's payloads start with the message's sequence number."""


def env() -> dict[str, str]:
    """The environment of the benchmark's subprocesses: this checkout first."""
    return {**os.environ, "PYTHONPATH": str(REPO)}


def load(port: int, messages: int) -> dict[str, Any]:
    """One ``qos1-publish-w1000`` run (a subprocess, as the suite runs it)."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.mqtt_load",
            "--port",
            str(port),
            "--scenario",
            "qos1-publish-w1000",
            "--messages",
            str(messages),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env=env(),
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def rate_of(result: dict[str, Any]) -> float:
    for key in ("rate", "msgs_per_second", "messages_per_second"):
        if key in result:
            return float(result[key])
    raise KeyError(f"no rate in {result}")


async def head(http: int, client: httpx.AsyncClient | None = None) -> int:
    """The next offset of the log of the tidelog whose HTTP port is ``http``. Pass a
    ``client`` when polling: a new one costs ~80 ms."""
    if client is None:
        async with httpx.AsyncClient() as new:
            return await head(http, new)
    stats = (await client.get(f"http://{HOST}:{http}/v1/stats", timeout=10)).json()
    return int(stats["state"]["next_offset"])


async def appended_at(http: int, offset: int) -> int:
    """The timestamp (ms) the log at ``http`` gave the event at ``offset``."""
    async with httpx.AsyncClient() as client:
        page = (
            await client.get(
                f"http://{HOST}:{http}/v1/events",
                params={"from_offset": offset, "limit": 1},
                timeout=10,
            )
        ).json()
    return int(page["events"][0]["timestamp"])


async def batches_in(http: int) -> tuple[int, int]:
    """(events, batches) the tidelog at ``http`` received over its links so far."""
    async with httpx.AsyncClient() as client:
        links = (await client.get(f"http://{HOST}:{http}/v1/links", timeout=10)).json()["links"]
    return sum(k["events_in"] for k in links), sum(k["batches_in"] for k in links)


def cpu_times() -> tuple[int, int, int]:
    """(all, idle + iowait, steal) ticks of every CPU since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:8]), fields[3] + fields[4], fields[7]


class CpuWindow:
    """CPU time of some processes from :meth:`start` to :meth:`stop`, and the machine's
    idle share from :meth:`busy` (once the path carries events) to :meth:`stop` (each
    a /proc snapshot)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._before: dict[str, float | None] = {}
        self._machine: tuple[int, int, int] = (0, 0, 0)
        self._own = 0.0
        self.seconds: dict[str, float] = {}
        self.idle = self.steal = 0.0

    def start(self) -> None:
        self._before = {name: process_cpu_seconds(pid) for name, pid in self.pids.items()}
        self._own = time.process_time()
        self.busy()

    def busy(self) -> None:
        self._machine = cpu_times()

    def stop(self) -> None:
        for name, pid in self.pids.items():
            before, after = self._before.get(name), process_cpu_seconds(pid)
            if before is not None and after is not None:
                self.seconds[name] = after - before
        self.seconds["subscriber"] = time.process_time() - self._own
        total, idle, steal = (a - b for a, b in zip(cpu_times(), self._machine, strict=True))
        self.idle = idle / max(1, total)
        self.steal = steal / max(1, total)

    def per_event(self, events: int) -> dict[str, float]:
        """µs of CPU per event of each process (``subscriber``: this one)."""
        return {name: round(s * 1e6 / max(1, events), 1) for name, s in self.seconds.items()}


async def count_at(
    port: int,
    expected: int,
    ready: trio.Event,
    idle: float = 15.0,
    armed: trio.Event | None = None,
    on_first: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Subscribe at QoS 1 and count deliveries until ``expected`` arrived (or ``idle``
    seconds pass without one, counted once ``armed`` is set: an outage is not idleness);
    the times of the first read with deliveries (``first_count`` of them) and of the
    last, losses and duplicates. ``on_first`` runs when the first delivery is read."""
    client = await ClientConnection.open(Target(HOST, port), "bench-far-side", 4)
    await client.subscribe(FILTER, 1)
    ready.set()
    seen: set[int] = set()
    duplicates = 0
    first = last = time.monotonic()
    first_count = 0
    try:
        while len(seen) < expected:
            with trio.move_on_after(idle) as scope:
                packets = await client.receive_packets()
            if scope.cancelled_caught:
                if armed is None or armed.is_set():
                    break
                continue
            acks = bytearray()
            for packet in packets:
                if isinstance(packet, Publish):
                    seq = SEQ.unpack_from(packet.payload)[0]
                    if seq in seen:
                        duplicates += 1
                    seen.add(seq)
                    if packet.packet_id is not None:
                        acks += encoded_ack(Puback, packet.packet_id, 4)
            last = time.monotonic()
            if seen and not first_count:
                first, first_count = last, len(seen)
                if on_first is not None:
                    on_first()
            if acks:
                await client.send(acks)
    finally:
        await client.close()
    return {
        "received": len(seen),
        "lost": expected - len(seen),
        "duplicates": duplicates,
        "first": first,
        "first_count": first_count,
        "last": last,
    }


async def live(
    publish_port: int,
    far_port: int,
    messages: int,
    *,
    logs: tuple[int, int] | None = None,
    pids: dict[str, int] | None = None,
) -> dict[str, Any]:
    """``messages`` into ``publish_port``, a QoS 1 subscriber on ``far_port``: the rates
    of the module docs. ``logs``: the HTTP ports of the origin and the far tidelog (for
    ``link_rate``); ``pids``: name -> pid of the processes to measure CPU of."""
    ready = trio.Event()
    result: dict[str, Any] = {}
    window = CpuWindow(pids or {})
    bases = (await head(logs[0]), await head(logs[1])) if logs else None
    before = await batches_in(logs[1]) if logs else (0, 0)

    async def count() -> None:
        result.update(await count_at(far_port, messages, ready, on_first=window.busy))
        window.stop()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(count)
        await ready.wait()
        spawned = time.monotonic()
        window.start()
        generated = await trio.to_thread.run_sync(load, publish_port, messages)
    result["ingest_rate"] = rate_of(generated)
    # what this step reported before: timed from the generator's start (a Python
    # process that imports, encodes its messages and connects before it publishes)
    result["rate_from_spawn"] = result["received"] / max(1e-9, result["last"] - spawned)
    result["generator_cpu_us_per_message"] = round(
        float(generated.get("client_cpu_s", 0.0)) * 1e6 / max(1, messages), 1
    )
    received = result["received"]
    delivered = max(1, received - result["first_count"])
    result["rate"] = delivered / max(1e-9, result["last"] - result["first"])
    result["cpu_us_per_event"] = window.per_event(received)
    result["idle"], result["steal"] = round(window.idle, 3), round(window.steal, 3)
    if logs and bases and received == messages:
        result.update(await _link_rates(logs, bases, messages))
        result["events_per_batch"] = _per_batch(before, result.pop("far_batches_in"))
    return result


async def link_alone(
    publish_port: int, messages: int, logs: tuple[int, int], pids: dict[str, int]
) -> dict[str, Any]:
    """``messages`` into ``publish_port`` with no subscriber anywhere: what the link
    carries into the far log (``logs``: the HTTP ports of the origin and the far
    tidelog) when the far node only appends. CPU (``pids``) is counted from the
    generator's start until the far log has them all (asked every
    :data:`POLL_SECONDS`), the machine's idle share from the first time the far log
    is seen to grow."""
    bases = (await head(logs[0]), await head(logs[1]))
    before = await batches_in(logs[1])
    window = CpuWindow(pids)
    result: dict[str, Any] = {}

    async def watch() -> None:
        growing = False
        async with httpx.AsyncClient() as client:
            while True:
                appended = await head(logs[1], client) - bases[1]
                if appended and not growing:
                    growing = True
                    window.busy()
                if appended >= messages:
                    window.stop()
                    window.seconds.pop("subscriber")  # none: this process only polled
                    result["cpu_us_per_event"] = window.per_event(messages)
                    result["idle"], result["steal"] = round(window.idle, 3), round(window.steal, 3)
                    return
                await trio.sleep(POLL_SECONDS)

    window.start()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        generated = await trio.to_thread.run_sync(load, publish_port, messages)
    result["ingest_rate"] = rate_of(generated)
    result["generator_cpu_us_per_message"] = round(
        float(generated.get("client_cpu_s", 0.0)) * 1e6 / max(1, messages), 1
    )
    result.update(await _link_rates(logs, bases, messages))
    result["events_per_batch"] = _per_batch(before, result.pop("far_batches_in"))
    return result


def _per_batch(before: tuple[int, int], after: tuple[int, int]) -> float:
    return round((after[0] - before[0]) / max(1, after[1] - before[1]), 1)


POLL_SECONDS = 0.2
"""How often :func:`link_alone` asks the far node for its head: an HTTP request it
serves on the link's thread, a millisecond or two of its CPU each (every 50 ms was
1-2 µs per event at 20k events/s). The rates come from the logs' timestamps, not
from these polls."""


async def _link_rates(
    logs: tuple[int, int], bases: tuple[int, int], messages: int
) -> dict[str, Any]:
    """The origin's append rate and the link's (the origin's first append to the far
    log's last), from the timestamps the two logs gave the run's events."""
    batches = await batches_in(logs[1])
    origin_first = await appended_at(logs[0], bases[0])
    origin_last = await appended_at(logs[0], bases[0] + messages - 1)
    far_last = await appended_at(logs[1], bases[1] + messages - 1)
    return {
        "origin_rate": messages * 1000 / max(1, origin_last - origin_first + 1),
        "link_rate": messages * 1000 / max(1, far_last - origin_first + 1),
        "link_behind_ms": far_last - origin_last,
        "far_batches_in": batches,
    }
