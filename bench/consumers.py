"""Consumer groups and webhooks: events/s, beside a NATS JetStream pull consumer.

    python bench/consumers.py [--events 20000] [--members 1,4,16] [--skip-nats] [--repeat N]

Same run, same machine:

* tidelog (embedded engine, LMDB, ``fsync=never``): a single-reader cumulative
  cursor (fetch 500, commit) against an explicit-ack group of 1, 4 and 16 members
  (each fetches 100, then acks those offsets; durable acks, then again with
  ``ack(durable=False)``, not awaited). The group's clock stops at its last
  ack; with ``--repeat N`` each row is the median of N runs, and the process CPU
  per event of the timed phase is shown beside the rate (steadier on a loaded
  machine).
* NATS JetStream (nats-server -js, file store, its default sync): a durable pull
  consumer with explicit acks, the same number of members each ``fetch(100)`` and
  ``ack()`` every message.
* Redelivery after a member dies holding 1,000 leased events (ack wait 2 s):
  tidelog when the member was a connection (an MQTT shared subscription's
  member, a ``/v1/ws`` subscription: its end releases the leases), tidelog when
  its leases must run out (a REST member), and a JetStream pull consumer whose
  member's connection closes (its messages come back after ``AckWait``).
* tidelog webhooks to a local HTTP receiver (h11 on trio, in the same process),
  one event per request and batched (100 and 1,000 per request), one request at
  a time and (``concurrency`` 4) four at once.

Payloads are 100 bytes; events are published before the clock starts.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tidelog  # noqa: E402
from tests.webhooks.receiver import Receiver  # noqa: E402
from tidelog import NewEvent  # noqa: E402
from tidelog.engine.consumers import ConsumerOptions  # noqa: E402
from tidelog.security import Security  # noqa: E402
from tidelog.webhooks import WebhookService, WebhookSpec  # noqa: E402
from tidelog.webhooks.signing import new_secret  # noqa: E402

PAYLOAD = b"x" * 100


async def _fill(broker: tidelog.Broker, count: int) -> None:
    for start in range(0, count, 5000):
        n = min(5000, count - start)
        await broker.publish_many([NewEvent(f"jobs/{i % 8}", PAYLOAD) for i in range(n)])


async def tidelog_single(directory: str, count: int) -> tuple[float, float]:
    async with tidelog.open(f"lmdb://{directory}/single", fsync="never") as broker:
        await _fill(broker, count)
        cursor = await broker.create_cursor("c", "jobs/#", start="earliest")
        began, cpu = time.perf_counter(), time.process_time()
        seen = 0
        while seen < count:
            page = await cursor.fetch(500)
            seen += len(page.events)
            await cursor.commit(page.next_offset)
        return _rate(count, began, cpu)


def _rate(count: int, began: float, cpu: float) -> tuple[float, float]:
    """Events/s and process CPU (us) per event since ``began`` / ``cpu``."""
    return count / (time.perf_counter() - began), (time.process_time() - cpu) / count * 1e6


async def tidelog_group(
    directory: str, count: int, members: int, durable: int = 1
) -> tuple[float, float]:
    """Events/s and CPU us/event until every event is acknowledged (the clock stops
    at the last ack, not when the other members' waiting fetches time out).
    ``durable`` 0: acks with ``durable=False`` (not awaited; stored by the next batch)."""
    options = ConsumerOptions(ack_policy="explicit", max_leased=100 * members + 100)
    async with tidelog.open(f"lmdb://{directory}/group{members}", fsync="never") as broker:
        await _fill(broker, count)
        cursor = await broker.create_cursor("g", "jobs/#", start="earliest", options=options)
        acked = [0]
        began, cpu = time.perf_counter(), time.process_time()
        result = (0.0, 0.0)

        async def member(name: str, nursery: trio.Nursery) -> None:
            nonlocal result
            while True:
                page = await cursor.fetch(100, 0.2, member=name)
                if page.events:
                    offsets = [e.offset for e in page.events]
                    done = await cursor.ack(offsets, durable=bool(durable))
                    acked[0] += done  # after the await: other members add meanwhile
                    if acked[0] >= count:
                        result = _rate(count, began, cpu)
                        nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            for n in range(members):
                nursery.start_soon(member, f"m{n}", nursery)
        return result


async def tidelog_webhook(count: int, batch: int, concurrency: int = 1) -> float:
    receiver = Receiver()
    async with tidelog.open("memory://") as broker, trio.open_nursery() as nursery:
        await nursery.start(receiver.serve)
        await _fill(broker, count)
        service = WebhookService(broker, Security.open())
        await nursery.start(service.run)
        spec = {
            "url": receiver.url,
            "secret": new_secret(),
            "start": "earliest",
            "batch": batch,
            "concurrency": concurrency,
        }
        began = time.perf_counter()
        await service.put(WebhookSpec.from_dict("bench", "anonymous", spec))
        while service.get("anonymous", "bench")[1].delivered < count:
            await trio.sleep(0.01)
        rate = count / (time.perf_counter() - began)
        nursery.cancel_scope.cancel()
    return rate


async def tidelog_redelivery(directory: str, count: int, ack_wait: float, release: bool) -> float:
    """Seconds from member ``a``'s death (holding ``count`` leased events) until member
    ``b`` has received every one of them. ``release``: ``a`` was a connection (MQTT
    shared subscription, ``/v1/ws``) whose end releases its leases; otherwise (a REST
    member) its leases run out after ``ack_wait``."""
    options = ConsumerOptions(ack_policy="explicit", ack_wait=ack_wait, max_leased=count)
    name = f"redeliver{int(release)}"
    async with tidelog.open(f"lmdb://{directory}/{name}", fsync="never") as broker:
        await _fill(broker, count)
        cursor = await broker.create_cursor("g", "jobs/#", start="earliest", options=options)
        held = {e.offset for e in (await cursor.fetch(count, member="a")).events}
        assert len(held) == count
        began = time.perf_counter()
        if release:
            await cursor.release("a")
        got: list[int] = []
        while len(got) < count:
            page = await cursor.fetch(100, ack_wait + 5, member="b")
            got += [e.offset for e in page.events]
            await cursor.ack([e.offset for e in page.events])
        elapsed = time.perf_counter() - began
        assert sorted(got) == sorted(held), "lost or duplicated"
        return elapsed


def nats_redelivery(count: int, ack_wait: float) -> float | None:
    """The same with a JetStream pull consumer: member ``a`` fetches ``count`` messages
    and its connection closes without acking; seconds until ``b`` has them all."""
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    try:
        import nats  # noqa: F401
    except ImportError:
        return None
    if not Path(binary).exists():
        return None
    port = _free_port()
    with tempfile.TemporaryDirectory() as store:
        server = subprocess.Popen(
            [binary, "-js", "-sd", store, "-a", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            return asyncio.run(_nats_redelivery(port, count, ack_wait))
        finally:
            server.terminate()
            server.wait()


async def _nats_redelivery(port: int, count: int, ack_wait: float) -> float:
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig

    async def connect() -> object:
        for _ in range(600):
            try:
                return await nats.connect(f"nats://127.0.0.1:{port}")
            except Exception:
                await asyncio.sleep(0.05)
        raise RuntimeError("nats-server did not start")

    nc_a, nc_b = await connect(), await connect()
    js_a = nc_a.jetstream()  # type: ignore[attr-defined]
    await js_a.add_stream(name="JOBS", subjects=["jobs.>"])
    await asyncio.gather(*(js_a.publish(f"jobs.{i % 8}", PAYLOAD) for i in range(count)))
    config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=ack_wait, max_ack_pending=count)
    sub_a = await js_a.pull_subscribe("jobs.>", durable="workers", config=config)
    held: set[int] = set()
    while len(held) < count:
        held |= {m.metadata.sequence.stream for m in await sub_a.fetch(count, timeout=5)}
    began = time.perf_counter()
    await nc_a.close()  # type: ignore[attr-defined]  # member a dies, acking nothing
    sub_b = await nc_b.jetstream().pull_subscribe(  # type: ignore[attr-defined]
        "jobs.>", durable="workers", config=config
    )
    got: list[int] = []
    while len(got) < count:
        try:
            msgs = await sub_b.fetch(100, timeout=ack_wait + 5)
        except Exception:
            continue
        for msg in msgs:
            got.append(msg.metadata.sequence.stream)
            await msg.ack()
    elapsed = time.perf_counter() - began
    await nc_b.close()  # type: ignore[attr-defined]
    assert sorted(got) == sorted(held), "lost or duplicated"
    return elapsed


def _median(
    repeat: int, run: Callable[..., Awaitable[tuple[float, float]]], directory: str, *args: int
) -> tuple[float, float]:
    """The median rate and median CPU per event of ``repeat`` runs, each in a fresh
    log directory."""
    runs = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(dir=directory) as fresh:
            runs.append(trio.run(run, fresh, *args))
    return statistics.median(r for r, _ in runs), statistics.median(c for _, c in runs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nats_group(count: int, members: int) -> float | None:
    """A JetStream pull consumer with explicit acks; None if nats-server or nats-py is
    missing."""
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    try:
        import nats  # noqa: F401
    except ImportError:
        return None
    if not Path(binary).exists():
        return None
    port = _free_port()
    with tempfile.TemporaryDirectory() as store:
        server = subprocess.Popen(
            [binary, "-js", "-sd", store, "-a", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            return asyncio.run(_nats_run(port, count, members))
        finally:
            server.terminate()
            server.wait()


async def _nats_run(port: int, count: int, members: int) -> float:
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig

    for _ in range(600):
        try:
            nc = await nats.connect(f"nats://127.0.0.1:{port}")
            break
        except Exception:
            await asyncio.sleep(0.05)
    js = nc.jetstream()
    await js.add_stream(name="JOBS", subjects=["jobs.>"])
    pending = []
    for i in range(count):
        pending.append(js.publish(f"jobs.{i % 8}", PAYLOAD))
        if len(pending) == 1000:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)
    config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=100 * members + 100)
    subs = [
        await js.pull_subscribe("jobs.>", durable="workers", config=config) for _ in range(members)
    ]
    seen = [0]
    began = time.perf_counter()

    async def member(sub: object) -> None:
        while seen[0] < count:
            try:
                msgs = await sub.fetch(100, timeout=0.5)  # type: ignore[attr-defined]
            except Exception:
                continue
            seen[0] += len(msgs)
            for msg in msgs:
                await msg.ack()

    await asyncio.gather(*(member(sub) for sub in subs))
    rate = count / (time.perf_counter() - began)
    await nc.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument(
        "--webhook-events", type=int, default=2_000, help="0 skips the webhook rows"
    )
    parser.add_argument("--members", default="1,4,16")
    parser.add_argument("--skip-nats", action="store_true")
    parser.add_argument(
        "--redelivery-wait",
        type=float,
        default=2.0,
        help="ack wait (s) of the redelivery comparison; 0 skips it",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="cursor, group and webhook rows: the median of N runs (noisy machines)",
    )
    args = parser.parse_args()
    members = [int(m) for m in args.members.split(",")]
    with tempfile.TemporaryDirectory() as directory:
        single, single_cpu = _median(args.repeat, tidelog_single, directory, args.events)
        print(
            f"tidelog single-reader cursor     {single:>10,.0f} events/s  "
            f"(CPU {single_cpu:.1f} us/event)"
        )
        for m, durable in [(m, 1) for m in members] + [(m, 0) for m in members]:
            rate, cpu = _median(args.repeat, tidelog_group, directory, args.events, m, durable)
            line = (
                f"tidelog group, {m:>2} members, explicit, "
                f"{'durable acks ' if durable else 'durable=False'} {rate:>10,.0f} events/s  "
                f"({rate / single:.2f}x single reader; CPU {cpu:.1f} us/event, "
                f"{cpu / single_cpu:.2f}x)"
            )
            if not args.skip_nats:
                peer = nats_group(args.events, m) if durable else None
                if peer is not None:
                    line += f"   NATS JetStream pull {peer:>10,.0f}/s  (ratio {rate / peer:.2f})"
            print(line)
    if args.redelivery_wait:
        wait, held = args.redelivery_wait, 1000
        print(f"redelivery of {held} leased events after their member dies (ack wait {wait} s):")
        with tempfile.TemporaryDirectory() as directory:
            for release, how in ((True, "connection member, released"), (False, "leases expire")):
                took = trio.run(tidelog_redelivery, directory, held, wait, release)
                print(f"  tidelog, {how:<30} {took:>7.3f} s")
        if not args.skip_nats:
            peer = nats_redelivery(held, wait)
            if peer is not None:
                print(f"  NATS JetStream pull (AckWait)          {peer:>7.3f} s")
    for batch, concurrency in ((1, 1), (1, 4), (100, 1), (100, 4), (1000, 1)):
        if not args.webhook_events:
            break
        count = args.webhook_events * (1 if batch == 1 else 20)
        runs = []
        for _ in range(args.repeat):
            cpu = time.process_time()
            rate = trio.run(tidelog_webhook, count, batch, concurrency)
            runs.append((rate, (time.process_time() - cpu) / count * 1e6))
        rate = statistics.median(r for r, _ in runs)
        cpu_us = statistics.median(c for _, c in runs)
        print(
            f"tidelog webhook, batch {batch:>4}, concurrency {concurrency} "
            f"{rate:>10,.0f} events/s ({count} events; process CPU {cpu_us:,.0f} us/event, "
            "receiver and publishing included)"
        )


if __name__ == "__main__":
    main()
