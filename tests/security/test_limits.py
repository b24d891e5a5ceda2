"""The record size limit (storage ``max_record_bytes``) on every protocol, and the MQTT
packet size limit (``mqtt_options.max_packet_size``)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import trio
import trio_websocket

from tests.protocols.mqtt.server_helpers import RawClient, ServerThread
from tests.security.conftest import config
from tidelog.protocols.mqtt import Puback, Publish, ReasonCode
from tidelog.server import RunningServer, run_server


async def test_record_too_large_everywhere(nursery: trio.Nursery, tmp_path: Path) -> None:
    server_config = config(tmp_path)
    server_config.storage_options = {"max_record_bytes": 1000}
    running: RunningServer = await nursery.start(run_server, server_config)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.ports['HTTP']}") as http:
        response = await http.post("/v1/topics/big", content=b"x" * 2000)
        assert response.status_code == 413 and response.json()["code"] == "payload_too_large"
        assert (await http.post("/v1/topics/small", content=b"x")).status_code == 201
    async with trio_websocket.open_websocket(
        "127.0.0.1", running.ports["WebSocket"], "/v1/ws", use_ssl=False
    ) as ws:
        payload = base64.b64encode(b"x" * 2000).decode()
        await ws.send_message(json.dumps({"type": "publish", "id": 1, "topic": "big",
                                          "payload": payload}))  # fmt: skip
        with trio.fail_after(10):
            reply = json.loads(await ws.get_message())
        assert (reply["type"], reply["status"]) == ("error", 413)

    def mqtt() -> int:
        client = RawClient(running.ports["MQTT"], 5)
        client.connect("big")
        client.send(Publish("big", b"x" * 2000, 1, packet_id=1))
        code = int(client.expect(Puback).reason_code)
        client.close()
        return code

    code = await trio.to_thread.run_sync(mqtt)
    assert code == ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR  # 0x83 with a reason string


def test_mqtt_packet_too_large(tmp_path: Path) -> None:
    server_config = config(tmp_path)
    server_config.mqtt_options = {"max_packet_size": 1024}
    server = ServerThread(server_config).start()
    try:
        client = RawClient(server.port, 5)
        connack = client.connect("c")
        assert connack.properties.maximum_packet_size == 1024
        client.send(Publish("t", b"x" * 2048, 0))
        from tidelog.protocols.mqtt import Disconnect

        assert client.expect(Disconnect).reason_code == ReasonCode.PACKET_TOO_LARGE
    finally:
        server.stop()
