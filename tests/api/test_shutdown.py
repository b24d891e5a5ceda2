"""`tidelog serve` with the HTTP listener: ready line, and SIGTERM ends streams and
long-polls at once and exits 0 (graceful shutdown does not wait for them)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import trio

ROOT = Path(__file__).resolve().parents[2]


async def test_sigterm_with_open_stream_and_long_poll(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tidelog", "serve", "--storage", f"sqlite://{tmp_path}/log.db",
         "--mqtt-port", "off", "--ws-port", "off", "--http-port", "0"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert process.stderr is not None
        port = None
        for line in process.stderr:
            match = re.search(r"HTTP listening on [\d.]+:(\d+)", line)
            if match:
                port = int(match.group(1))
                break
        assert port is not None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
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
                await trio.sleep(0.5)
                started = time.monotonic()
                process.send_signal(signal.SIGTERM)
                with trio.fail_after(10):
                    while process.poll() is None:
                        await trio.sleep(0.05)
                assert time.monotonic() - started < 5
            assert sorted(ended) == ["poll", "stream"]
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
