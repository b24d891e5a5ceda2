"""A real server on 127.0.0.1 (ephemeral ports) for the API tests, and clients for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from tidelog.server import RunningServer, ServerConfig, run_server


@pytest.fixture(params=["sqlite", "memory"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/log.db"
    return "memory://"


@pytest.fixture
async def server(nursery: trio.Nursery, storage_url: str) -> RunningServer:
    config = ServerConfig(
        storage=storage_url,
        mqtt_port=None,
        ws_port=0,
        http_port=0,
        http_options={"metrics_cursor_labels": True},  # per-cursor series, checked below
    )
    running: RunningServer = await nursery.start(run_server, config)
    return running


@pytest.fixture
def http_port(server: RunningServer) -> int:
    return server.ports["HTTP"]


@pytest.fixture
def ws_port(server: RunningServer) -> int:
    return server.ports["WebSocket"]


@pytest.fixture
async def client(http_port: int) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=10) as client:
        yield client
