"""One engine under every protocol: events cross MQTT, REST and the native
WebSocket protocol, on the default LMDB storage."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import pytest
import trio
import trio_websocket

from tests.protocols.mqtt.server_helpers import Client, ServerThread, now_ms, wait_clock_past
from tidelog.server import ServerConfig


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    config = ServerConfig(storage=f"lmdb://{tmp_path}/data", mqtt_port=0, ws_port=0, http_port=0)
    running = ServerThread(config).start()
    try:
        yield running
    finally:
        running.stop()


def ws_receive(port: int, subscribe: dict[str, object], count: int) -> list[dict[str, object]]:
    """Subscribe over /v1/ws and collect ``count`` events (a short trio run of its own)."""

    async def run() -> list[dict[str, object]]:
        events: list[dict[str, object]] = []
        async with trio_websocket.open_websocket("127.0.0.1", port, "/v1/ws", use_ssl=False) as ws:
            await ws.send_message(json.dumps({"type": "subscribe", **subscribe}))
            with trio.fail_after(10):
                while len(events) < count:
                    frame = json.loads(await ws.get_message())
                    if frame["type"] == "events":
                        events.extend(frame["events"])
        return events

    return trio.run(run)


def test_rest_publish_reaches_mqtt_and_websocket(server: ServerThread) -> None:
    http = f"http://127.0.0.1:{server.ports('HTTP')}"
    mqtt = Client(server.ports("MQTT"), version=paho.MQTTv5)
    try:
        mqtt.subscribe("plant/+/temp", qos=1)
        response = httpx.post(
            f"{http}/v1/topics/plant/7/temp",
            content=b"21.5",
            headers={"content-type": "text/plain"},
            params={"qos": 1},
        )
        assert response.status_code == 201, response.text
        offset = response.json()["offset"]
        (message,) = mqtt.receive(1)
        assert (message.topic, message.payload, message.qos) == ("plant/7/temp", b"21.5", 1)
        assert message.properties.ContentType == "text/plain"
        events = ws_receive(
            server.ports("WebSocket"), {"filter": "plant/#", "start": f"offset:{offset}"}, 1
        )
        assert events[0]["offset"] == offset
        assert base64.b64decode(str(events[0]["payload"])) == b"21.5"
    finally:
        mqtt.paho.disconnect()
        mqtt.paho.loop_stop()


def test_mqtt_publish_replayed_by_time_over_rest(server: ServerThread) -> None:
    http = f"http://127.0.0.1:{server.ports('HTTP')}"
    publisher = Client(server.ports("MQTT"))
    try:
        publisher.publish("devices/42/state", b"before", qos=1)  # acknowledged: stamped
        since = now_ms() + 1
        wait_clock_past(since)
        for n in range(3):
            publisher.publish("devices/42/state", f"s{n}".encode(), qos=1)
        publisher.publish("devices/43/state", b"other device", qos=1)
        until = now_ms() + 1  # after every acknowledged (stamped) publish
        response = httpx.get(
            f"{http}/v1/events",
            params={
                "filter": "devices/42/#",
                "from_time": since,
                "to_time": until,
                "encoding": "text",
            },
        )
        assert response.status_code == 200, response.text
        assert [e["payload"] for e in response.json()["events"]] == ["s0", "s1", "s2"]
        by_rfc3339 = httpx.get(
            f"{http}/v1/events",
            params={
                "filter": "devices/42/#",
                "from_time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(since // 1000))
                + f".{since % 1000:03d}Z",
                "encoding": "text",
            },
        )
        assert [e["payload"] for e in by_rfc3339.json()["events"]] == ["s0", "s1", "s2"]
    finally:
        publisher.paho.disconnect()
        publisher.paho.loop_stop()


def test_cursor_made_over_rest_consumed_over_websocket(server: ServerThread) -> None:
    http = f"http://127.0.0.1:{server.ports('HTTP')}"
    publisher = Client(server.ports("MQTT"))
    try:
        for n in range(4):
            publisher.publish(f"orders/{n}", f"order {n}".encode(), qos=1)
    finally:
        publisher.paho.disconnect()
        publisher.paho.loop_stop()
    created = httpx.put(
        f"{http}/v1/cursors/billing", json={"filter": "orders/#", "start": "earliest"}
    )
    assert created.status_code in (200, 201), created.text
    events = ws_receive(server.ports("WebSocket"), {"cursor": "billing", "encoding": "text"}, 4)
    assert [e["payload"] for e in events] == [f"order {n}" for n in range(4)]
