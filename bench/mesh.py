"""Mesh benchmark: events across one tidelog link, against two mosquitto brokers
joined by a bridge, in the same run (docs/mesh.md, docs/benchmarks.md).

    python -m bench.mesh --messages 20000

Steps, each on fresh brokers in a temporary directory:

1. **ingest**: ``qos1-publish-w1000`` (bench/mqtt_load.py) against the origin
   tidelog alone: the single node's QoS 1 ingest, the target's reference;
2. **catch-up**: a second tidelog starts with a ``[[link]]`` pulling
   ``tidelog-bench/#`` from the origin, which already holds those events (an
   outage that ended): events/s from the first event the receiver appended until
   its log has them all (``catch_up_seconds_with_start`` adds the process start);
3. **live, tidelog** (:mod:`bench.mesh_live`): ``qos1-publish-w1000`` into the
   origin, first with no subscriber (the link alone), then with a QoS 1
   subscriber on the receiver: the link's events/s into the receiver's log (from
   the two logs' timestamps) and the far subscriber's deliveries/s (first to
   last), CPU per event of each process, lost and duplicated messages counted;
4. **latency**: 1,000 QoS 1 messages/s for ``--latency-seconds`` (default 10) into
   the origin, received by a subscriber on the origin and one across the link:
   p50/p99 of each and the latency the link adds (the hop), arrivals taken from the
   kernel's receive timestamps (see :func:`_receive_stamped`). The messages go in
   bursts of ten every 10 ms, so a p99 is that of the worst 1% of bursts: 10 s
   (1,000 bursts) puts it on the tenth worst, where 3 s (the default before
   2026-12-03) put it on the third, and one stall of the host moved it;
5. **live, mosquitto**: the same as 3 and 4 through two mosquitto brokers, the
   second with a bridge (``topic tidelog-bench/# in 1``) to the first;
6. **three-hop line**: four fresh tidelogs, each pulling ``tidelog-bench/#`` from
   the one before (``transit`` after the first hop): the live rate of 5. at a
   subscriber three hops from the publisher, and the latency of 4. across them;
7. **outage, mosquitto**: the same pair, its bridge through a TCP proxy that is cut
   while ``--outage`` messages are published into the first broker, then restored:
   what the far subscriber gets of them (mosquitto's default limits, as installed).

``--outage`` (default ``--messages``) is the outage's size: the events the origin
holds when the receiver of step 2 starts, and the messages of step 7; the live
steps use ``--messages``. ``--only latency`` runs the latency steps alone (one
link, the three-hop line, the mosquitto bridge), each on fresh brokers; ``--only
live`` runs 1-3 and the live rates of 5 and 6, without latency and 7.
``--fsync POLICY`` runs every tidelog with that ``storage.fsync`` (default
``always``). Every run first times synced LMDB commits of one small record in the
brokers' directory (what the disk alone costs a durable append), and each latency
step reports, per broker process, its CPU time, its time waiting for a CPU and
its wake-ups per message (``/proc/<pid>/task/*/schedstat``).

Prints one line per step and the same-run ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import socket
import struct
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import trio

from bench.brokers import HOST, Mosquitto, RunningBroker, free_port, spawn
from bench.disk_probe import describe, format_probe, lmdb_commit_latency
from bench.mesh_live import FILTER, appended_at, count_at, head, link_alone, live, load, rate_of
from bench.mesh_live import env as _env
from bench.process_stats import (
    ThreadStats,
    process_cpu_seconds,
    scheduler_delta,
    scheduler_seconds,
)
from tidelog.protocols.mqtt import Packet, Puback, Publish
from tidelog.testing.mqtt_client import ClientConnection, Target, encoded_ack


def _tidelog_argv(
    workdir: Path, name: str, mqtt: int, http: int, config: str, fsync: str | None = None
) -> list[str]:
    """``tidelog serve`` on an LMDB log in ``workdir``; ``fsync``: its
    ``storage.fsync`` policy (default: the server's, ``always``)."""
    (workdir / f"{name}.toml").write_text(config)
    return [
        sys.executable,
        "-m",
        "tidelog",
        "serve",
        "--config",
        str(workdir / f"{name}.toml"),
        "--storage",
        f"lmdb://{workdir / name}",
        "--mqtt-port",
        str(mqtt),
        "--http-port",
        str(http),
        "--ws-port",
        "off",
        "--log-level",
        "warning",
        *(["--set", f"storage.fsync={fsync}"] if fsync else []),
    ]


LATENCY_SECONDS = 10.0
"""How long each latency step publishes at 1,000 messages/s (``--latency-seconds``)."""
LATENCY = struct.Struct(">Qd")
"""Latency probes: sequence number and the wall-clock time (``time.time()``) they were
sent at, the clock of the kernel's receive timestamps."""
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
"""Linux: a receive timestamp (``struct timespec``, CLOCK_REALTIME) with each read."""
TIMESPEC = struct.Struct("@qq")
STAMPED_READ_BYTES = 256
"""Latency subscribers read this little at a time: a read's timestamp is the arrival
of the newest data it returns, so small reads keep it close to each message's own
(as far as the kernel allows: segments queued while nobody reads are merged, and
carry the latest arrival)."""


async def _receive_stamped(client: ClientConnection) -> tuple[list[Packet], float]:
    """The next packets and when the kernel received them (``SO_TIMESTAMPNS``; TCP
    reports the newest segment of what was read): a subscriber that runs late (the
    benchmark's own process waiting for a CPU on a loaded machine) does not add its
    delay to the broker's. Falls back to the time of the read."""
    sock = client.stream.socket
    while True:
        data, ancillary, _, _ = await sock.recvmsg(
            STAMPED_READ_BYTES, socket.CMSG_SPACE(TIMESPEC.size)
        )
        stamp = time.time()
        if not data:
            raise ConnectionError(f"{client.client_id}: the broker closed the connection")
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = TIMESPEC.unpack_from(value)
                stamp = seconds + nanoseconds / 1e9
        packets = client.decoder.feed(data)
        if packets:
            return packets, stamp


def _percentiles(out: dict[str, float], name: str, values: list[float]) -> None:
    values.sort()
    if values:
        out[f"{name}_p50_ms"] = values[len(values) // 2] * 1000
        out[f"{name}_p99_ms"] = values[min(len(values) - 1, int(len(values) * 0.99))] * 1000


async def _latency(
    origin: int,
    far: int,
    rate: int,
    seconds: float,
    pids: dict[str, int] | None = None,
    https: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Publish ``rate`` QoS 1 messages/s into the origin for ``seconds``, received by a
    QoS 1 subscriber on the origin and one on the far node: p50/p99 of each (sent to
    received by the kernel, see :func:`_receive_stamped`), and the latency the link adds:
    ``hop_*`` the far percentile minus the origin's, ``each_hop_*`` the percentiles of
    each message's far minus origin arrival. ``pids``: broker processes whose
    scheduling over the run is reported per message in ``nodes`` (see
    :func:`_per_message`); ``https``: tidelogs (name -> HTTP port) whose group
    commits over the run are reported in ``commits`` (see :func:`_commits`)."""
    arrivals: dict[str, dict[int, float]] = {"origin": {}, "far": {}}
    total = int(rate * seconds)

    async def watch(name: str, port: int, ready: trio.Event) -> None:
        client = await ClientConnection.open(Target(HOST, port), f"bench-lat-{name}", 4)
        client.stream.socket.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        await client.subscribe("tidelog-bench/lat/#", 1)
        ready.set()
        seen = arrivals[name]
        try:
            while len(seen) < total:
                packets, stamp = await _receive_stamped(client)
                acks = bytearray()
                for packet in packets:
                    if isinstance(packet, Publish):
                        seq, sent = LATENCY.unpack_from(packet.payload)
                        seen[seq] = stamp - sent
                        if packet.packet_id is not None:
                            acks += encoded_ack(Puback, packet.packet_id, 4)
                if acks:
                    await client.send(acks)
        finally:
            await client.close()

    from tidelog.protocols.mqtt import encode

    async with trio.open_nursery() as nursery:
        for name, port in (("origin", origin), ("far", far)):
            ready = trio.Event()
            nursery.start_soon(watch, name, port, ready)
            await ready.wait()
        publisher = await ClientConnection.open(Target(HOST, origin), "bench-lat-pub", 4)
        step = 0.01  # a hundred sends a second: rate/100 messages each
        per_step = max(1, int(rate * step))
        sent = 0

        async def drain() -> None:
            while True:
                await publisher.receive_packets()

        nursery.start_soon(drain)
        # the snapshots first (HTTP requests): the publisher must not start behind its
        # schedule and send a backlog flat out, nor the brokers' /metrics count in it
        commits_before = {name: await _commit_histogram(h) for name, h in (https or {}).items()}
        before = {name: scheduler_seconds(pid) for name, pid in (pids or {}).items()}
        started = trio.current_time()  # trio's clock: sleep_until takes its deadlines
        while sent < total:
            data = bytearray()
            for _ in range(min(per_step, total - sent)):
                sent += 1
                payload = LATENCY.pack(sent, time.time())
                data += encode(Publish("tidelog-bench/lat/x", payload, 1, packet_id=sent), 4)
            await publisher.send(data)
            await trio.sleep_until(started + step * (sent // per_step))
        with trio.move_on_after(30):
            while min(len(v) for v in arrivals.values()) < total:
                await trio.sleep(0.05)
        after = {name: scheduler_seconds(pid) for name, pid in (pids or {}).items()}
        commits = {
            name: _commits(commits_before[name], await _commit_histogram(h))
            for name, h in (https or {}).items()
        }
        nursery.cancel_scope.cancel()
    out: dict[str, Any] = {"nodes": _per_message(before, after, total), "commits": commits}
    for name, seen in arrivals.items():
        _percentiles(out, name, list(seen.values()))
        out[f"{name}_received"] = len(seen)
    near, far_seen = arrivals["origin"], arrivals["far"]
    if near and far_seen:
        out["hop_p50_ms"] = out["far_p50_ms"] - out["origin_p50_ms"]
        out["hop_p99_ms"] = out["far_p99_ms"] - out["origin_p99_ms"]
        _percentiles(out, "each_hop", [far_seen[k] - near[k] for k in far_seen if k in near])
    return out


def _per_message(
    before: dict[str, ThreadStats | None],
    after: dict[str, ThreadStats | None],
    messages: int,
) -> dict[str, dict[str, float]]:
    """Per message published, for each broker process: CPU time (``cpu_us``), time
    runnable but waiting for a CPU (``wait_us``: what the machine's load adds) and
    times a thread was put on a CPU (``wakeups``), from the deltas of
    :func:`~bench.process_stats.scheduler_delta`. The first two add up to what a
    process costs a message's latency on a machine of its own and on this one."""
    out = {}
    for name, start in before.items():
        end = after.get(name)
        if start is not None and end is not None:
            running, waiting, slices = scheduler_delta(start, end)
            out[name] = {
                "cpu_us": running * 1e6 / messages,
                "wait_us": waiting * 1e6 / messages,
                "wakeups": slices / messages,
            }
    return out


COMMIT_BUCKET = "tidelog_commit_duration_seconds_bucket{le="
"""The group commit's duration histogram in ``/metrics`` (cumulative buckets)."""


async def _commit_histogram(http: int) -> dict[str, float]:
    """The cumulative buckets of a tidelog's commit duration histogram (upper bound ->
    commits), with ``count`` and ``sum`` (seconds)."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://{HOST}:{http}/metrics", timeout=10)).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(COMMIT_BUCKET):
            bound, _, value = line[len(COMMIT_BUCKET) :].partition("} ")
            out[bound.strip('"')] = float(value)
        elif line.startswith("tidelog_commit_duration_seconds_count "):
            out["count"] = float(line.split()[-1])
        elif line.startswith("tidelog_commit_duration_seconds_sum "):
            out["sum"] = float(line.split()[-1])
    return out


def _commits(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """The group commits between two :func:`_commit_histogram`: how many, their mean
    and the upper bounds of the buckets holding their p50 and p99 (milliseconds).
    A commit is timed from the writer taking the batch to its end: LMDB's write and
    fsync, and under ``fsync=always`` the hand-offs to the log's writer thread and
    back, with the waits for a CPU in between."""
    count = after.get("count", 0) - before.get("count", 0)
    out = {"count": count}
    if count <= 0:
        return out
    out["mean_ms"] = (after.get("sum", 0) - before.get("sum", 0)) * 1000 / count
    bounds = sorted(
        (float(b), after[b] - before.get(b, 0)) for b in after if b not in ("count", "sum")
    )
    for name, rank in (("p50_le_ms", 0.5), ("p99_le_ms", 0.99)):
        out[name] = next((b * 1000 for b, n in bounds if n >= rank * count), math.inf)
    return out


CATCH_UP_POLL_SECONDS = 0.05
"""How often the catch-up asks the receiver for its head: each ask is an HTTP request
the receiver serves on the same thread as the link (every 5 ms took 5% of it)."""


async def _catch_up(
    http: int, count: int, cpu: dict[str, float] | None = None, timeout: float = 600
) -> float:
    """Events/s of a receiver's catch-up of ``count`` events: from the timestamp its log
    gave the first event to the last's (the link is up: process start, listeners and
    the dial are not the link's rate; a catch-up shorter than a poll is timed too).
    ``cpu``: name -> pid of processes whose CPU time from the first poll that saw
    events to the last is stored back in it, as µs per event caught up meanwhile
    (replacing the pid; left out when the first such poll saw all of them)."""
    started = time.monotonic()
    first: tuple[float, int] | None = None
    pids = dict(cpu or {})
    before: dict[str, float | None] = {}
    client = httpx.AsyncClient()
    while True:
        try:
            now_head = await head(http, client)
        except httpx.TransportError:
            now_head = 0  # the HTTP listener may bind after the MQTT one the spawn waited for
        now = time.monotonic()
        if first is None and now_head > 0:
            first = (now, now_head)
            before = {name: process_cpu_seconds(int(pid)) for name, pid in pids.items()}
        if now_head >= count:
            break
        if now - started > timeout:
            raise TimeoutError(f"the receiver did not reach {count} events in {timeout} s")
        await trio.sleep(CATCH_UP_POLL_SECONDS)
    await client.aclose()
    assert first is not None
    if cpu is not None:
        for name, pid in pids.items():
            del cpu[name]
            start, end = before.get(name), process_cpu_seconds(int(pid))
            if start is not None and end is not None and count > first[1]:
                cpu[name] = round((end - start) * 1e6 / (count - first[1]), 1)
    first_ms, last_ms = await appended_at(http, 0), await appended_at(http, count - 1)
    return (count - 1) / max(1e-3, (last_ms - first_ms) / 1000)


async def run(
    messages: int, outage: int | None = None, only: str | None = None, fsync: str | None = None
) -> dict[str, Any]:
    outage = messages if outage is None else outage
    out: dict[str, Any] = {"messages": messages, "outage": outage, "fsync": fsync or "always"}
    with tempfile.TemporaryDirectory(prefix="bench-mesh-") as tmp:
        workdir = Path(tmp)
        out["disk"] = await _disk(workdir)
        if only == "latency":
            out.update(await _latency_only(workdir, fsync))
            return out
        origin_mqtt, origin_http = free_port(), free_port()
        origin_argv = _tidelog_argv(
            workdir, "origin", origin_mqtt, origin_http, '[node]\nid = "origin"\n', fsync
        )
        async with spawn("origin", origin_argv, workdir, origin_mqtt, env=_env()) as origin:
            before = process_cpu_seconds(origin.pid)
            out["ingest"] = rate_of(await trio.to_thread.run_sync(load, origin.port, outage))
            after = process_cpu_seconds(origin.pid)
            if before is not None and after is not None:
                out["ingest_cpu_us_per_event"] = round((after - before) * 1e6 / outage, 1)
            receiver_mqtt, receiver_http = free_port(), free_port()
            config = (
                '[node]\nid = "receiver"\n[[link]]\nname = "origin"\n'
                f'url = "mqtt://{HOST}:{origin_mqtt}"\npull = ["{FILTER}"]\n'
            )
            receiver_argv = _tidelog_argv(
                workdir, "receiver", receiver_mqtt, receiver_http, config, fsync
            )
            started = time.monotonic()
            async with spawn(
                "receiver", receiver_argv, workdir, receiver_mqtt, env=_env()
            ) as receiver:
                cpu: dict[str, float] = {"receiver": receiver.pid, "origin": origin.pid}
                out["catch_up"] = await _catch_up(receiver_http, outage, cpu)
                out["catch_up_cpu_us_per_event"] = cpu
                out["catch_up_seconds_with_start"] = time.monotonic() - started
                out["catch_up_extra"] = await head(receiver_http) - outage  # appended twice
                pids = {"origin": origin.pid, "receiver": receiver.pid}
                logs = (origin_http, receiver_http)
                out["tidelog_link"] = await link_alone(origin_mqtt, messages, logs, pids)
                out["tidelog_live"] = await live(
                    origin_mqtt, receiver_mqtt, messages, logs=logs, pids=pids
                )
                if only != "live":
                    out["latency"] = await _latency(
                        origin_mqtt,
                        receiver_mqtt,
                        1000,
                        LATENCY_SECONDS,
                        pids,
                        {"origin": origin_http, "receiver": receiver_http},
                    )
        out["line"] = await _line(workdir, messages, fsync, latency=only != "live")
        out["mosquitto_live"] = await _mosquitto_pair(workdir, messages, latency=only != "live")
        if only != "live":
            out["mosquitto_outage"] = await _mosquitto_outage(workdir, outage)
    return out


async def _disk(workdir: Path) -> dict[str, Any]:
    """What the disk under the brokers' logs imposes on a durable append: the
    percentiles of LMDB commits of one small record, each synced (bench/disk_probe.py),
    in the brokers' own directory."""
    latency = await trio.to_thread.run_sync(
        lambda: lmdb_commit_latency(workdir, count=300, max_seconds=2.0)
    )
    return describe(latency)


async def _latency_only(workdir: Path, fsync: str | None = None) -> dict[str, Any]:
    """The latency steps alone (``--only latency``): one link, then the three-hop
    line, each on fresh brokers, without the load steps before them."""
    async with _line_nodes(workdir, "pair", 1, fsync) as nodes:
        one = await _line_latency(nodes)
    async with _line_nodes(workdir, "line", 3, fsync) as nodes:
        three = await _line_latency(nodes)
    mosquitto = await _mosquitto_pair(workdir, 0)
    return {"latency": one, "line": {"latency": three}, "mosquitto_live": mosquitto}


async def _line_latency(nodes: list[_Node]) -> dict[str, Any]:
    """:func:`_latency` from the first node of a line to its last, each node's
    scheduling reported (``origin``, then ``hop-1``, ``hop-2``, ...)."""
    names = ["origin" if i == 0 else f"hop-{i}" for i in range(len(nodes))]
    pids = {name: node.pid for name, node in zip(names, nodes, strict=True)}
    https = {name: node.http for name, node in zip(names, nodes, strict=True)}
    return await _latency(nodes[0].mqtt, nodes[-1].mqtt, 1000, LATENCY_SECONDS, pids, https)


async def _line(
    workdir: Path, messages: int, fsync: str | None = None, *, latency: bool = True
) -> dict[str, Any]:
    """Live rates (no subscriber, then a subscriber on the last) and latency from a
    publisher on the first of four tidelogs in a line (three hops)."""
    async with _line_nodes(workdir, "line", 3, fsync) as nodes:
        logs = (nodes[0].http, nodes[-1].http)
        pids = {f"node {i}": node.pid for i, node in enumerate(nodes)}
        alone = await link_alone(nodes[0].mqtt, messages, logs, pids)
        result = await live(nodes[0].mqtt, nodes[-1].mqtt, messages, logs=logs, pids=pids)
        result["alone"] = alone
        if latency:
            result["latency"] = await _line_latency(nodes)
    return result


class _Node(NamedTuple):
    """A tidelog of a line: its MQTT and HTTP ports, its process id."""

    mqtt: int
    http: int
    pid: int


@contextlib.asynccontextmanager
async def _line_nodes(
    workdir: Path, prefix: str, hops: int, fsync: str | None = None
) -> AsyncIterator[list[_Node]]:
    """``hops + 1`` fresh tidelogs in a line, each pulling ``tidelog-bench/#`` from the
    one before (``transit`` after the first hop), links connected."""
    names = [f"{prefix}-{i}" for i in range(hops + 1)]
    ports = [(free_port(), free_port()) for _ in names]
    nodes: list[_Node] = []
    async with contextlib.AsyncExitStack() as stack:
        for i, name in enumerate(names):
            config = f'[node]\nid = "{name}"\n'
            if i:
                mode = "transit" if i > 1 else "local"
                config += (
                    f'[[link]]\nname = "up"\nurl = "mqtt://{HOST}:{ports[i - 1][0]}"\n'
                    f'pull = ["{FILTER}"]\nmode = "{mode}"\n'
                )
            argv = _tidelog_argv(workdir, name, ports[i][0], ports[i][1], config, fsync)
            broker = await stack.enter_async_context(
                spawn(name, argv, workdir, ports[i][0], env=_env())
            )
            nodes.append(_Node(ports[i][0], ports[i][1], broker.pid))
        for i, (_, http) in enumerate(ports):
            await _connected(http, links=i > 0)
        yield nodes


async def _connected(http: int, timeout: float = 60, *, links: bool = True) -> None:
    """Wait until every link of the node at ``http`` is connected (``links=False``: a
    node without links, until its HTTP listener answers). Either way the node has
    finished starting: its HTTP listener imports its framework on the event loop, a
    second or more of CPU that must not fall into a measurement."""
    with trio.fail_after(timeout):
        async with httpx.AsyncClient() as client:
            while True:
                try:
                    body = (await client.get(f"http://{HOST}:{http}/v1/links", timeout=10)).json()
                    if not links or (
                        body["links"]
                        and all(link["state"] == "connected" for link in body["links"])
                    ):
                        return
                except httpx.TransportError:
                    pass  # the HTTP listener binds after the MQTT one
                await trio.sleep(0.05)


async def _mosquitto_pair(workdir: Path, messages: int, *, latency: bool = True) -> dict[str, Any]:
    peer = Mosquitto("mosquitto", "mosquitto 2", {})
    binary = peer.binary()
    if binary is None:
        return {"unavailable": peer.unavailable()}
    async with peer.start(workdir) as first:
        port = free_port()
        config = workdir / "bridged.conf"
        config.write_text(
            peer.config(port)
            + f"connection origin\naddress {HOST}:{first.port}\ntopic {FILTER} in 1\n"
            "cleansession false\nbridge_protocol_version mqttv311\n"
        )
        async with spawn("mosquitto-bridged", [binary, "-c", str(config)], workdir, port) as b:
            await _bridge_ready(first, b)
            pids = {"origin": first.pid, "bridged": b.pid}
            result = await live(first.port, b.port, messages, pids=pids) if messages else {}
            if latency:
                result["latency"] = await _latency(first.port, b.port, 1000, LATENCY_SECONDS, pids)
            return result


async def _mosquitto_outage(workdir: Path, messages: int) -> dict[str, Any]:
    """Two mosquittos, the bridge through a proxy cut while ``messages`` are published
    into the first: how many of them reach a subscriber on the second."""
    peer = Mosquitto("mosquitto-outage", "mosquitto 2", {})
    binary = peer.binary()
    if binary is None:
        return {"unavailable": peer.unavailable()}
    async with peer.start(workdir) as first, trio.open_nursery() as nursery:
        proxy = _Proxy(first.port)
        await nursery.start(proxy.serve)
        port = free_port()
        config = workdir / "bridged-outage.conf"
        config.write_text(
            peer.config(port)
            + f"connection origin\naddress {HOST}:{proxy.port}\ntopic {FILTER} in 1\n"
            "cleansession false\nbridge_protocol_version mqttv311\nrestart_timeout 1\n"
        )
        async with spawn("mosquitto-outage-bridged", [binary, "-c", str(config)], workdir, port):
            await _bridge_ready(first, RunningBroker("bridged", HOST, port, 0, ""))
            ready, restored = trio.Event(), trio.Event()
            result: dict[str, Any] = {}

            async def count() -> None:
                result.update(await count_at(port, messages, ready, armed=restored))

            async with trio.open_nursery() as counting:
                counting.start_soon(count)
                await ready.wait()
                proxy.cut()
                await trio.to_thread.run_sync(load, first.port, messages)
                proxy.restore()
                restored.set()
        nursery.cancel_scope.cancel()
    return result


class _Proxy:
    """A TCP proxy to ``target`` whose :meth:`cut` closes every connection and refuses
    new ones until :meth:`restore` (the network outage of step 6)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.down = False
        self._scopes: set[trio.CancelScope] = set()

    async def serve(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host=HOST)
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    def cut(self) -> None:
        self.down = True
        for scope in self._scopes:
            scope.cancel()

    def restore(self) -> None:
        self.down = False

    async def _handle(self, client: trio.SocketStream) -> None:
        async with client:
            if self.down:
                return
            with trio.CancelScope() as scope:
                self._scopes.add(scope)
                try:
                    upstream = await trio.open_tcp_stream(HOST, self.target)
                    async with upstream, trio.open_nursery() as nursery:
                        nursery.start_soon(_pump, client, upstream, nursery.cancel_scope)
                        nursery.start_soon(_pump, upstream, client, nursery.cancel_scope)
                except (OSError, trio.BrokenResourceError):
                    pass
                finally:
                    self._scopes.discard(scope)


async def _pump(source: trio.SocketStream, sink: trio.SocketStream, done: trio.CancelScope) -> None:
    try:
        while data := await source.receive_some(65536):
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    done.cancel()


async def _bridge_ready(first: RunningBroker, second: RunningBroker) -> None:
    """Wait until a message published at ``first`` arrives at ``second``."""
    ready = trio.Event()
    probe = await ClientConnection.open(Target(HOST, second.port), "bench-probe", 4)
    await probe.subscribe("tidelog-bench/probe", 0)
    publisher = await ClientConnection.open(Target(HOST, first.port), "bench-probe-pub", 4)
    from tidelog.protocols.mqtt import encode

    with trio.fail_after(20):
        while not ready.is_set():
            await publisher.send(encode(Publish("tidelog-bench/probe", b"x"), 4))
            with trio.move_on_after(0.5):
                for packet in await probe.receive_packets():
                    if isinstance(packet, Publish):
                        ready.set()
    await probe.close()
    await publisher.close()


def _print_nodes(latency: dict[str, Any]) -> None:
    """Each broker's scheduling per message over a latency step (:func:`_per_message`)."""
    nodes = latency.get("nodes")
    if nodes:
        print(
            "  per message, each broker: "
            + "; ".join(
                f"{name} CPU {n['cpu_us']:.0f} µs, waiting for a CPU {n['wait_us']:.0f} µs, "
                f"{n['wakeups']:.2f} wake-ups"
                for name, n in nodes.items()
            )
        )
    commits = {name: c for name, c in latency.get("commits", {}).items() if c.get("count")}
    if commits:
        print(
            "  group commits (write + fsync + thread hand-offs): "
            + "; ".join(
                f"{name} {c['count']:.0f}, mean {c['mean_ms']:.2f} ms, p50 <= "
                f"{c['p50_le_ms']:g} ms, p99 <= {c['p99_le_ms']:g} ms"
                for name, c in commits.items()
            )
        )


def _print_disk(result: dict[str, Any]) -> None:
    disk = result.get("disk", {})
    print(
        f"every tidelog at storage.fsync = {result.get('fsync', 'always')}; the disk alone: "
        + format_probe(disk, "an LMDB commit of one small record, synced,")
    )


def _print_latency(result: dict[str, Any], which: str = "both") -> None:
    """The latency lines: one link (``one``), the three-hop line (``three``) or both."""
    lat = result.get("latency", {})
    if which != "three" and "hop_p99_ms" in lat:
        print(
            f"latency at 1,000 msg/s, QoS 1: origin subscriber p50 {lat['origin_p50_ms']:.1f} "
            f"ms p99 {lat['origin_p99_ms']:.1f} ms; across one link p50 {lat['far_p50_ms']:.1f} "
            f"ms p99 {lat['far_p99_ms']:.1f} ms; added per hop p50 {lat['hop_p50_ms']:.1f} ms "
            f"p99 {lat['hop_p99_ms']:.1f} ms (per message: p50 {lat['each_hop_p50_ms']:.1f} ms "
            f"p99 {lat['each_hop_p99_ms']:.1f} ms)"
        )
        _print_nodes(lat)
    lat3 = result["line"].get("latency", {})
    if which != "one" and "hop_p99_ms" in lat3:
        print(
            f"latency at 1,000 msg/s across three hops: p50 {lat3['far_p50_ms']:.1f} ms p99 "
            f"{lat3['far_p99_ms']:.1f} ms; added by the three hops p50 {lat3['hop_p50_ms']:.1f} "
            f"ms p99 {lat3['hop_p99_ms']:.1f} ms (per message: p50 {lat3['each_hop_p50_ms']:.1f} "
            f"ms p99 {lat3['each_hop_p99_ms']:.1f} ms)"
        )
        _print_nodes(lat3)
    mq = result.get("mosquitto_live", {}).get("latency", {})
    if which != "three" and "hop_p99_ms" in mq:
        print(
            f"mosquitto latency at 1,000 msg/s, QoS 1: first broker's subscriber p50 "
            f"{mq['origin_p50_ms']:.1f} ms p99 {mq['origin_p99_ms']:.1f} ms; across the bridge "
            f"p50 {mq['far_p50_ms']:.1f} ms p99 {mq['far_p99_ms']:.1f} ms; added by the bridge "
            f"p50 {mq['hop_p50_ms']:.1f} ms p99 {mq['hop_p99_ms']:.1f} ms (per message: p50 "
            f"{mq['each_hop_p50_ms']:.1f} ms p99 {mq['each_hop_p99_ms']:.1f} ms); mosquitto "
            "writes nothing to disk per message (persistence false)"
        )
        _print_nodes(mq)


def _live_line(live: dict[str, Any], ingest: float) -> str:
    """One live step: the link's rate (tidelog), the far subscriber's (if any), the
    generator's own, CPU per event and the machine's idle share (bench/mesh_live.py)."""
    parts = []
    if "link_rate" in live:
        link = live["link_rate"]
        parts.append(
            f"link {link:,.0f} events/s into the far log ({link / ingest:.2f}x ingest; the "
            f"origin appended {live['origin_rate']:,.0f}/s meanwhile, the link carried "
            f"{link / live['origin_rate']:.2f}x of that, the far log "
            f"{live['link_behind_ms']} ms behind at the end; "
            f"{live['events_per_batch']:.0f} events per batch)"
        )
    if "rate" in live:
        parts.append(
            f"far QoS 1 subscriber {live['rate']:,.0f} msg/s ({live['rate'] / ingest:.2f}x "
            f"ingest; {live['rate_from_spawn']:,.0f} msg/s timed from the generator's start), "
            f"lost {live['lost']}, duplicated {live['duplicates']}"
        )
    parts.append(_cpu_line(live))
    return "\n    ".join(parts)


def _cpu_line(live: dict[str, Any]) -> str:
    cpu = ", ".join(f"{name} {us:.1f}" for name, us in live.get("cpu_us_per_event", {}).items())
    return (
        f"generator acked {live['ingest_rate']:,.0f} msg/s; CPU µs per event: {cpu}, generator "
        f"{live['generator_cpu_us_per_message']:.1f}; machine idle {live.get('idle', 0):.0%}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mesh", description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--outage", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--fsync",
        metavar="POLICY",
        help="storage.fsync of every tidelog (always, interval:<ms>, never; default always)",
    )
    parser.add_argument(
        "--only",
        choices=("latency", "live"),
        help="run only these steps (latency: one link, 3 hops; live: ingest, catch-up and "
        "the live rates, without latency and the mosquitto outage)",
    )
    parser.add_argument(
        "--latency-seconds",
        type=float,
        default=LATENCY_SECONDS,
        help="how long each latency step publishes (default %(default)s)",
    )
    args = parser.parse_args(argv)
    globals()["LATENCY_SECONDS"] = args.latency_seconds
    result = trio.run(run, args.messages, args.outage, args.only, args.fsync)
    if args.json:
        print(json.dumps(result))
        return 0
    _print_disk(result)
    if args.only == "latency":
        _print_latency(result)
        return 0
    ingest = result["ingest"]
    tl, mq = result["tidelog_live"], result["mosquitto_live"]
    print(f"messages per run: {args.messages}")
    print(
        f"tidelog single-node QoS 1 ingest (qos1-publish-w1000): {ingest:,.0f} msg/s, "
        f"CPU {result.get('ingest_cpu_us_per_event', 0):.1f} µs per event"
    )
    print(
        f"tidelog catch-up across one link after a {result['outage']:,}-event outage: "
        f"{result['catch_up']:,.0f} events/s ({result['catch_up'] / ingest:.2f}x ingest), "
        f"lost 0, duplicated {result['catch_up_extra']} (the receiver's log holds exactly "
        "the origin's events)"
        if result["catch_up_extra"] == 0
        else f"tidelog catch-up: {result['catch_up_extra']} events too many"
    )
    cpu = result.get("catch_up_cpu_us_per_event", {})
    if cpu.get("receiver", 0) and cpu.get("origin", 0):
        print(
            f"  CPU per event caught up: receiver {cpu['receiver']:.1f} µs, origin (sender) "
            f"{cpu['origin']:.1f} µs"
        )
    alone = _live_line(result["tidelog_link"], ingest)
    print(f"tidelog live across one link, no subscriber: {alone}")
    print(f"tidelog live across one link, with a far subscriber: {_live_line(tl, ingest)}")
    _print_latency(result, "one")
    line = result["line"]
    alone = _live_line(line["alone"], ingest)
    print(f"tidelog live along a three-hop line, no subscriber: {alone}")
    print(f"tidelog live along a three-hop line, with a subscriber: {_live_line(line, ingest)}")
    _print_latency(result, "three")
    if "rate" in mq:
        print(
            f"mosquitto live across a bridge: {_live_line(mq, ingest)}; tidelog/mosquitto "
            f"at the far subscriber {tl['rate'] / mq['rate']:.2f}x"
        )
    else:
        print(f"mosquitto: {mq.get('unavailable')}")
    mo = result.get("mosquitto_outage", {})
    if "received" in mo:
        print(
            f"mosquitto bridge across a {result['outage']:,}-message outage: received "
            f"{mo['received']:,}, lost {mo['lost']:,}, duplicated {mo['duplicates']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
