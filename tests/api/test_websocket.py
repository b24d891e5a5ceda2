"""The native WebSocket protocol at /v1/ws against a real server, and REST <-> WS.

Cross-protocol tests with MQTT are in tests/test_cross_protocol.py.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
import trio.testing
import trio_websocket

from tidelog.server import RunningServer, ServerConfig, run_server
from tidelog.websocket_listener import MAX_MESSAGE_BYTES


@asynccontextmanager
async def connect(port: int, **kwargs: Any) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    async with trio_websocket.open_websocket(
        "127.0.0.1", port, "/v1/ws", use_ssl=False, **kwargs
    ) as ws:
        yield ws


async def send(ws: trio_websocket.WebSocketConnection, **message: Any) -> None:
    await ws.send_message(json.dumps(message))


async def recv(ws: trio_websocket.WebSocketConnection, timeout: float = 5) -> dict[str, Any]:
    with trio.fail_after(timeout):
        message: dict[str, Any] = json.loads(await ws.get_message())
    return message


async def request(ws: trio_websocket.WebSocketConnection, **message: Any) -> dict[str, Any]:
    await send(ws, **message)
    return await recv(ws)


async def nothing_more(ws: trio_websocket.WebSocketConnection, wait: float = 0.3) -> None:
    with trio.move_on_after(wait):
        message = await ws.get_message()
        raise AssertionError(f"unexpected frame {message!r}")


async def collect_events(
    ws: trio_websocket.WebSocketConnection, count: int
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while len(events) < count:
        frame = await recv(ws)
        assert frame["type"] == "events", frame
        events.extend(frame["events"])
        assert frame["next_offset"] == frame["events"][-1]["offset"] + 1
    return events


async def test_ping_and_subprotocol(ws_port: int) -> None:
    async with connect(ws_port, subprotocols=["tidelog.v1"]) as ws:
        assert ws.subprotocol == "tidelog.v1"
        assert await request(ws, type="ping", id=7) == {"type": "pong", "id": 7, "end_offset": 0}
    async with connect(ws_port) as ws:
        assert ws.subprotocol is None
        assert (await request(ws, type="ping"))["type"] == "pong"


async def test_publish_acks_after_durable(ws_port: int, client: httpx.AsyncClient) -> None:
    async with connect(ws_port) as ws:
        ack = await request(ws, type="publish", id="p1", topic="a/b", payload="aGk=")
        assert ack["type"] == "ack"
        assert (ack["id"], ack["offset"]) == ("p1", 0)
        assert ack["timestamp"] > 0
        ack = await request(
            ws,
            type="publish",
            id=2,
            topic="a/c",
            payload="héllo",
            encoding="text",
            qos=1,
            retain=True,
            properties={"content_type": "text/plain", "user_properties": [["k", "v"]]},
        )
        assert ack["offset"] == 1
        # pipelined publishes are acked in order
        for n in range(50):
            await send(ws, type="publish", id=n, topic="pipe", payload="", encoding="text")
        acks = [await recv(ws) for _ in range(50)]
        assert [a["id"] for a in acks] == list(range(50))
        assert [a["offset"] for a in acks] == list(range(2, 52))
    events = (await client.get("/v1/events", params={"encoding": "text"})).json()["events"]
    assert events[0]["payload"] == "hi"
    assert events[1]["payload"] == "héllo"
    assert (events[1]["qos"], events[1]["retain"]) == (1, True)
    assert events[1]["properties"] == {
        "content_type": "text/plain",
        "user_properties": [["k", "v"]],
    }


async def test_request_errors_keep_the_connection(ws_port: int) -> None:
    async with connect(ws_port) as ws:
        cases: list[tuple[dict[str, Any], int, str]] = [
            ({"type": "publish", "id": 1, "topic": "a/+", "payload": ""}, 400, "invalid_topic"),
            ({"type": "publish", "id": 2, "topic": "a", "payload": "!"}, 422, "invalid_payload"),
            ({"type": "publish", "id": 3, "topic": "a"}, 422, "validation_failed"),
            (
                {"type": "publish", "id": 4, "topic": "a", "payload": "", "qos": 3},
                422,
                "validation_failed",
            ),
            ({"type": "subscribe", "id": 5, "filter": "a/#/b"}, 400, "invalid_topic"),
            ({"type": "subscribe", "id": 6, "start": "soon"}, 400, "invalid_position"),
            ({"type": "subscribe", "id": 7, "cursor": "nope"}, 404, "cursor_not_found"),
            ({"type": "subscribe", "id": 8, "credit": -1}, 422, "validation_failed"),
            ({"type": "credit", "id": 9, "sub": "x", "events": 1}, 404, "unknown_subscription"),
            ({"type": "unsubscribe", "id": 10, "sub": "x"}, 404, "unknown_subscription"),
            ({"type": "commit", "id": 11, "cursor": "nope", "offset": 0}, 404, "cursor_not_found"),
            ({"type": "commit", "id": 12, "offset": 0}, 400, "bad_request"),
            ({"type": "frobnicate", "id": 13}, 400, "unknown_type"),
            ({"type": "ping", "id": 14, "extra": True}, 422, "validation_failed"),
        ]
        for message, status, code in cases:
            reply = await request(ws, **message)
            assert reply["type"] == "error", (message, reply)
            assert (reply["status"], reply["code"]) == (status, code), (message, reply)
            assert reply["id"] == message["id"]
            assert reply["detail"]
        assert (await request(ws, type="ping", id="still"))["id"] == "still"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\x00binary", 1003),
        ("{not json", 1007),
        ("[1, 2]", 1002),
        ('{"no": "type"}', 1002),
        ('{"type": 5}', 1002),
        ("x" * (MAX_MESSAGE_BYTES + 1), 1009),
    ],
)
async def test_protocol_violations_close_only_that_connection(
    ws_port: int, frame: str | bytes, code: int
) -> None:
    async with connect(ws_port) as other:
        async with connect(ws_port) as ws:
            await ws.send_message(frame)
            with trio.fail_after(5), pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason.code == code
        assert (await request(other, type="ping", id=1))["type"] == "pong"


async def test_subscribe_live_receives_rest_publishes(
    ws_port: int, client: httpx.AsyncClient
) -> None:
    await client.post("/v1/topics/old", content=b"before")
    async with connect(ws_port) as ws:
        reply = await request(ws, type="subscribe", id=1, sub="s", filter="live/+", encoding="text")
        assert reply == {
            "type": "subscribed",
            "id": 1,
            "sub": "s",
            "filter": "live/+",
            "position": 1,
            "credit": 1000,
        }
        await client.post("/v1/topics/live/a", content=b"one")
        await client.post("/v1/topics/other", content=b"skip")
        await client.post("/v1/topics/live/b", content=b"\xff")
        events = await collect_events(ws, 2)
        assert [(e["offset"], e["topic"]) for e in events] == [(1, "live/a"), (3, "live/b")]
        assert (events[0]["payload"], events[0]["encoding"]) == ("one", "text")
        assert (events[1]["payload"], events[1]["encoding"]) == (
            base64.b64encode(b"\xff").decode(),
            "base64",
        )


async def test_subscribe_history_then_live_and_unsubscribe(
    ws_port: int, client: httpx.AsyncClient
) -> None:
    batch = [{"topic": f"h/{n}", "payload": "", "encoding": "text"} for n in range(5)]
    await client.post("/v1/events", json={"events": batch})
    async with connect(ws_port) as ws:
        reply = await request(ws, type="subscribe", filter="h/#", start="offset:2")
        assert (reply["sub"], reply["position"]) == ("1", 2)
        await client.post("/v1/topics/h/live", content=b"")
        events = await collect_events(ws, 4)
        assert [e["offset"] for e in events] == [2, 3, 4, 5]
        second = await request(ws, type="subscribe", filter="#", start="earliest")
        assert second["sub"] == "2"
        assert len(await collect_events(ws, 6)) == 6
        dup = await request(ws, type="subscribe", sub="1", filter="#")
        assert (dup["type"], dup["code"]) == ("error", "subscription_exists")
        assert await request(ws, type="unsubscribe", id=9, sub="1") == {
            "type": "unsubscribed",
            "id": 9,
            "sub": "1",
        }
        await client.post("/v1/topics/h/after", content=b"")
        events = await collect_events(ws, 1)  # only subscription "2" is left
        assert events[0]["offset"] == 6


async def test_retained_on_request(ws_port: int, client: httpx.AsyncClient) -> None:
    await client.post("/v1/topics/r/1", content=b"kept", params={"retain": "true"})
    async with connect(ws_port) as ws:
        await request(ws, type="subscribe", filter="r/#", retained=True, encoding="text")
        events = await collect_events(ws, 1)
        assert (events[0]["payload"], events[0]["retain"]) == ("kept", True)


async def test_credit_flow_control(ws_port: int, client: httpx.AsyncClient) -> None:
    async with connect(ws_port) as ws:
        reply = await request(ws, type="subscribe", sub="s", filter="#", credit=2)
        assert reply["credit"] == 2
        batch = [{"topic": "c", "payload": "", "encoding": "text"} for _ in range(5)]
        await client.post("/v1/events", json={"events": batch})
        events = await collect_events(ws, 2)
        assert [e["offset"] for e in events] == [0, 1]
        await nothing_more(ws)
        await send(ws, type="credit", sub="s", events=10)
        events = await collect_events(ws, 3)
        assert [e["offset"] for e in events] == [2, 3, 4]


async def test_a_client_without_credit_costs_bounded_memory(nursery: trio.Nursery) -> None:
    config = ServerConfig(
        storage="memory://",
        mqtt_port=None,
        ws_port=0,
        http_port=0,
        broker_options={"feed_max_events": 50},
    )
    running: RunningServer = await nursery.start(run_server, config)
    broker = running.broker
    async with connect(running.ports["WebSocket"]) as ws:
        await request(ws, type="subscribe", sub="slow", filter="#", credit=0)
        base = f"http://127.0.0.1:{running.ports['HTTP']}"
        async with httpx.AsyncClient(base_url=base) as client:
            for start in range(0, 2000, 500):
                batch = [
                    {"topic": "load", "payload": f"{n}", "encoding": "text"}
                    for n in range(start, start + 500)
                ]
                assert (await client.post("/v1/events", json={"events": batch})).status_code == 201
        (feed,) = broker.fanout.feeds
        assert feed.pending <= 50
        assert not feed.live  # it fell behind and will read the log
        await send(ws, type="credit", sub="slow", events=5000)
        events = await collect_events(ws, 2000)
        assert [int(e["offset"]) for e in events] == list(range(2000))
        assert feed.live


async def test_cursor_created_over_rest_consumed_over_ws(
    ws_port: int, client: httpx.AsyncClient
) -> None:
    batch = [{"topic": f"orders/{n % 2}", "payload": "", "encoding": "text"} for n in range(6)]
    await client.post("/v1/events", json={"events": batch})
    response = await client.put(
        "/v1/cursors/billing", json={"filter": "orders/1", "start": "earliest"}
    )
    assert response.status_code == 201
    async with connect(ws_port) as ws:
        reply = await request(ws, type="subscribe", sub="b", cursor="billing")
        assert (reply["cursor"], reply["filter"], reply["position"]) == ("billing", "orders/1", 0)
        events = await collect_events(ws, 3)
        assert [e["offset"] for e in events] == [1, 3, 5]
        committed = await request(ws, type="commit", id=1, sub="b", offset=4)
        assert committed == {"type": "committed", "id": 1, "cursor": "billing", "offset": 4}
        assert (await client.get("/v1/cursors/billing")).json()["position"] == 4
        acked = await request(ws, type="ack", id=2, cursor="billing", offset=6)
        assert acked["offset"] == 6
        bad = await request(ws, type="commit", id=3, sub="b", offset=99)
        assert bad["code"] == "offset_out_of_range"
    assert (await client.get("/v1/cursors/billing")).json()["position"] == 6

    # reconnecting resumes at the committed position
    await client.post("/v1/topics/orders/1", content=b"")
    async with connect(ws_port) as ws:
        await request(ws, type="subscribe", cursor="billing")
        events = await collect_events(ws, 1)
        assert [e["offset"] for e in events] == [6]


async def test_subscribe_creates_a_cursor(ws_port: int, client: httpx.AsyncClient) -> None:
    await client.post("/v1/topics/x", content=b"")
    async with connect(ws_port) as ws:
        reply = await request(ws, type="subscribe", cursor="new", filter="x", start="earliest")
        assert reply["position"] == 0
        assert len(await collect_events(ws, 1)) == 1
        conflict = await request(ws, type="subscribe", cursor="new", filter="y")
        assert (conflict["status"], conflict["code"]) == (409, "cursor_conflict")
        plain = await request(ws, type="subscribe", sub="p", filter="x")
        assert plain["type"] == "subscribed"
        not_durable = await request(ws, type="commit", sub="p", offset=1)
        assert not_durable["code"] == "not_durable"
    assert (await client.get("/v1/cursors/new")).json()["filter"] == "x"


async def test_unknown_path_is_404(ws_port: int) -> None:
    with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
        async with trio_websocket.open_websocket("127.0.0.1", ws_port, "/v2/ws", use_ssl=False):
            pass
    assert rejected.value.status_code == 404


async def test_ws_publish_reaches_sse_and_rest_long_poll(
    ws_port: int, client: httpx.AsyncClient
) -> None:
    results: list[Any] = []

    async def poll() -> None:
        response = await client.get("/v1/events", params={"from_offset": 0, "wait_ms": 5000})
        results.append(response.json())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        await trio.testing.wait_all_tasks_blocked(0.01)  # the poll waits in the server
        async with connect(ws_port) as ws:
            await request(ws, type="publish", topic="from/ws", payload="eA==")
    assert results[0]["events"][0]["topic"] == "from/ws"


async def test_publish_batch_is_one_commit(ws_port: int, client: httpx.AsyncClient) -> None:
    async with connect(ws_port) as ws:
        events = [{"topic": f"b/{n}", "payload": f"{n}", "encoding": "text"} for n in range(3)]
        ack = await request(ws, type="publish_batch", id="b1", events=events)
        assert ack["type"] == "ack"
        assert ack["id"] == "b1"
        assert [e["offset"] for e in ack["events"]] == [0, 1, 2]
        assert len({e["timestamp"] for e in ack["events"]}) == 1
        bad = [*events, {"topic": "b/#", "payload": ""}]
        reply = await request(ws, type="publish_batch", id="b2", events=bad)
        assert (reply["type"], reply["code"], reply["id"]) == ("error", "invalid_topic", "b2")
        reply = await request(ws, type="publish_batch", id="b3", events=[])
        assert reply["code"] == "validation_failed"
    page = (await client.get("/v1/events")).json()
    assert page["next_offset"] == 3  # the refused batch stored nothing


def _without_timestamps(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_timestamps(v) for k, v in value.items() if k != "timestamp"}
    if isinstance(value, list):
        return [_without_timestamps(v) for v in value]
    return value


@pytest.mark.parametrize("storage_url", ["memory://"], indirect=True)
async def test_documented_session(ws_port: int) -> None:
    """The example session of docs/websocket.md, replayed against a fresh server."""
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "websocket.md").read_text()
    block = doc.split("## Example session", 1)[1].split("```", 2)[1]
    lines = [line for line in block.splitlines() if line.startswith(("> ", "< "))]
    assert len(lines) > 10
    async with connect(ws_port) as ws:
        for line in lines:
            direction, text = line[0], line[2:]
            if direction == ">":
                await ws.send_message(text)
            elif text.startswith("(close "):
                code = int(text.split()[1].rstrip(":"))
                with trio.fail_after(5), pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await ws.get_message()
                assert closed.value.reason.code == code
            else:
                assert _without_timestamps(await recv(ws)) == _without_timestamps(json.loads(text))
