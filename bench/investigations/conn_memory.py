"""What one idle MQTT connection costs the broker, by allocation site.

    python -m bench.investigations.conn_memory --count 1000 [--top 25] [--keep-alive 60]

Runs the server in this process (a thread with its own trio loop, LMDB in a
temp directory), opens ``count`` MQTT 3.1.1 connections from blocking sockets
(CONNECT, wait for CONNACK, then silence), and prints the Python heap grown
per connection (a tracemalloc snapshot diff grouped by source line) and the
growth of the process's anonymous RSS. ``tidelog/testing/overload.py connections``
measures the same thing from outside at 10,000 connections; this one says
where the bytes go.
"""

from __future__ import annotations

import argparse
import resource
import socket
import sys
import tempfile
import time
import tracemalloc

from tests.protocols.mqtt.server_helpers import ServerThread
from tidelog.protocols.mqtt import Connect, encode
from tidelog.server import ServerConfig
from tidelog.testing.overload import rss_bytes


def open_idle(port: int, count: int, keep_alive: int) -> list[socket.socket]:
    """``count`` connected MQTT clients that send nothing after CONNECT."""
    sockets = []
    for n in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(encode(Connect(f"idle-{n}", keep_alive=keep_alive), 4))
        reply = b""
        while len(reply) < 4:
            chunk = sock.recv(4 - len(reply))
            if not chunk:
                raise RuntimeError("closed before CONNACK")
            reply += chunk
        sockets.append(sock)
    return sockets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--keep-alive", type=int, default=60)
    parser.add_argument("--group", choices=("lineno", "filename"), default="lineno")
    parser.add_argument("--no-trace", action="store_true", help="RSS only (no tracemalloc)")
    args = parser.parse_args(argv)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory(prefix="tidelog-connmem-") as tmp:
        config = ServerConfig(
            storage=f"lmdb://{tmp}/log?fsync=always",
            mqtt_port=0,
            ws_port=None,
            http_port=None,
        )
        server = ServerThread(config).start()
        try:
            # warm up: the first connections allocate caches and code paths once
            warm = open_idle(server.port, 50, args.keep_alive)
            time.sleep(0.5)
            if not args.no_trace:
                tracemalloc.start(1)
            before = tracemalloc.take_snapshot() if not args.no_trace else None
            rss_before = rss_bytes(_self_pid())
            started = time.monotonic()
            held = open_idle(server.port, args.count, args.keep_alive)
            seconds = time.monotonic() - started
            time.sleep(1.0)
            rss_after = rss_bytes(_self_pid())
            per = (rss_after - rss_before) / args.count
            print(
                f"{args.count} idle connections opened in {seconds:.2f} s "
                f"({args.count / seconds:.0f}/s, one client at a time); anonymous RSS "
                f"+{(rss_after - rss_before) / 1024:.0f} KiB = {per / 1024:.2f} KiB each "
                "(includes the client sockets' Python objects"
                + ("" if args.no_trace else " and tracemalloc")
                + ")"
            )
            if before is not None:
                after = tracemalloc.take_snapshot()
                stats = after.compare_to(before, args.group)
                total = sum(s.size_diff for s in stats)
                print(f"Python heap: +{total / args.count:.0f} B per connection; top sites:")
                for stat in stats[: args.top]:
                    frame = stat.traceback[0]
                    name = frame.filename.split("site-packages/")[-1].split("wt-conns/")[-1]
                    print(
                        f"  {stat.size_diff / args.count:8.0f} B  "
                        f"{stat.count_diff / args.count:6.2f} blocks  {name}:{frame.lineno}"
                    )
            for sock in held + warm:
                sock.close()
        finally:
            server.stop()
    return 0


def _self_pid() -> int:
    import os

    return os.getpid()


if __name__ == "__main__":
    sys.exit(main())
