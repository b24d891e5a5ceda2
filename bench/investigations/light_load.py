"""Light-load CPU cost per message: tidelog against mosquitto in the same run.

    python -m bench.investigations.light_load --seconds 10 --rounds 2

One QoS 1 publisher sends bursts of ``--burst`` PUBLISHes every ``--interval``
seconds (default 10 every 10 ms: 1,000 msg/s) to a broker with one QoS 1
subscriber on the topic, which acknowledges everything it receives. The
number that matters is the broker's CPU time per message, read from
``/proc/<pid>/task/*/schedstat`` (nanoseconds of run time, every thread)
before and after the send phase: on a loaded machine wall latency measures the
neighbours, CPU time measures the broker. Delivery latency (send to receive,
one process so one clock) is printed too, for what it is worth under load.

Each round starts tidelog (this checkout, LMDB, ``fsync=always``, MQTT only;
see :func:`bench.investigations.same_run.start`) and mosquitto, one after the
other in alternating order, and prints one line per broker and the ratio.
The client is a single thread with blocking sockets and a hand-rolled MQTT
3.1.1 codec (a few bytes per packet), so its own cost stays out of the way.
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.investigations.same_run import ROOT, start

STAMP = struct.Struct(">QQ")  # sequence, monotonic_ns at send


TICK_NS = 1e9 / os.sysconf("SC_CLK_TCK")


def thread_counters(pid: int) -> dict[str, list[float]]:
    """Per live thread of ``pid``, by name: [run ns, kernel ns, voluntary switches].

    Run time comes from ``schedstat`` (nanoseconds), its kernel part from
    ``stat`` (clock ticks: coarse, fine over seconds); voluntary context
    switches (``status``) count the times the thread went to sleep, so each
    is one wake-up.
    """
    threads: dict[str, list[float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            # Python 3.11 does not name its threads for the OS: the main thread is "main",
            # others "python" (the writer thread) unless named (trio's workers are)
            name = "main" if task.name == str(pid) else (task / "comm").read_text().strip()
            ran = int((task / "schedstat").read_text().split()[0])
            stat = (task / "stat").read_text()
            status = (task / "status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        system = int(stat[stat.rindex(")") + 2 :].split()[12]) * TICK_NS
        switches = int(status.split("voluntary_ctxt_switches:")[1].split()[0])
        counters = threads.setdefault(name, [0.0, 0.0, 0.0])
        for i, value in enumerate((ran, system, switches)):
            counters[i] += value
    return threads


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">H", len(raw)) + raw


def _frame(first: int, body: bytes) -> bytes:
    length, header = len(body), bytearray([first])
    while True:
        byte, length = length & 0x7F, length >> 7
        header.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(header) + body


class Reader:
    """Splits a byte stream into (first byte, body) MQTT packets."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def feed(self) -> list[tuple[int, bytes]]:
        data = self.sock.recv(1 << 16)
        if not data:
            raise ConnectionError("broker closed the connection")
        self.buf += data
        packets, pos = [], 0
        while len(self.buf) - pos >= 2:
            length, shift, i, complete = 0, 0, pos + 1, False
            while i < len(self.buf) and not complete:
                byte = self.buf[i]
                length |= (byte & 0x7F) << shift
                shift += 7
                i += 1
                complete = not byte & 0x80
            if not complete or len(self.buf) < i + length:
                break
            packets.append((self.buf[pos], self.buf[i : i + length]))
            pos = i + length
        self.buf = self.buf[pos:]
        return packets

    def wait(self, first: int) -> bytes:
        while True:
            for kind, body in self.feed():
                if kind == first:
                    return body


def connect(port: int, client_id: str) -> tuple[socket.socket, Reader]:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = _string("MQTT") + bytes([4, 0x02]) + struct.pack(">H", 60) + _string(client_id)
    sock.sendall(_frame(0x10, body))
    reader = Reader(sock)
    reader.wait(0x20)
    return sock, reader


def run_load(port: int, pid: int, seconds: float, burst: int, interval: float) -> dict[str, Any]:
    """Drive one broker; its CPU µs per message and delivery latency percentiles."""
    topic = f"light/{os.getpid()}"
    sub, sub_reader = connect(port, f"ll-sub-{os.getpid()}")
    sub.sendall(_frame(0x82, struct.pack(">H", 1) + _string(topic) + b"\x01"))
    sub_reader.wait(0x90)
    pub, pub_reader = connect(port, f"ll-pub-{os.getpid()}")
    head = _string(topic)
    selector = selectors.DefaultSelector()
    selector.register(sub, selectors.EVENT_READ, sub_reader)
    selector.register(pub, selectors.EVENT_READ, pub_reader)
    total = int(seconds / interval) * burst
    latencies: list[int] = []
    acked = 0
    sent = 0
    before = thread_counters(pid)
    started = time.monotonic()
    next_burst = started
    deadline = started + seconds + 30
    while (acked < total or len(latencies) < total) and time.monotonic() < deadline:
        now = time.monotonic()
        if sent < total and now >= next_burst:
            frames = []
            for _ in range(burst):
                sent += 1
                packet_id = sent % 65535 + 1
                payload = STAMP.pack(sent, time.monotonic_ns()) + bytes(16)
                frames.append(_frame(0x32, head + struct.pack(">H", packet_id) + payload))
            pub.sendall(b"".join(frames))
            next_burst += interval
        timeout = max(0.0, next_burst - time.monotonic()) if sent < total else 1.0
        for key, _ in selector.select(timeout):
            reader: Reader = key.data
            acks = []
            for kind, body in reader.feed():
                if kind >> 4 == 4:  # PUBACK to the publisher
                    acked += 1
                elif kind >> 4 == 3:  # PUBLISH to the subscriber
                    at = time.monotonic_ns()
                    offset = 2 + struct.unpack_from(">H", body)[0]
                    ack_id = body[offset : offset + 2]
                    _seq, stamp = STAMP.unpack_from(body, offset + 2)
                    latencies.append(at - stamp)
                    acks.append(_frame(0x40, ack_id))
            if acks:
                reader.sock.sendall(b"".join(acks))
    after = thread_counters(pid)
    bursts = max(1, total // burst)
    threads = {}  # CPU us per message (all, kernel), wake-ups per burst
    for name, (ran, system, switches) in after.items():
        old = before.get(name, [0.0, 0.0, 0.0])
        threads[name] = (
            (ran - old[0]) / 1e3 / total,
            (system - old[1]) / 1e3 / total,
            (switches - old[2]) / bursts,
        )
    cpu = sum(ran - before.get(name, [0.0])[0] for name, (ran, _, _) in after.items())
    for sock in (pub, sub):
        sock.sendall(b"\xe0\x00")
        sock.close()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] / 1e6 if latencies else 0

    return {
        "messages": total,
        "acked": acked,
        "delivered": len(latencies),
        "cpu_us_per_msg": cpu / 1e3 / max(1, total),
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "threads": threads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--port", type=int, default=27000, help="first of consecutive ports")
    parser.add_argument(
        "--brokers",
        default=f"tidelog={ROOT},mosquitto=-",
        help="NAME=TREE,...: a tidelog package directory per name (see same_run), "
        "or a name starting with mosquitto",
    )
    args = parser.parse_args()
    brokers = dict(item.split("=", 1) for item in args.brokers.split(","))
    names = list(brokers)
    for round_ in range(args.rounds):
        order = names if round_ % 2 == 0 else names[::-1]
        results: dict[str, dict[str, Any]] = {}
        for name in order:
            with tempfile.TemporaryDirectory(prefix="light-load-") as tmp:
                port = args.port + names.index(name)
                process = start(name, brokers[name], port, Path(tmp))
                try:
                    time.sleep(1.0)  # let start-up CPU settle before measuring
                    results[name] = run_load(
                        port, process.pid, args.seconds, args.burst, args.interval
                    )
                finally:
                    process.terminate()
                    process.wait(30)
            r = results[name]
            print(
                f"round {round_} {name:10s} cpu/msg {r['cpu_us_per_msg']:7.1f} us  "
                f"p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  "
                f"delivered {r['delivered']}/{r['messages']} acked {r['acked']}  "
                + " ".join(
                    f"[{thread} {us:.1f} us (sys {system:.0f}), {wakeups:.1f} wake-ups/burst]"
                    for thread, (us, system, wakeups) in r["threads"].items()
                    if us >= 0.05
                ),
                flush=True,
            )
        peer = next((n for n in names if n.startswith("mosquitto")), None)
        for name in names:
            if peer is not None and name != peer:
                ratio = results[name]["cpu_us_per_msg"] / results[peer]["cpu_us_per_msg"]
                print(f"round {round_} {name} / {peer} CPU per message: {ratio:.1f}x", flush=True)


if __name__ == "__main__":
    main()
