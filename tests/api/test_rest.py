"""The REST API against a real server on 127.0.0.1: every endpoint, shape and status."""

from __future__ import annotations

import base64
import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from tidelog.server import RunningServer, ServerConfig, run_server


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def publish(client: httpx.AsyncClient, topic: str, payload: bytes, **params: Any) -> Any:
    response = await client.post(f"/v1/topics/{topic}", content=payload, params=params)
    assert response.status_code == 201, response.text
    return response.json()


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == "about:blank"
    assert body["title"] and body["detail"]
    return body


# -- publishing ------------------------------------------------------------------------


async def test_publish_one_answers_offset_and_timestamp_after_durable(
    client: httpx.AsyncClient,
) -> None:
    before = dt.datetime.now(dt.UTC).timestamp() * 1000
    first = await publish(client, "devices/42/temp", b"21.5")
    second = await publish(client, "devices/42/temp", b"21.6")
    assert set(first) == {"offset", "timestamp"}
    assert (first["offset"], second["offset"]) == (0, 1)
    assert first["timestamp"] >= before - 1000
    page = (await client.get("/v1/events")).json()
    assert [e["payload"] for e in page["events"]] == [b64(b"21.5"), b64(b"21.6")]
    assert page["next_offset"] == 2
    event = page["events"][0]
    assert event == {
        "offset": 0,
        "timestamp": first["timestamp"],
        "topic": "devices/42/temp",
        "payload": b64(b"21.5"),
        "encoding": "base64",
        "qos": 0,
        "retain": False,
        "properties": {},
    }


async def test_publish_one_qos_retain_and_content_type(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/topics/a/b",
        content=b'{"x": 1}',
        params={"qos": 1, "retain": "true"},
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 201
    response = await client.post(
        "/v1/topics/a/c",
        content=b"\x00\xff",
        headers={"x-tidelog-qos": "2", "x-tidelog-retain": "1"},
    )
    assert response.status_code == 201
    events = (await client.get("/v1/events")).json()["events"]
    assert (events[0]["qos"], events[0]["retain"]) == (1, True)
    assert events[0]["properties"] == {"content_type": "application/json"}
    assert (events[1]["qos"], events[1]["retain"]) == (2, True)
    assert base64.b64decode(events[1]["payload"]) == b"\x00\xff"


async def test_publish_one_empty_payload_and_topic_with_escapes(client: httpx.AsyncClient) -> None:
    await publish(client, "sensors/caf%C3%A9/%24x", b"")
    events = (await client.get("/v1/events")).json()["events"]
    assert events[0]["topic"] == "sensors/café/$x"
    assert events[0]["payload"] == ""


async def test_publish_one_refuses_bad_input(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post("/v1/topics/a/+/b", content=b"x"), 400, "invalid_topic")
    assert_problem(await client.post("/v1/topics/a/%23", content=b"x"), 400, "invalid_topic")
    assert_problem(
        await client.post("/v1/topics/a", content=b"x", params={"qos": 3}), 422, "validation_failed"
    )
    assert_problem(
        await client.post("/v1/topics/a", content=b"x", headers={"x-tidelog-qos": "x"}),
        422,
        "validation_failed",
    )
    assert (await client.get("/v1/events")).json()["events"] == []


async def test_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    big = b"x" * (16 * 1024 * 1024 + 65 * 1024)
    assert_problem(await client.post("/v1/topics/a", content=big), 413, "payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(17):
            yield b"y" * (1024 * 1024)

    response = await client.post("/v1/topics/a", content=chunks())
    assert_problem(response, 413, "payload_too_large")
    assert (await client.get("/healthz")).status_code == 200


async def test_record_over_the_storage_limit_is_413(nursery: trio.Nursery) -> None:
    config = ServerConfig(
        storage="memory://",
        mqtt_port=None,
        ws_port=None,
        http_port=0,
        storage_options={"max_record_bytes": 1024},
    )
    running: RunningServer = await nursery.start(run_server, config)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.ports['HTTP']}") as client:
        response = await client.post("/v1/topics/a", content=b"x" * 2000)
        assert_problem(response, 413, "payload_too_large")
        batch = {"events": [{"topic": "a", "payload": "ok", "encoding": "text"}] * 2}
        batch["events"].append({"topic": "a", "payload": "x" * 2000, "encoding": "text"})
        assert_problem(await client.post("/v1/events", json=batch), 413, "payload_too_large")
        assert (await client.get("/v1/events")).json()["events"] == []


async def test_batch_publish(client: httpx.AsyncClient) -> None:
    body = {
        "events": [
            {"topic": "a/1", "payload": b64(b"\xff\x02")},
            {"topic": "a/2", "payload": "héllo", "encoding": "text", "qos": 1, "retain": True},
            {
                "topic": "a/3",
                "payload": "",
                "properties": {
                    "content_type": "text/plain",
                    "payload_format": 1,
                    "message_expiry": 3600,
                    "response_topic": "replies/1",
                    "correlation_data": b64(b"\x00id"),
                    "user_properties": [["k", "v"], ["k", "w"]],
                },
            },
        ]
    }
    response = await client.post("/v1/events", json=body)
    assert response.status_code == 201, response.text
    stored = response.json()["events"]
    assert [e["offset"] for e in stored] == [0, 1, 2]
    assert len({e["timestamp"] for e in stored}) == 1  # one commit
    events = (await client.get("/v1/events", params={"encoding": "text"})).json()["events"]
    assert events[0]["encoding"] == "base64"  # not UTF-8: falls back, and says so
    assert base64.b64decode(events[0]["payload"]) == b"\xff\x02"
    assert (events[1]["payload"], events[1]["encoding"]) == ("héllo", "text")
    assert (events[1]["qos"], events[1]["retain"]) == (1, True)
    assert events[2]["properties"] == {
        "content_type": "text/plain",
        "payload_format": 1,
        "message_expiry": 3600,
        "response_topic": "replies/1",
        "correlation_data": b64(b"\x00id"),
        "user_properties": [["k", "v"], ["k", "w"]],
    }


async def test_batch_is_all_or_nothing(client: httpx.AsyncClient) -> None:
    good = {"topic": "a", "payload": b64(b"ok")}
    response = await client.post("/v1/events", json={"events": [good, {**good, "topic": "a/#"}]})
    assert_problem(response, 400, "invalid_topic")
    response = await client.post("/v1/events", json={"events": [good, {**good, "payload": "!!"}]})
    assert_problem(response, 422, "invalid_payload")
    response = await client.post(
        "/v1/events",
        json={"events": [good, {**good, "properties": {"correlation_data": "%%"}}]},
    )
    assert_problem(response, 422, "invalid_payload")
    lone_surrogate = b'{"events": [{"topic": "a", "payload": "\\ud800", "encoding": "text"}]}'
    response = await client.post(
        "/v1/events", content=lone_surrogate, headers={"content-type": "application/json"}
    )
    assert_problem(response, 422, "validation_failed")  # the JSON parser refuses it
    assert (await client.get("/v1/events")).json() == {"events": [], "next_offset": 0}


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"events": []}',
        b'{"events": [{"topic": "a"}]}',
        b'{"events": [{"topic": "a", "payload": "", "qos": 5}]}',
        b'{"events": [{"topic": "a", "payload": "", "extra": 1}]}',
        b'{"events": [{"topic": "a", "payload": "", "encoding": "hex"}]}',
        b'{"events": [{"topic": "a", "payload": "", "properties": {"nope": 1}}]}',
    ],
)
async def test_batch_validation_is_422(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.post(
        "/v1/events", content=body, headers={"content-type": "application/json"}
    )
    problem = assert_problem(response, 422, "validation_failed")
    assert problem["errors"]


# -- reading ---------------------------------------------------------------------------


async def seed(client: httpx.AsyncClient, count: int, topic: str = "t/{n}") -> list[Any]:
    body = {
        "events": [
            {"topic": topic.format(n=n % 3), "payload": f"p{n}", "encoding": "text"}
            for n in range(count)
        ]
    }
    response = await client.post("/v1/events", json=body)
    assert response.status_code == 201
    stored: list[Any] = response.json()["events"]
    return stored


async def test_read_by_offset_filter_limit_and_bounds(client: httpx.AsyncClient) -> None:
    await seed(client, 10)

    async def read(**params: Any) -> Any:
        response = await client.get("/v1/events", params={"encoding": "text", **params})
        assert response.status_code == 200, response.text
        return response.json()

    page = await read(from_offset=3, limit=4)
    assert [e["offset"] for e in page["events"]] == [3, 4, 5, 6]
    assert page["next_offset"] == 7
    page = await read(filter="t/1")
    assert [e["payload"] for e in page["events"]] == ["p1", "p4", "p7"]
    page = await read(filter="t/+", from_offset=2, to_offset=5)
    assert [e["offset"] for e in page["events"]] == [2, 3, 4]
    assert page["next_offset"] == 5
    page = await read(from_offset=10)
    assert page == {"events": [], "next_offset": 10}
    page = await read(max_bytes=1)
    assert len(page["events"]) == 1  # at least one event, whatever max_bytes says
    page = await read(filter="nothing/here")
    assert page["events"] == []
    assert page["next_offset"] == 10


async def clock_past(timestamp: int) -> None:
    """Wait until the wall clock is past ``timestamp`` (ms), so the next event is
    stamped later."""
    with trio.fail_after(5):
        while time.time_ns() // 1_000_000 <= timestamp:
            await trio.sleep(0.001)


async def test_read_by_time(client: httpx.AsyncClient) -> None:
    first = await seed(client, 2)
    await clock_past(first[-1]["timestamp"])
    second = await seed(client, 2)
    t1 = second[0]["timestamp"]
    assert t1 > first[0]["timestamp"]
    page = (await client.get("/v1/events", params={"from_time": t1})).json()
    assert [e["offset"] for e in page["events"]] == [2, 3]
    rfc3339 = dt.datetime.fromtimestamp(t1 / 1000, dt.UTC).isoformat().replace("+00:00", "Z")
    page = (await client.get("/v1/events", params={"to_time": rfc3339})).json()
    assert [e["offset"] for e in page["events"]] == [0, 1]
    offsets = (await client.get("/v1/offsets", params={"time": t1})).json()
    assert offsets == {"time": t1, "offset": 2}
    offsets = (await client.get("/v1/offsets", params={"time": rfc3339})).json()
    assert offsets["offset"] == 2
    offsets = (await client.get("/v1/offsets", params={"time": "2999-01-01T00:00:00Z"})).json()
    assert offsets["offset"] == 4


async def test_read_refuses_bad_parameters(client: httpx.AsyncClient) -> None:
    await seed(client, 2)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"filter": "a/#/b"}, 400, "invalid_topic"),
        ({"filter": ""}, 400, "invalid_topic"),
        ({"from_offset": 0, "from_time": 0}, 400, "invalid_parameters"),
        ({"to_offset": 0, "to_time": 0}, 400, "invalid_parameters"),
        ({"from_time": "yesterday"}, 400, "invalid_position"),
        ({"to_time": "2026-13-01"}, 400, "invalid_position"),
        ({"from_offset": 3}, 400, "offset_out_of_range"),
        ({"from_offset": -1}, 422, "validation_failed"),
        ({"from_offset": 2**63}, 422, "validation_failed"),
        ({"from_time": "³"}, 400, "invalid_position"),  # a digit to str.isdigit, not to int()
        ({"from_time": "9" * 30}, 400, "invalid_position"),
        ({"limit": 0}, 422, "validation_failed"),
        ({"limit": 10_001}, 422, "validation_failed"),
        ({"wait_ms": 60_001}, 422, "validation_failed"),
        ({"max_bytes": "many"}, 422, "validation_failed"),
        ({"encoding": "hex"}, 422, "validation_failed"),
    ]
    for params, status, code in cases:
        assert_problem(await client.get("/v1/events", params=params), status, code)
    assert_problem(
        await client.get("/v1/offsets", params={"time": "soon"}), 400, "invalid_position"
    )
    assert_problem(await client.get("/v1/offsets"), 422, "validation_failed")


async def test_long_poll_waits_for_the_first_matching_event(client: httpx.AsyncClient) -> None:
    await seed(client, 1)
    results: list[Any] = []

    async def poll() -> None:
        response = await client.get(
            "/v1/events", params={"from_offset": 1, "filter": "wanted", "wait_ms": 5000}
        )
        results.append((trio.current_time(), response.json()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        await trio.testing.wait_all_tasks_blocked(0.01)  # the poll waits in the server
        await publish(client, "other", b"no")
        await trio.testing.wait_all_tasks_blocked(0.01)  # it saw "other" and waits again
        assert not results
        published_at = trio.current_time()
        await publish(client, "wanted", b"yes")
    when, page = results[0]
    assert when - published_at < 1.0
    assert [e["offset"] for e in page["events"]] == [2]
    assert page["next_offset"] == 3


async def test_long_poll_times_out_empty(client: httpx.AsyncClient) -> None:
    start = trio.current_time()
    response = await client.get("/v1/events", params={"from_offset": 0, "wait_ms": 300})
    elapsed = trio.current_time() - start
    assert response.json() == {"events": [], "next_offset": 0}
    assert 0.25 < elapsed < 3


# -- SSE -------------------------------------------------------------------------------


async def sse_events(
    client: httpx.AsyncClient, count: int, *, headers: dict[str, str] | None = None, **params: Any
) -> list[tuple[int, dict[str, Any]]]:
    """Open the stream and collect ``count`` events as (id, data)."""
    import json

    out: list[tuple[int, dict[str, Any]]] = []
    with trio.fail_after(10):
        async with client.stream(
            "GET", "/v1/events/stream", params=params, headers=headers or {}
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            event_id = None
            async for line in response.aiter_lines():
                if line.startswith("id: "):
                    event_id = int(line[4:])
                elif line.startswith("data: "):
                    assert event_id is not None
                    out.append((event_id, json.loads(line[6:])))
                    if len(out) == count:
                        break
    return out


async def test_sse_live_tail_and_last_event_id_resume(
    client: httpx.AsyncClient, server: RunningServer
) -> None:
    await seed(client, 3)
    received: list[Any] = []

    async def listen() -> None:
        received.extend(await sse_events(client, 2, filter="live/#", encoding="text"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(listen)
        with trio.fail_after(5):  # the stream subscribes at "latest"
            while server.broker.statistics().feeds < 1:
                await trio.sleep(0.01)
        await publish(client, "live/a", b"one")
        await publish(client, "other", b"skip")
        await publish(client, "live/b", b"two")
    assert [(i, e["payload"]) for i, e in received] == [(3, "one"), (5, "two")]
    assert all(i == e["offset"] for i, e in received)

    # a reconnect with Last-Event-ID resumes right after it: no gap, no duplicate
    resumed = await sse_events(client, 2, headers={"last-event-id": "0"}, **{"from": "latest"})
    assert [i for i, _ in resumed] == [1, 2]
    history = await sse_events(client, 3, **{"from": "earliest", "filter": "t/+"})
    assert [i for i, _ in history] == [0, 1, 2]
    by_offset = await sse_events(client, 1, **{"from": "offset:4"})
    assert by_offset[0][0] == 4


async def test_sse_refuses_bad_parameters(client: httpx.AsyncClient) -> None:
    assert_problem(
        await client.get("/v1/events/stream", params={"filter": "a/#/b"}), 400, "invalid_topic"
    )
    assert_problem(
        await client.get("/v1/events/stream", params={"from": "yesterday"}), 400, "invalid_position"
    )
    assert_problem(
        await client.get("/v1/events/stream", headers={"last-event-id": "x"}),
        400,
        "invalid_position",
    )
    assert_problem(
        await client.get("/v1/events/stream", params={"filter": "$share/g/a"}), 400, "invalid_topic"
    )


async def test_sse_disconnect_releases_the_feed(
    client: httpx.AsyncClient, server: RunningServer
) -> None:
    async with client.stream("GET", "/v1/events/stream") as response:
        assert response.status_code == 200
        async for _ in response.aiter_lines():
            break
        assert server.broker.statistics().feeds == 1
    with trio.fail_after(5):
        while server.broker.statistics().feeds:
            await trio.sleep(0.02)


# -- cursors ---------------------------------------------------------------------------


async def test_cursor_lifecycle(client: httpx.AsyncClient) -> None:
    await seed(client, 6)
    response = await client.put("/v1/cursors/c1", json={"filter": "t/1", "start": "earliest"})
    assert response.status_code == 201
    # lag counts every offset behind the head, pending only the 2 events on t/1
    assert response.json() == {
        "name": "c1",
        "owner": "anonymous",
        "filter": "t/1",
        "position": 0,
        "lag": 6,
        "pending": 2,
        "ack_policy": "cumulative",
    }
    again = await client.put("/v1/cursors/c1", json={"filter": "t/1", "start": "latest"})
    assert again.status_code == 200
    assert again.json()["position"] == 0  # untouched
    assert_problem(
        await client.put("/v1/cursors/c1", json={"filter": "t/2"}), 409, "cursor_conflict"
    )

    fetched = (await client.post("/v1/cursors/c1/fetch", params={"encoding": "text"})).json()
    assert [e["payload"] for e in fetched["events"]] == ["p1", "p4"]
    assert fetched["next_offset"] == 6
    refetched = (await client.post("/v1/cursors/c1/fetch", params={"limit": 1})).json()
    assert [e["offset"] for e in refetched["events"]] == [1]  # fetch does not move it
    assert (await client.get("/v1/cursors/c1")).json()["pending"] == 2

    committed = await client.post("/v1/cursors/c1/commit", json={"offset": fetched["next_offset"]})
    assert committed.status_code == 200
    assert committed.json() == {
        "name": "c1",
        "owner": "anonymous",
        "filter": "t/1",
        "position": 6,
        "lag": 0,
        "pending": 0,
        "ack_policy": "cumulative",
    }
    assert (await client.get("/v1/cursors/c1")).json()["position"] == 6
    assert (await client.post("/v1/cursors/c1/fetch")).json() == {
        "events": [],
        "next_offset": 6,
        "skipped": 0,
    }

    await client.put("/v1/cursors/all", json={"filter": None, "start": "offset:2"})
    await client.put("/v1/cursors/late", json={})
    listed = (await client.get("/v1/cursors")).json()["cursors"]
    assert [(c["name"], c["filter"], c["position"], c["pending"]) for c in listed] == [
        ("all", None, 2, 4),
        ("c1", "t/1", 6, 0),
        ("late", None, 6, 0),
    ]
    assert (await client.delete("/v1/cursors/c1")).status_code == 204
    assert_problem(await client.get("/v1/cursors/c1"), 404, "cursor_not_found")
    assert_problem(await client.delete("/v1/cursors/c1"), 404, "cursor_not_found")
    assert_problem(await client.post("/v1/cursors/c1/fetch"), 404, "cursor_not_found")
    assert_problem(
        await client.post("/v1/cursors/c1/commit", json={"offset": 1}), 404, "cursor_not_found"
    )


async def test_cursor_fetch_reports_what_retention_skipped(
    client: httpx.AsyncClient, server: RunningServer, storage_url: str
) -> None:
    """The REST fetch is the engine's Cursor.fetch: a cursor left behind the log's start
    by retention reads from the start and says how many offsets it lost."""
    if not storage_url.startswith("memory"):
        pytest.skip("the memory log drops single events; the others whole segments")
    await seed(client, 6)
    await client.put("/v1/cursors/old", json={"filter": "t/1", "start": "earliest"})
    removed = await server.broker.log.apply_retention(max_bytes=30)  # one 21-byte record
    assert removed.first_offset == 5
    page = (await client.post("/v1/cursors/old/fetch", params={"encoding": "text"})).json()
    assert page == {"events": [], "next_offset": 6, "skipped": 5}
    cursor = (await client.get("/v1/cursors/old")).json()
    assert (cursor["position"], cursor["lag"], cursor["pending"]) == (0, 6, 0)


async def test_cursor_start_by_time_and_fetch_wait(client: httpx.AsyncClient) -> None:
    earlier = await seed(client, 2)
    await clock_past(earlier[-1]["timestamp"])
    later = await seed(client, 1)
    response = await client.put(
        "/v1/cursors/t", json={"filter": "#", "start": f"time:{later[0]['timestamp']}"}
    )
    assert response.json()["position"] == 2

    await client.post("/v1/cursors/t/commit", json={"offset": 3})
    results: list[Any] = []

    async def fetch() -> None:
        response = await client.post("/v1/cursors/t/fetch", params={"wait_ms": 5000})
        results.append(response.json())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fetch)
        await trio.testing.wait_all_tasks_blocked(0.01)  # the fetch waits in the server
        assert not results
        await publish(client, "x", b"new")
    assert [e["offset"] for e in results[0]["events"]] == [3]


async def test_cursor_bad_input(client: httpx.AsyncClient) -> None:
    await seed(client, 1)
    assert_problem(
        await client.put("/v1/cursors/c", json={"filter": "a/#/b"}), 400, "invalid_topic"
    )
    assert_problem(
        await client.put("/v1/cursors/c", json={"filter": "$share/g/a"}), 400, "invalid_topic"
    )
    assert_problem(
        await client.put("/v1/cursors/c", json={"start": "soon"}), 400, "invalid_position"
    )
    assert_problem(await client.put("/v1/cursors/c", json={"extra": 1}), 422, "validation_failed")
    assert_problem(await client.put("/v1/cursors/c", content=b"{"), 422, "validation_failed")
    await client.put("/v1/cursors/c", json={})
    assert_problem(
        await client.post("/v1/cursors/c/commit", json={"offset": 99}), 400, "offset_out_of_range"
    )
    assert_problem(
        await client.post("/v1/cursors/c/commit", json={"offset": -1}), 422, "validation_failed"
    )


# -- the rest --------------------------------------------------------------------------


async def test_topics_stats_health_metrics(client: httpx.AsyncClient) -> None:
    await seed(client, 5)
    await client.put("/v1/cursors/c", json={"start": "earliest"})
    await client.put("/v1/cursors/f", json={"filter": "t/2", "start": "earliest"})
    topics = (await client.get("/v1/topics")).json()["topics"]
    assert topics == [
        {"topic": "t/0", "count": 2, "last_offset": 3},
        {"topic": "t/1", "count": 2, "last_offset": 4},
        {"topic": "t/2", "count": 1, "last_offset": 2},
    ]
    assert (await client.get("/v1/topics", params={"filter": "t/2"})).json()["topics"] == [
        {"topic": "t/2", "count": 1, "last_offset": 2}
    ]
    assert_problem(await client.get("/v1/topics", params={"filter": "t/#/"}), 400, "invalid_topic")

    stats = (await client.get("/v1/stats")).json()
    assert stats["published"] == 5
    assert stats["end_offset"] == 5
    assert stats["state"]["next_offset"] == 5
    assert stats["writer"]["batches"] >= 1

    assert (await client.get("/healthz")).json() == {"status": "ok"}

    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for line in (
        "tidelog_published_events_total 5.0",
        "tidelog_cursors 2.0",
        'tidelog_cursor_lag{cursor="c",owner="anonymous"} 5.0',
        'tidelog_cursor_pending{cursor="c",owner="anonymous"} 5.0',
        'tidelog_cursor_lag{cursor="f",owner="anonymous"} 5.0',
        'tidelog_cursor_pending{cursor="f",owner="anonymous"} 1.0',
        "tidelog_commit_batches_total",
        "tidelog_log_next_offset{backend=",
        "tidelog_feeds 0.0",
    ):
        assert line in text, line


async def test_openapi_docs_ui_and_unknown_routes(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    for path in (
        "/v1/topics/{topic}",
        "/v1/events",
        "/v1/events/stream",
        "/v1/cursors",
        "/v1/cursors/{name}",
        "/v1/cursors/{name}/fetch",
        "/v1/cursors/{name}/commit",
        "/v1/topics",
        "/v1/offsets",
        "/v1/stats",
        "/healthz",
        "/metrics",
    ):
        assert path in spec["paths"], path
    assert "text/html" in (await client.get("/docs")).headers["content-type"]
    example = await client.get("/console/example.html")
    assert example.status_code == 200
    assert "tidelog" in example.text
    assert (await client.get("/console/config.json")).json()["ws_path"] == "/v1/ws"
    assert_problem(await client.get("/v1/nope"), 404, "not_found")
    assert_problem(await client.delete("/v1/events"), 405, "method_not_allowed")


async def test_topic_path_that_is_not_utf8_is_400_not_a_mangled_topic(
    client: httpx.AsyncClient,
) -> None:
    """Regression: the ASGI path is decoded with replacement characters, so
    ``/v1/topics/a%FF`` used to publish to the topic ``a\ufffd``."""
    response = await client.post("/v1/topics/a%FF%FEb", content=b"x")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_path"
    topics = (await client.get("/v1/topics")).json()
    assert not any("\ufffd" in str(t) for t in topics.get("topics", topics)), topics
