"""`tidelog serve` with the HTTP listener: ready line, and SIGTERM ends streams and
long-polls at once and exits 0 (graceful shutdown does not wait for them)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import trio

from tidelog.testing.server import ServerProcess


async def test_sigterm_with_open_stream_and_long_poll(tmp_path: Path) -> None:
    server = ServerProcess("--storage", f"sqlite://{tmp_path}/log.db", "--mqtt-port", "off",
                           "--ws-port", "off", "--http-port", "0", cwd=tmp_path)  # fmt: skip
    server.launch()
    try:
        await server.until_ready(("HTTP",))
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            response = await client.post("/v1/topics/a", content=b"kept")
            assert response.status_code == 201
            ended: list[str] = []

            async def long_poll() -> None:
                await client.get("/v1/events", params={"from_offset": 1, "wait_ms": 60_000})
                ended.append("poll")

            async def stream() -> None:
                async with client.stream("GET", "/v1/events/stream") as response:
                    async for _ in response.aiter_lines():
                        pass
                ended.append("stream")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(long_poll)
                nursery.start_soon(stream)
                # both are open in the server: the stream's feed and the waiting read
                await server.until_metric(r"tidelog_feeds 1(\.0)?")
                await server.until_metric(r"tidelog_waiting_reads 1(\.0)?")
                started = time.monotonic()
                with trio.fail_after(10):
                    assert await server.terminate() == 0, server.tail()
                assert time.monotonic() - started < 5
            assert sorted(ended) == ["poll", "stream"]
    finally:
        server.kill()
