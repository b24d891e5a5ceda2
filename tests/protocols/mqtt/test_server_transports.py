"""MQTT over WebSocket and over TLS, interoperating with TCP clients."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
import trio
import trio_websocket

from tests.protocols.mqtt.conftest import server_config
from tests.protocols.mqtt.server_helpers import Client, ServerThread, clients
from tidelog.protocols.mqtt import Connack, Connect, Decoder, Pingreq, Pingresp, Role, encode


@pytest.mark.parametrize("version", [paho.MQTTv311, paho.MQTTv5])
def test_websocket_clients_interoperate_with_tcp_clients(
    server: ServerThread, version: int
) -> None:
    ws_port = server.ports("WebSocket")
    with clients(
        Client(ws_port, version=version, transport="websockets"),
        Client(server.port, version=version),
    ) as (ws, tcp):
        ws.subscribe("bridge/#", 1)
        tcp.subscribe("bridge/#", 1)
        tcp.publish("bridge/from-tcp", b"t", 1)
        ws.publish("bridge/from-ws", b"w" * 100_000, 1)  # spans many WebSocket frames
        for client in (ws, tcp):
            got = sorted((m.topic, len(m.payload)) for m in client.receive(2))
            assert got == [("bridge/from-tcp", 1), ("bridge/from-ws", 100_000)]


async def test_websocket_packets_may_span_messages_and_share_them(server: ServerThread) -> None:
    port = server.ports("WebSocket")
    async with trio_websocket.open_websocket(
        "127.0.0.1", port, "/mqtt", use_ssl=False, subprotocols=["mqtt"]
    ) as ws:
        data = encode(Connect("ws-raw", 4), 4) + encode(Pingreq(), 4)
        for i in range(0, len(data), 3):  # a CONNECT cut into 3-byte messages
            await ws.send_message(data[i : i + 3])
        decoder = Decoder(4, role=Role.CLIENT)
        packets: list[object] = []
        with trio.fail_after(10):
            while len(packets) < 2:
                packets.extend(decoder.feed(await ws.get_message()))
        assert isinstance(packets[0], Connack) and isinstance(packets[1], Pingresp)


async def test_websocket_without_the_mqtt_subprotocol_is_rejected(server: ServerThread) -> None:
    port = server.ports("WebSocket")
    with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
        async with trio_websocket.open_websocket("127.0.0.1", port, "/mqtt", use_ssl=False):
            pass
    assert rejected.value.status_code == 400


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[ServerThread, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    config = server_config(tmp_path)
    config.mqtt_tls_port = 0
    config.tls_cert, config.tls_key = str(cert), str(key)
    running = ServerThread(config).start()
    try:
        yield running, cert
    finally:
        running.stop()


def test_tls_clients_interoperate_with_tcp_clients(tls_server: tuple[ServerThread, Path]) -> None:
    server, cert = tls_server
    tls = Client(server.ports("MQTT-TLS"), version=paho.MQTTv5, connect=False)
    tls.paho.tls_set(ca_certs=str(cert), cert_reqs=ssl.CERT_REQUIRED)
    tls.connect()
    with clients(tls, Client(server.port)) as (tls, tcp):
        tls.subscribe("secure/#", 1)
        tcp.publish("secure/x", b"over tcp", 1)
        assert tls.receive()[0].payload == b"over tcp"


def test_tls_listener_runs_only_with_a_certificate(tmp_path: Path) -> None:
    config = server_config(tmp_path)
    config.mqtt_tls_port = 0
    running = ServerThread(config).start()
    try:
        assert running.running is not None
        assert "MQTT-TLS" not in running.running.ports
    finally:
        running.stop()
