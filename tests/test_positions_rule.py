"""One rule for a start at or past the end of the log, in every API (docs/engine.md,
"Positions"): an offset past the next offset is refused; the next offset itself and a
time after the last event are accepted, replay nothing and wait for the next event.

Checked over REST (reads, SSE, cursors), /v1/ws, MQTT replay (5.0 user property and
the 3.1.1 ``$replay/`` form) and the Python API, against one server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket

import tidelog
from tests.protocols.mqtt.server_helpers import Client, RawClient, ServerThread, clients
from tidelog.errors import InvalidPositionError, OffsetOutOfRangeError
from tidelog.protocols.mqtt import Properties as Props
from tidelog.protocols.mqtt import ReasonCode, Suback, Subscribe, Subscription
from tidelog.server import ServerConfig

EVENTS = 3
"""Events in the log before each test: offsets 0..2, the next offset is 3."""
FUTURE = "time:2999-01-01T00:00:00Z"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    config = ServerConfig(storage=f"lmdb://{tmp_path}/data", mqtt_port=0, ws_port=0, http_port=0)
    running = ServerThread(config).start()
    try:
        http = f"http://127.0.0.1:{running.ports('HTTP')}"
        for i in range(EVENTS):
            assert httpx.post(f"{http}/v1/topics/r/{i}", content=b"x").status_code == 201
        yield running
    finally:
        running.stop()


def rest(server: ServerThread) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{server.ports('HTTP')}", timeout=10)


def publish_one(server: ServerThread) -> None:
    with rest(server) as client:
        assert client.post("/v1/topics/r/live", content=b"live").status_code == 201


def test_rest(server: ServerThread) -> None:
    with rest(server) as client:
        refused = client.get("/v1/events", params={"from_offset": EVENTS + 1})
        assert refused.status_code == 400
        assert refused.json()["code"] == "offset_out_of_range"
        assert "past the end" in refused.json()["detail"]
        at_end = client.get("/v1/events", params={"from_offset": EVENTS})
        assert at_end.json() == {"events": [], "next_offset": EVENTS}
        later = client.get("/v1/events", params={"from_time": "2999-01-01T00:00:00Z"})
        assert later.json() == {"events": [], "next_offset": EVENTS}
        # an end bound past the end is fine: it is exclusive
        bounded = client.get("/v1/events", params={"from_offset": 0, "to_offset": 10**6})
        assert len(bounded.json()["events"]) == EVENTS

        stream = client.get("/v1/events/stream", params={"from": f"offset:{EVENTS + 1}"})
        assert (stream.status_code, stream.json()["code"]) == (400, "offset_out_of_range")

        cursor = client.put("/v1/cursors/c", json={"start": f"offset:{EVENTS + 1}"})
        assert (cursor.status_code, cursor.json()["code"]) == (400, "offset_out_of_range")
        cursor = client.put("/v1/cursors/c", json={"start": FUTURE})
        assert (cursor.status_code, cursor.json()["position"]) == (201, EVENTS)
        commit = client.post("/v1/cursors/c/commit", json={"offset": EVENTS + 1})
        assert (commit.status_code, commit.json()["code"]) == (400, "offset_out_of_range")


def ws_frames(server: ServerThread, subscribe: dict[str, Any], then: Any = None) -> list[Any]:
    """Subscribe over /v1/ws; the first frame, and an events frame if ``then`` publishes."""

    async def run() -> list[Any]:
        port = server.ports("WebSocket")
        async with trio_websocket.open_websocket("127.0.0.1", port, "/v1/ws", use_ssl=False) as ws:
            await ws.send_message(json.dumps({"type": "subscribe", "id": 1, **subscribe}))
            with trio.fail_after(10):
                frames = [json.loads(await ws.get_message())]
                if then is not None:
                    await trio.to_thread.run_sync(then)
                    while frames[-1]["type"] != "events":
                        frames.append(json.loads(await ws.get_message()))
        return frames

    return trio.run(run)


def test_websocket(server: ServerThread) -> None:
    (refused,) = ws_frames(server, {"filter": "r/#", "start": f"offset:{EVENTS + 1}"})
    assert (refused["type"], refused["code"], refused["status"]) == (
        "error",
        "offset_out_of_range",
        400,
    )
    for end, start in ((EVENTS, f"offset:{EVENTS}"), (EVENTS + 1, FUTURE)):
        frames = ws_frames(server, {"filter": "r/#", "start": start}, lambda: publish_one(server))
        assert frames[0]["type"] == "subscribed"
        assert frames[0]["position"] == end
        assert [(e["offset"], e["topic"]) for e in frames[-1]["events"]] == [(end, "r/live")]


def test_mqtt_replay(server: ServerThread) -> None:
    raw = RawClient(server.port, 5)
    assert raw.connect("past-end").reason_code == 0
    past = (("replay-from", f"offset:{EVENTS + 1}"),)
    raw.send(Subscribe(1, (Subscription("r/#"),), Props(user_properties=past)))
    suback = raw.expect(Suback)
    assert suback.reason_codes == (ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR,)
    assert "past the end" in (suback.properties.reason_string or "")
    raw.close()
    with clients(Client(server.port)) as (sub,):  # 3.1.1: the $replay/ form
        assert sub.subscribe(f"$replay/offset:{EVENTS + 1}/r/#", 1) == (128,)
        assert sub.subscribe(f"$replay/{FUTURE}/r/#", 1) == (1,)
        assert sub.subscribe(f"$replay/offset:{EVENTS}/r/+", 1) == (1,)
        publish_one(server)
        got = sub.receive(2)  # once from each replay subscription: nothing older
        assert [m.payload for m in got] == [b"live", b"live"]
        assert sub.nothing_more()


async def test_python_api(tmp_path: Path) -> None:
    async with tidelog.open(f"lmdb://{tmp_path}/data") as broker:
        for i in range(EVENTS):
            await broker.publish(f"r/{i}", b"x")
        assert issubclass(OffsetOutOfRangeError, InvalidPositionError)
        with pytest.raises(OffsetOutOfRangeError, match="past the end"):
            await broker.resolve(EVENTS + 1)
        with pytest.raises(OffsetOutOfRangeError):
            async with broker.subscribe("r/#", start=EVENTS + 1):
                pass
        with pytest.raises(OffsetOutOfRangeError):
            async for _ in broker.replay("r/#", start=EVENTS + 1):
                pass
        with pytest.raises(OffsetOutOfRangeError):
            await broker.create_cursor("c", "r/#", start=EVENTS + 1)
        assert await broker.resolve(EVENTS) == EVENTS
        assert await broker.resolve(FUTURE) == EVENTS
        assert [e async for e in broker.replay("r/#", start=FUTURE)] == []
        replayed = [e.offset async for e in broker.replay(None, start=0, end=10**6)]
        assert replayed == list(range(EVENTS))
        async with broker.subscribe("r/#", start=FUTURE) as events:
            await broker.publish("r/live", b"live")
            with trio.fail_after(10):
                first = await events.__anext__()
            assert (first.offset, first.topic) == (EVENTS, "r/live")


def test_documented(tmp_path: Path) -> None:
    """docs/engine.md states the rule the tests above check."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "engine.md").read_text()
    section = text.split("### A start at or past the end", 1)[1].split("\n#", 1)[0]
    assert "offset_out_of_range" in section and "past the end" in section
