"""The one ``tidelog serve`` launcher of the tests and benchmarks
(tidelog/testing/server.py): ports from ready lines, a clear error when the
server cannot start, a restart on the same data."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tidelog.testing.server import HarnessServer, ServerNotReady, ServerProcess


def test_a_server_that_exits_is_reported_with_its_output(tmp_path: Path) -> None:
    server = ServerProcess("--storage", "nosuch://x", "--mqtt-port", "0", cwd=tmp_path)
    server.launch()
    with pytest.raises(ServerNotReady, match="nosuch"):
        server.wait_ready(("MQTT",))
    assert not server.running


async def test_restart_on_the_same_ports_and_data(tmp_path: Path) -> None:
    server = HarnessServer(f"sqlite://{tmp_path}/log.db", tmp_path / "server.log")
    await server.start()
    try:
        ports = dict(server.ports)
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.post("/v1/topics/a", content=b"kept")).status_code == 201
        server.kill()
        await server.start(ports["MQTT"], ports["HTTP"])
        assert server.ports == ports
        async with httpx.AsyncClient(base_url=server.url) as client:
            events = (await client.get("/v1/events", params={"encoding": "text"})).json()
        assert [e["payload"] for e in events["events"]] == ["kept"]
        assert await server.terminate() == 0, server.tail()
    finally:
        server.kill()
    log = (tmp_path / "server.log").read_text()
    assert log.count("HTTP listening on") == 2  # both runs, appended
