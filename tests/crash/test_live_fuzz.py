"""Many connections send random and mutated MQTT at a live ``tidelog serve``; it
neither crashes nor hangs, and well-behaved clients keep their round trips."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.crash.live_fuzz import run
from tidelog.testing.server import HarnessServer, default_storage

pytestmark = pytest.mark.slow


async def test_hostile_connections_do_not_disturb_good_ones(tmp_path: Path) -> None:
    server = HarnessServer(default_storage(tmp_path), tmp_path / "server.log")
    await server.start()
    try:
        result = await run(server, seconds=8, connections=60, seed=int(time.time()))
        print(result)
        assert server.process is not None and server.process.poll() is None, server.tail()
        assert result.sessions > 200, result
        assert result.round_trips > 20, result
        assert result.slowest_round_trip < 3, result
        assert await server.terminate() == 0, server.tail()
    finally:
        server.kill()
    log = server.log_path.read_text(errors="replace")
    assert "unexpected error" not in log and "Traceback" not in log, log[-5000:]
