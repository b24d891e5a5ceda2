"""Overload: many connections held, a publisher far faster than stalled consumers.

    python -m tidelog.testing.overload connections --count 10000
    python -m tidelog.testing.overload backlog --subscribers 8 --messages 20000

Each command starts its own ``tidelog serve`` (the default backend in a temp
directory) and prints what it measured: connections held, the server's peak
RSS, whether a message still went through. ``tests/crash/test_overload.py``
runs smaller versions in CI, and the file descriptor flood.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

import attrs
import trio

from tidelog.protocols.mqtt import Puback, Publish, encode
from tidelog.testing.mqtt_client import ClientConnection, LoadError, Target, encoded_ack
from tidelog.testing.server import HOST, HarnessServer, default_storage

MEBIBYTE = 1024 * 1024


def rss_bytes(pid: int, field: str = "RssAnon") -> int:
    """Resident memory of a process (Linux /proc): by default anonymous memory only
    (heap and stacks), since LMDB's memory map counts the log's pages the process
    touched as resident file pages (page cache, not the broker's own memory)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for pid {pid}")


async def open_idle_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` TCP connections that never send a byte (non-blocking connects)."""
    sockets = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        code = sock.connect_ex((host, port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            break
        sockets.append(sock)
        if len(sockets) % 50 == 0:
            await trio.sleep(0.01)
    return sockets


_next_id = 0


async def round_trip(
    publisher: ClientConnection,
    subscriber: ClientConnection,
    topic: str,
    payload: bytes,
    timeout: float = 10,
) -> None:
    """Publish QoS 1 and wait until ``subscriber`` receives it (acknowledging deliveries)."""
    global _next_id
    _next_id = _next_id % 65_535 + 1
    with trio.fail_after(timeout):
        await publisher.send(
            encode(Publish(topic, payload, 1, packet_id=_next_id), publisher.level)
        )
        ack = await publisher.expect(Puback)
        if ack.reason_code:
            raise LoadError(f"PUBACK 0x{ack.reason_code:02X}")
        while True:
            for packet in await subscriber.receive_packets():
                if isinstance(packet, Publish):
                    if packet.packet_id is not None:
                        await subscriber.send(
                            encoded_ack(Puback, packet.packet_id, subscriber.level)
                        )
                    if packet.payload == payload:
                        return


@attrs.frozen
class HeldResult:
    connected: int
    seconds: float
    """To open them all."""
    rss_before: int
    peak_rss: int
    delivered: bool

    def __str__(self) -> str:
        return (
            f"{self.connected} connected in {self.seconds:.1f} s, server anonymous RSS "
            f"{self.rss_before / MEBIBYTE:.0f} -> {self.peak_rss / MEBIBYTE:.0f} MiB, "
            f"delivery through the loaded server: {self.delivered}"
        )


async def hold_connections(
    host: str, port: int, count: int, *, hold: float = 2, pid: int | None = None
) -> HeldResult:
    """Open ``count`` MQTT connections (3.1.1, 200 at a time), hold them, check that a
    publish from one reaches a subscriber among them, close them all."""
    target = Target(host, port)
    connections: list[ClientConnection] = []
    rss_before = rss_bytes(pid) if pid else 0
    started = time.monotonic()

    async def open_one(n: int) -> None:
        with contextlib.suppress(LoadError, OSError):  # counted: connected < count
            connections.append(await ClientConnection.open(target, f"held-{n}", 4))

    for first in range(0, count, 200):
        async with trio.open_nursery() as nursery:
            for n in range(first, min(count, first + 200)):
                nursery.start_soon(open_one, n)
    seconds = time.monotonic() - started
    delivered = False
    try:
        if len(connections) >= 2:
            await connections[0].subscribe("held/#", 1)
            try:
                await round_trip(connections[-1], connections[0], "held/t", b"through")
                delivered = True
            except (LoadError, trio.TooSlowError):
                delivered = False
        await trio.sleep(hold)
        peak = rss_bytes(pid) if pid else 0
    finally:
        for connection in connections:
            await connection.stream.aclose()
    return HeldResult(len(connections), seconds, rss_before, peak, delivered)


@attrs.frozen
class BacklogResult:
    subscribers: int
    messages: int
    payload: int
    publish_seconds: float
    catch_up_seconds: float
    rss_before: int
    peak_rss: int
    delivered_everything: bool

    def __str__(self) -> str:
        mib = self.messages * self.payload / MEBIBYTE
        return (
            f"{self.messages} x {self.payload} B ({mib:.0f} MiB) published in "
            f"{self.publish_seconds:.1f} s past {self.subscribers} stalled subscribers; "
            f"server anonymous RSS {self.rss_before / MEBIBYTE:.0f} -> peak "
            f"{self.peak_rss / MEBIBYTE:.0f} MiB; all caught up from the log in "
            f"{self.catch_up_seconds:.1f} s: {self.delivered_everything}"
        )


async def stalled_subscribers_catch_up(
    server: HarnessServer, *, subscribers: int, messages: int, payload: int
) -> BacklogResult:
    """Subscribers that read nothing while a QoS 1 publisher sends as fast as the
    broker acknowledges; then they read, and must get every message."""
    assert server.process is not None
    pid = server.process.pid
    target = Target(HOST, server.ports["MQTT"])
    subs = []
    for n in range(subscribers):
        connection = await ClientConnection.open(target, f"stalled-{n}", 5)
        await connection.subscribe("backlog/#", 1)
        subs.append(connection)
    publisher = await ClientConnection.open(target, "fast-publisher", 5)
    rss_before = peak = rss_bytes(pid)
    body = bytes(payload - 8)
    window = min(100, publisher.receive_maximum)
    started = time.monotonic()
    in_flight = 0
    sent = 0
    acked = 0
    with trio.fail_after(300):
        while acked < messages:
            batch = []
            while sent < messages and in_flight < window:
                publish = Publish(
                    "backlog/t", sent.to_bytes(8, "big") + body, 1, packet_id=sent % 65_535 + 1
                )
                batch.append(encode(publish, 5))
                sent += 1
                in_flight += 1
            if batch:
                await publisher.send(b"".join(batch))
            for packet in await publisher.receive_packets():
                if isinstance(packet, Puback):
                    acked += 1
                    in_flight -= 1
            if acked % 500 == 0:
                peak = max(peak, rss_bytes(pid))
    publish_seconds = time.monotonic() - started
    peak = max(peak, rss_bytes(pid))
    started = time.monotonic()
    complete = 0

    async def drain(connection: ClientConnection) -> None:
        nonlocal peak, complete
        seen = bytearray(messages)
        count = 0
        while count < messages:
            replies = []
            for packet in await connection.receive_packets():
                if isinstance(packet, Publish):
                    if packet.packet_id is not None:
                        replies.append(encoded_ack(Puback, packet.packet_id, 5))
                    seq = int.from_bytes(packet.payload[:8], "big")
                    if seq < messages and not seen[seq]:
                        seen[seq] = 1
                        count += 1
            if replies:
                await connection.send(b"".join(replies))
            if count % 1000 == 0:
                peak = max(peak, rss_bytes(pid))
        complete += 1

    with trio.move_on_after(300):
        async with trio.open_nursery() as nursery:
            for connection in subs:
                nursery.start_soon(drain, connection)
    for connection in [*subs, publisher]:
        await connection.stream.aclose()
    return BacklogResult(
        subscribers,
        messages,
        payload,
        publish_seconds,
        time.monotonic() - started,
        rss_before,
        peak,
        complete == subscribers,
    )


async def _main(args: argparse.Namespace) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory(prefix="tidelog-overload-") as tmp:
        server = HarnessServer(default_storage(Path(tmp)), Path(tmp) / "server.log")
        await server.start()
        try:
            assert server.process is not None
            if args.command == "connections":
                result: object = await hold_connections(
                    HOST, server.ports["MQTT"], args.count, hold=args.hold, pid=server.process.pid
                )
            else:
                result = await stalled_subscribers_catch_up(
                    server,
                    subscribers=args.subscribers,
                    messages=args.messages,
                    payload=args.payload,
                )
            print(f"storage {server.storage}: {result}")
            status = await server.terminate()
            print(f"tidelog serve exited {status} on SIGTERM")
        finally:
            server.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tidelog.testing.overload", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    held = commands.add_parser("connections", help="hold many connections")
    held.add_argument("--count", type=int, default=10_000)
    held.add_argument("--hold", type=float, default=5)
    backlog = commands.add_parser("backlog", help="fast publisher, stalled subscribers")
    backlog.add_argument("--subscribers", type=int, default=8)
    backlog.add_argument("--messages", type=int, default=20_000)
    backlog.add_argument("--payload", type=int, default=16 * 1024)
    trio.run(_main, parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
