"""A link receiver's CPU per event on its own (docs/mesh.md, "The receiver's cost alone").

``bench.mesh_origin`` measures a live link with the origin node and the load
generator on the same cores, so its receiver figure moves with them. Here the
origin is this process speaking the ``$link/`` protocol (as the tests' scripted
origin does): it sends batches the origin's source would send (``--batch`` local
events of 64-byte payloads on 10 topics, encoded once before the run) at
``--rate`` events/s (0: as fast as the receiver's credit allows), and only the
receiver (``tidelog serve``, ``storage.fsync = always``, a ``[[link]]`` pulling
from this process) does real work. The receiver's CPU (all threads, /proc) over
the run, divided by its events, is the figure; compare checkouts by alternating
runs (``--tree`` picks the receiver's code; default: this checkout)::

    PYTHONPATH=$PWD python -m bench.mesh_receiver --events 200000 --rounds 2 --tree ../main
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

import trio

from bench.brokers import HOST, free_port, spawn
from bench.mesh import _connected, _tidelog_argv
from bench.mesh_live import env
from bench.process_stats import ThreadStats, cpu_times, scheduler_delta, scheduler_seconds
from tidelog.mesh import wire
from tidelog.mesh.stream import LinkChannel
from tidelog.protocols.mqtt.decoder import Decoder, Role
from tidelog.protocols.mqtt.encoder import encode
from tidelog.protocols.mqtt.packets import Connack, Connect, Puback
from tidelog.storage.records import Event

IDLE_SECONDS = 2.0
"""How long the receiver's CPU is measured with the link connected and idle first
(what a run's time costs whatever it carries: heartbeats, checkpoints, ``$SYS``)."""
WINDOW = 8
"""The receiver's default link window (``[[link]] window``)."""


def _batches(total: int, batch: int) -> list[tuple[bytes, int]]:
    """The run's ``$link/events`` payloads and the offset after each."""
    out = []
    for first in range(0, total, batch):
        events = [
            Event(o, 1_700_000_000_000, f"tidelog-bench/{o % 10}", b"%064d" % o, 1)
            for o in range(first, min(total, first + batch))
        ]
        out.append((wire.encode_batch(events, "origin", "inc1"), events[-1].offset + 1))
    return out


async def _origin(
    stream: trio.SocketStream,
    batches: list[tuple[bytes, int]],
    rate: float,
    burst: int,
    ready: trio.Event,
    done: trio.Event,
    timing: dict[str, float],
) -> None:
    """The scripted origin: handshake, then (once ``ready``) the batches, ``WINDOW``
    unacknowledged at most, paced at ``rate`` events/s (``burst`` batches back to
    back at each step); ``done`` once the last is
    acknowledged."""
    channel = LinkChannel(stream, Decoder(role=Role.SERVER), 5)
    assert isinstance(await channel.receive(), Connect)
    await channel.send(Connack())
    await channel.receive_publish(wire.HELLO, 10)
    welcome = {"node": "origin", "incarnation": "inc1", "nodes": ["origin"]}
    await channel.send(wire.control(wire.WELCOME, welcome))
    await channel.receive_publish(wire.START, 10)
    await ready.wait()
    packets = [
        encode(wire.events_packet(payload, n % 0xFFFF + 1, after), 5)
        for n, (payload, after) in enumerate(batches)
    ]
    credit = trio.Semaphore(WINDOW)
    acked = 0
    lock = trio.Lock()

    async def send(data: bytes) -> None:
        async with lock:
            await channel.stream.send_all(data)

    async def acknowledgements() -> None:
        nonlocal acked
        while acked < len(packets):
            packet = await channel.receive()
            if isinstance(packet, Puback):
                acked += 1
                credit.release()

    async def heartbeat() -> None:
        while True:  # the receiver releases held PUBACKs at the sender's heartbeat
            await send(encode(wire.control(wire.HEAD, {"head": 0, "first": 0, "sent": None}), 5))
            await trio.sleep(0.05)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(acknowledgements)
        nursery.start_soon(heartbeat)
        start = timing["start"] = time.perf_counter()
        sent_events = 0
        for n, ((_, after), packet) in enumerate(zip(batches, packets, strict=True)):
            await credit.acquire()
            if rate and n % burst == 0:
                due = start + sent_events / rate
                if due > time.perf_counter():
                    await trio.sleep(due - time.perf_counter())
            await send(packet)
            sent_events = after
        while acked < len(packets):
            await trio.sleep(0.001)
        timing["end"] = time.perf_counter()
        nursery.cancel_scope.cancel()
    done.set()


async def run(
    events: int,
    batch: int,
    rate: float,
    burst: int,
    rounds: int,
    tree: str | None,
    threads: bool,
) -> None:
    batches = _batches(events, batch)
    for _ in range(rounds):
        ready, done = trio.Event(), trio.Event()
        timing: dict[str, float] = {}
        with tempfile.TemporaryDirectory(prefix="bench-receiver-") as tmp:
            workdir = Path(tmp)
            async with trio.open_nursery() as nursery:
                serve = partial(
                    _origin, batches=batches, rate=rate, burst=burst, ready=ready, done=done
                )
                listeners = await nursery.start(trio.serve_tcp, partial(serve, timing=timing), 0)
                port = listeners[0].socket.getsockname()[1]
                mqtt, http = free_port(), free_port()
                config = (
                    '[node]\nid = "receiver"\n[[link]]\nname = "origin"\n'
                    f'url = "mqtt://{HOST}:{port}"\npull = ["tidelog-bench/#"]\n'
                    f"window = {WINDOW}\n"
                )
                argv = _tidelog_argv(workdir, "receiver", mqtt, http, config)
                async with spawn(
                    "receiver",
                    argv,
                    workdir,
                    mqtt,
                    env=env() if tree is None else {**env(), "PYTHONPATH": tree},
                ) as receiver:
                    await _connected(http)
                    idle = _times(receiver.pid)
                    await trio.sleep(IDLE_SECONDS)
                    idle_ms = sum(_times(receiver.pid)) - sum(idle)
                    idle_ms *= 1000 / IDLE_SECONDS
                    before = _times(receiver.pid)
                    slices = scheduler_seconds(receiver.pid) or {}
                    ready.set()
                    await done.wait()
                    user, system = (
                        a - b for a, b in zip(_times(receiver.pid), before, strict=True)
                    )
                    after = scheduler_seconds(receiver.pid) or {}
                    ran = scheduler_delta(slices, after)
                    if threads:
                        _print_threads(receiver.pid, slices, after, len(batches))
                nursery.cancel_scope.cancel()
        seconds = timing["end"] - timing["start"]
        print(
            f"receiver {events / seconds:,.0f} events/s; CPU µs per event "
            f"{(user + system) * 1e6 / events:.2f} (user {user * 1e6 / events:.2f}, system "
            f"{system * 1e6 / events:.2f}); {ran[2] / len(batches):.1f} thread wake-ups per batch"
            f"; idle before: {idle_ms:.0f} ms CPU per second"
            f" ({len(batches)} batches of {batch}, offered "
            f"{'unpaced' if not rate else f'{rate:,.0f}/s'}"
            f"{f', {burst} batches at a time' if rate and burst > 1 else ''})",
            flush=True,
        )


def _print_threads(pid: int, before: ThreadStats, after: ThreadStats, batches: int) -> None:
    """Per thread of ``pid``: its name, CPU ms and times put on a CPU per batch."""
    for tid, (run, _, count) in sorted(after.items()):
        run0, _, count0 = before.get(tid, (0, 0, 0))
        name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        print(
            f"  thread {tid} {name}: {(run - run0) / 1e6:.0f} ms, "
            f"{(count - count0) / batches:.2f} times on a CPU per batch"
        )


def _times(pid: int) -> tuple[float, float]:
    times = cpu_times(pid)
    assert times is not None, "the receiver is gone"
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500, help="events per batch")
    parser.add_argument("--rate", type=float, default=40_000, help="events/s offered (0: unpaced)")
    parser.add_argument("--burst", type=int, default=1, help="batches sent back to back")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tree", help="the checkout whose tidelog the receiver runs")
    parser.add_argument("--threads", action="store_true", help="per thread of the receiver")
    args = parser.parse_args(argv)
    trio.run(
        run, args.events, args.batch, args.rate, args.burst, args.rounds, args.tree, args.threads
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
