from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.protocols.mqtt.server_helpers import ServerThread
from tests.storage.backends import ManualClock
from tidelog.server import ServerConfig


def server_config(tmp_path: Path, **mqtt_options: object) -> ServerConfig:
    return ServerConfig(
        storage=f"sqlite://{tmp_path}/log.db",
        mqtt_port=0,
        ws_port=0,
        http_port=None,
        mqtt_options={"session_save_interval": 0.05, **mqtt_options},
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    """A running server on a SQLite log in ``tmp_path`` (MQTT on TCP and WebSocket)."""
    running = ServerThread(server_config(tmp_path)).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def clocked_server(tmp_path: Path, clock: ManualClock) -> Iterator[ServerThread]:
    """Like ``server``, with the broker on ``clock``: the test moves time by hand."""
    config = server_config(tmp_path)
    config.storage_options = {"clock": clock}
    config.broker_options = {"session_expiry_check_seconds": 0.05}  # re-reads the clock
    running = ServerThread(config).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., ServerThread]]:
    """Start a server with MQTT settings of the test's choosing."""
    started: list[ServerThread] = []

    def make(**mqtt_options: object) -> ServerThread:
        running = ServerThread(server_config(tmp_path, **mqtt_options)).start()
        started.append(running)
        return running

    try:
        yield make
    finally:
        for running in started:
            running.stop()
