"""REST and WebSocket benchmark against a real `tidelog serve` process on 127.0.0.1.

    python bench/rest.py                     # full run, SQLite in a temp dir, fsync always
    python bench/rest.py --quick             # a few seconds, for smoke runs
    python bench/rest.py --storage memory://

The server runs in its own process (as in production: one trio process with
every listener); this process is the load generator: a minimal HTTP/1.1
keep-alive client on trio sockets (one connection per concurrent task; cheaper
per request than httpx, so more of the machine is left to the server) and
trio-websocket. Both share the machine, so the client's own CPU
cost is in every figure.

Measured:

* REST single publish: concurrent tasks each POSTing one 100-byte event at a
  time to ``/v1/topics/{topic}`` (req/s; each answer waits for durability);
* REST batch publish: concurrent tasks POSTing 1,000 events per request to
  ``/v1/events`` (events/s);
* REST replay: one client paging through the log with ``GET /v1/events``,
  10,000 events per page (events/s);
* WebSocket publish: one connection, pipelined, at most 1,000 unacknowledged
  (msgs/s acknowledged), one event per frame and 100 per ``publish_batch`` frame;
* WebSocket consume: one subscription reading the log from ``earliest``
  (history) and one receiving live events while REST batches publish them
  (msgs/s).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio
import trio_websocket

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = b"x" * 100


def start_server(storage: str) -> tuple[subprocess.Popen[str], int, int]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tidelog",
            "serve",
            "--storage",
            storage,
            "--mqtt-port",
            "off",
            "--http-port",
            "0",
            "--ws-port",
            "0",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    ports: dict[str, int] = {}
    assert process.stderr is not None
    for line in process.stderr:
        match = re.search(r"(\w+) listening on [\d.]+:(\d+)", line)
        if match:
            ports[match.group(1)] = int(match.group(2))
        if {"HTTP", "WebSocket"} <= set(ports):
            break
    else:
        raise RuntimeError("the server did not start")
    return process, ports["HTTP"], ports["WebSocket"]


class Http:
    """A minimal HTTP/1.1 keep-alive client for one connection (responses carry a
    Content-Length; reconnects when the server closes, e.g. after 1,000 requests)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stream: trio.SocketStream | None = None
        self.buffer = bytearray()

    async def request(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        content_type: str = "application/octet-stream",
    ) -> tuple[int, bytes]:
        head = (
            f"{method} {target} HTTP/1.1\r\nhost: bench\r\ncontent-type: {content_type}\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        ).encode()
        if self.stream is None:
            self.stream = await trio.open_tcp_stream("127.0.0.1", self.port)
            self.buffer.clear()
        await self.stream.send_all(head + body)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self.buffer += await self.receive()
        header = bytes(self.buffer[:end]).decode("latin-1").lower()
        status = int(header.split(" ", 2)[1])
        length = int(re.search(r"content-length: *(\d+)", header).group(1))  # type: ignore[union-attr]
        need = end + 4 + length
        while len(self.buffer) < need:
            self.buffer += await self.receive()
        content = bytes(self.buffer[end + 4 : need])
        del self.buffer[:need]
        if "connection: close" in header:
            await self.stream.aclose()
            self.stream = None
        return status, content

    async def receive(self) -> bytes:
        assert self.stream is not None
        data = await self.stream.receive_some(1 << 20)
        if not data:
            raise ConnectionError("the server closed the connection")
        return data

    async def aclose(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()


async def run_for(seconds: float, tasks: int, work: Callable[[], Awaitable[int]]) -> float:
    """Run ``tasks`` loops of ``work`` (returning units done) for ``seconds``; units/s."""
    done = [0]
    deadline = trio.current_time() + seconds

    async def loop() -> None:
        while trio.current_time() < deadline:
            units = await work()  # not `done[0] += await ...`: that reads done[0] first
            done[0] += units

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(loop)
    return done[0] / (time.perf_counter() - started)


async def rest_single(port: int, seconds: float, tasks: int) -> float:
    clients = [Http(port) for _ in range(tasks)]
    free = list(clients)

    async def work() -> int:
        client = free.pop()
        try:
            status, content = await client.request("POST", "/v1/topics/bench/single", PAYLOAD)
            assert status == 201, content
        finally:
            free.append(client)
        return 1

    try:
        return await run_for(seconds, tasks, work)
    finally:
        for client in clients:
            await client.aclose()


def batch_body(count: int, topic: str = "bench/batch") -> bytes:
    payload = base64.b64encode(PAYLOAD).decode()
    return json.dumps(
        {"events": [{"topic": f"{topic}/{n % 10}", "payload": payload} for n in range(count)]}
    ).encode()


async def rest_batch(port: int, seconds: float, tasks: int, batch: int = 1000) -> float:
    body = batch_body(batch)
    clients = [Http(port) for _ in range(tasks)]
    free = list(clients)

    async def work() -> int:
        client = free.pop()
        try:
            status, content = await client.request("POST", "/v1/events", body, "application/json")
            assert status == 201, content
        finally:
            free.append(client)
        return batch

    try:
        return await run_for(seconds, tasks, work)
    finally:
        for client in clients:
            await client.aclose()


async def end_offset(port: int) -> int:
    client = Http(port)
    _, content = await client.request("GET", "/v1/stats")
    await client.aclose()
    end: int = json.loads(content)["end_offset"]
    return end


async def rest_replay(port: int, limit: int = 10_000) -> tuple[float, int]:
    end = await end_offset(port)
    client = Http(port)
    offset = 0
    started = time.perf_counter()
    while offset < end:
        status, content = await client.request(
            "GET", f"/v1/events?from_offset={offset}&limit={limit}&max_bytes={16 * 1024 * 1024}"
        )
        assert status == 200
        match = re.search(rb'"next_offset":(\d+)', content[-40:])
        assert match, content[-40:]
        offset = int(match.group(1))
    elapsed = time.perf_counter() - started
    await client.aclose()
    return end / elapsed, end


async def ws_publish(ws_port: int, total: int, window: int = 1000) -> float:
    payload = base64.b64encode(PAYLOAD).decode()
    frame = json.dumps({"type": "publish", "topic": "bench/ws", "payload": payload})
    async with trio_websocket.open_websocket("127.0.0.1", ws_port, "/v1/ws", use_ssl=False) as ws:
        sent = trio.Semaphore(window)
        started = time.perf_counter()

        async def sender() -> None:
            for _ in range(total):
                await sent.acquire()
                await ws.send_message(frame)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            for _ in range(total):
                reply = await ws.get_message()
                assert '"ack"' in reply, reply
                sent.release()
        return total / (time.perf_counter() - started)


async def ws_publish_batch(ws_port: int, total: int, batch: int = 100, window: int = 10) -> float:
    payload = base64.b64encode(PAYLOAD).decode()
    frame = json.dumps(
        {
            "type": "publish_batch",
            "events": [{"topic": f"bench/ws/{n % 10}", "payload": payload} for n in range(batch)],
        }
    )
    frames = total // batch
    async with trio_websocket.open_websocket("127.0.0.1", ws_port, "/v1/ws", use_ssl=False) as ws:
        sent = trio.Semaphore(window)
        started = time.perf_counter()

        async def sender() -> None:
            for _ in range(frames):
                await sent.acquire()
                await ws.send_message(frame)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            for _ in range(frames):
                reply = await ws.get_message()
                assert '"ack"' in reply, reply
                sent.release()
        return frames * batch / (time.perf_counter() - started)


async def ws_consume_history(ws_port: int, total: int) -> float:
    async with trio_websocket.open_websocket("127.0.0.1", ws_port, "/v1/ws", use_ssl=False) as ws:
        started = time.perf_counter()
        await ws.send_message(
            json.dumps(
                {
                    "type": "subscribe",
                    "sub": "h",
                    "filter": "#",
                    "start": "earliest",
                    "credit": 10_000,
                }
            )
        )
        received = 0
        while received < total:
            frame = json.loads(await ws.get_message())
            if frame["type"] == "events":
                received += len(frame["events"])
                await ws.send_message(
                    json.dumps({"type": "credit", "sub": "h", "events": len(frame["events"])})
                )
        return received / (time.perf_counter() - started)


async def ws_consume_live(http_port: int, ws_port: int, total: int, batch: int = 1000) -> float:
    body = batch_body(batch, "bench/live")
    async with trio_websocket.open_websocket("127.0.0.1", ws_port, "/v1/ws", use_ssl=False) as ws:
        await ws.send_message(
            json.dumps(
                {"type": "subscribe", "sub": "l", "filter": "bench/live/#", "credit": 10_000}
            )
        )
        assert json.loads(await ws.get_message())["type"] == "subscribed"
        started = time.perf_counter()

        async def publisher() -> None:
            client = Http(http_port)
            for _ in range(total // batch):
                status, _ = await client.request("POST", "/v1/events", body, "application/json")
                assert status == 201
            await client.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(publisher)
            received = 0
            while received < total // batch * batch:
                frame = json.loads(await ws.get_message())
                if frame["type"] == "events":
                    received += len(frame["events"])
                    await ws.send_message(
                        json.dumps({"type": "credit", "sub": "l", "events": len(frame["events"])})
                    )
        return received / (time.perf_counter() - started)


async def main(storage: str, quick: bool) -> None:
    seconds = 2.0 if quick else 10.0
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite://{tmp}/bench.db" if storage == "sqlite" else storage
        process, http_port, ws_port = start_server(url)
        try:
            print(f"storage {url}; server pid {process.pid}; {os.cpu_count()} CPUs shared")
            for tasks in (1, 16):
                rate = await rest_single(http_port, seconds, tasks)
                print(f"REST single publish, {tasks:2d} concurrent: {rate:10,.0f} req/s")
            for tasks in (1, 4):
                rate = await rest_batch(http_port, seconds, tasks)
                print(
                    f"REST batch publish (1000/request), {tasks} concurrent: {rate:10,.0f} events/s"
                )
            rate, events = await rest_replay(http_port)
            print(f"REST replay (10000/page), {events:,} events: {rate:10,.0f} events/s")
            total = 20_000 if quick else 100_000
            rate = await ws_publish(ws_port, total)
            print(f"WebSocket publish (window 1000), {total:,}: {rate:10,.0f} msgs/s")
            rate = await ws_publish_batch(ws_port, total)
            print(
                f"WebSocket publish_batch (100/frame, window 10), {total:,}: {rate:10,.0f} msgs/s"
            )
            total = min(events, 100_000 if quick else 500_000)
            rate = await ws_consume_history(ws_port, total)
            print(f"WebSocket consume from the log, {total:,}: {rate:10,.0f} msgs/s")
            total = 20_000 if quick else 200_000
            rate = await ws_consume_live(http_port, ws_port, total)
            print(
                f"WebSocket consume live (REST batch publishing), {total:,}: {rate:10,.0f} msgs/s"
            )
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", default="sqlite", help="sqlite (temp dir) or a storage URL")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    trio.run(main, args.storage, args.quick)
