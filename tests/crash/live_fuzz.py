"""Live-server fuzz: many connections send random and mutated MQTT at a running
``tidelog serve`` while well-behaved clients publish and receive through it.

    python -m tests.crash.live_fuzz --seconds 600 --connections 200

The server must not crash or hang, must log no unexpected error, and the
well-behaved clients' round trips (QoS 1 publish -> PUBACK -> delivery to a
subscriber) must keep completing. ``tests/crash/test_live_fuzz.py`` runs it
for a few seconds.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import attrs
import trio

from tests.protocols.mqtt.corpus import client_packets, connects
from tidelog.protocols.mqtt import Connect, Properties, encode, encode_many
from tidelog.testing.mqtt_client import ClientConnection, Target
from tidelog.testing.overload import round_trip
from tidelog.testing.server import HOST, HarnessServer, default_storage


def seeds() -> list[bytes]:
    """Valid client sessions of every level: CONNECT then a mix of packets."""
    sessions = []
    for level in (3, 4, 5):
        packets = client_packets(level)
        for connect in connects(level):
            sessions.append(encode(connect, level) + encode_many(packets, level))
    return sessions


def mutate(rng: random.Random, data: bytes) -> bytes:
    """A random mutation: flips, inserts, deletions, splices, truncation, or noise."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        choice = rng.random()
        if not buf or choice < 0.1:
            buf += rng.randbytes(rng.randint(1, 64))
        elif choice < 0.4:
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif choice < 0.55:
            buf[rng.randrange(len(buf))] = rng.choice((0, 0x7F, 0x80, 0xFF))
        elif choice < 0.7:
            at = rng.randrange(len(buf))
            del buf[at : at + rng.randint(1, 16)]
        elif choice < 0.85:
            at = rng.randrange(len(buf) + 1)
            buf[at:at] = rng.randbytes(rng.randint(1, 16))
        else:
            buf = buf[: rng.randrange(len(buf) + 1)]
    return bytes(buf)


@attrs.define
class FuzzResult:
    sessions: int = 0
    """Hostile connections opened."""
    bytes_sent: int = 0
    round_trips: int = 0
    slowest_round_trip: float = 0.0
    errors: list[str] = attrs.field(factory=list)


async def hostile(
    target: Target, rng: random.Random, corpus: list[bytes], result: FuzzResult, until: float
) -> None:
    while trio.current_time() < until:
        data = rng.choice(corpus)
        if rng.random() < 0.8:
            data = mutate(rng, data)
        if rng.random() < 0.3:  # a valid CONNECT first gets the state machine past connecting
            level = rng.choice((3, 4, 5))
            connect = Connect(
                f"fuzz-{rng.randrange(50)}",
                protocol_level=level,
                clean_start=rng.random() < 0.5,
                properties=Properties(session_expiry_interval=10) if level == 5 else Properties(),
            )
            data = encode(connect, level) + data[rng.randrange(len(data) + 1) :]
        result.sessions += 1
        try:
            stream = await trio.open_tcp_stream(target.host, target.port)
        except OSError:
            await trio.sleep(0.05)
            continue
        try:
            with trio.move_on_after(rng.uniform(0.05, 1.0)):
                position = 0
                while position < len(data):
                    size = rng.randint(1, max(1, len(data) - position))
                    await stream.send_all(data[position : position + size])
                    result.bytes_sent += size
                    position += size
                    if rng.random() < 0.3:
                        await trio.sleep(0.01)
                if rng.random() < 0.5:  # half read what comes back until the server closes
                    while await stream.receive_some(65_536):
                        pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await stream.aclose()


async def well_behaved(target: Target, result: FuzzResult, until: float) -> None:
    subscriber = await ClientConnection.open(target, "good-sub", 5)
    await subscriber.subscribe("good/#", 1)
    publisher = await ClientConnection.open(target, "good-pub", 4)
    n = 0
    while trio.current_time() < until:
        started = time.monotonic()
        await round_trip(publisher, subscriber, "good/t", f"good {n}".encode(), timeout=5)
        result.slowest_round_trip = max(result.slowest_round_trip, time.monotonic() - started)
        result.round_trips += 1
        n += 1
        await trio.sleep(0.02)
    await publisher.stream.aclose()
    await subscriber.stream.aclose()


async def run(server: HarnessServer, *, seconds: float, connections: int, seed: int) -> FuzzResult:
    target = Target(HOST, server.ports["MQTT"])
    corpus = seeds()
    result = FuzzResult()
    until = trio.current_time() + seconds
    async with trio.open_nursery() as nursery:
        nursery.start_soon(well_behaved, target, result, until)
        for n in range(connections):
            nursery.start_soon(
                hostile, target, random.Random(seed * 100_003 + n), corpus, result, until
            )
    return result


async def _main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="tidelog-live-fuzz-") as tmp:
        server = HarnessServer(default_storage(Path(tmp)), Path(tmp) / "server.log")
        await server.start()
        try:
            result = await run(
                server, seconds=args.seconds, connections=args.connections, seed=args.seed
            )
            status = await server.terminate()
            log = server.log_path.read_text(errors="replace")
        finally:
            server.kill()
    print(f"{result}; exit status {status}; unexpected errors: {log.count('unexpected error')}")
    return 0 if status == 0 and "unexpected error" not in log else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.crash.live_fuzz", description=__doc__)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    return trio.run(_main, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
