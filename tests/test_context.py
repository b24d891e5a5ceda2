"""The server context: every listener gets the broker, security, counters and the
MQTT server from it; nothing is shared through tables keyed by broker, and there
is no open security a listener could fall back to."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

import tidelog
from tests.security.conftest import write_users
from tidelog.context import ServerConfig, ServerContext
from tidelog.protocols.mqtt.server import MQTTServer
from tidelog.security import Security, SecurityConfig
from tidelog.server import RunningServer, run_server
from tidelog.traffic import TrafficCounters


async def test_security_is_required() -> None:
    """Leaving security out is an error, not an open server."""
    async with tidelog.open("memory://") as broker:
        with pytest.raises(TypeError):
            MQTTServer(broker)  # type: ignore[call-arg]
        mqtt = MQTTServer(broker, Security.open())
        with pytest.raises(TypeError):
            ServerContext(  # type: ignore[call-arg]
                config=ServerConfig(), broker=broker, mqtt=mqtt, traffic=TrafficCounters()
            )


def test_open_security_is_explicit_and_open() -> None:
    security = Security.open()
    assert security.anonymous and not security.authenticates
    assert security.anonymous_principal().user is None


async def _connect_mqtt(port: int) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    # CONNECT, MQTT 3.1.1, clean session, keep alive 60, client id "c"
    await stream.send_all(b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01c")
    assert (await stream.receive_some(4))[:2] == b"\x20\x02"  # CONNACK
    return stream


async def test_two_servers_in_one_process_share_nothing(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Each server's listeners use their own security and counters: in one process,
    one server refuses anonymous clients while the other lets them in, and a client
    of one is counted by that one only."""
    open_server: RunningServer = await nursery.start(
        run_server, ServerConfig(storage="memory://", mqtt_port=0, ws_port=None, http_port=0)
    )
    closed_server: RunningServer = await nursery.start(
        run_server,
        ServerConfig(
            storage="memory://",
            mqtt_port=0,
            ws_port=None,
            http_port=0,
            security=SecurityConfig(
                allow_anonymous=False, password_file=str(write_users(tmp_path))
            ),
        ),
    )
    stream = await _connect_mqtt(open_server.ports["MQTT"])
    async with httpx.AsyncClient(timeout=10) as client:
        opened = await client.get(f"http://127.0.0.1:{open_server.ports['HTTP']}/v1/stats")
        closed = await client.get(f"http://127.0.0.1:{closed_server.ports['HTTP']}/v1/stats")
    assert (opened.status_code, closed.status_code) == (200, 401)
    assert open_server.context.mqtt.connections.keys() == {"c"}
    assert open_server.context.traffic.connections["mqtt"] == 1
    assert closed_server.context.mqtt.connections == {}
    assert closed_server.context.traffic.connections["mqtt"] == 0
    await stream.aclose()
