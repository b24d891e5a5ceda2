"""Consumer groups over REST and /v1/ws on a real server: several members share one
explicit cursor, each event acknowledged exactly once overall, a member that leaves
has its leases redelivered to others; options, errors and metrics."""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio
import trio_websocket

EXPLICIT = {"filter": "jobs/#", "start": "earliest", "ack_policy": "explicit", "ack_wait": 60}


async def _publish(client: httpx.AsyncClient, count: int, start: int = 0) -> None:
    events = [
        {"topic": "jobs/a", "payload": str(i), "encoding": "text"}
        for i in range(start, start + count)
    ]
    assert (await client.post("/v1/events", json={"events": events})).status_code == 201


async def _fetch(client: httpx.AsyncClient, member: str, limit: int) -> list[int]:
    response = await client.post(
        "/v1/cursors/g/fetch", params={"member": member, "limit": limit, "encoding": "text"}
    )
    assert response.status_code == 200, response.text
    return [e["offset"] for e in response.json()["events"]]


async def test_rest_members_share_a_cursor(client: httpx.AsyncClient) -> None:
    created = await client.put("/v1/cursors/g", json={**EXPLICIT, "backoff": [1, 5]})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["ack_policy"] == "explicit" and body["backoff"] == [1.0, 5.0]
    assert body["dead_letter_topic"] == "$DLQ/g" and body["leased"] == 0
    await _publish(client, 30)
    seen: dict[str, list[int]] = {}

    async def member(name: str) -> None:
        seen[name] = []
        while offsets := await _fetch(client, name, 4):
            seen[name] += offsets
            settled = await client.post("/v1/cursors/g/ack", json={"offsets": offsets})
            assert settled.json()["settled"] == len(offsets)

    async with trio.open_nursery() as nursery:
        for name in ("m1", "m2", "m3"):
            nursery.start_soon(member, name)
    every = sorted(o for offsets in seen.values() for o in offsets)
    assert every == list(range(30))  # each event to exactly one member, acked once
    shown = (await client.get("/v1/cursors/g")).json()
    assert (shown["position"], shown["pending"], shown["leased"]) == (30, 0, 0)


async def test_nak_progress_and_policy_errors(client: httpx.AsyncClient) -> None:
    assert (await client.put("/v1/cursors/g", json=EXPLICIT)).status_code == 201
    await _publish(client, 3)
    assert await _fetch(client, "a", 10) == [0, 1, 2]
    nak = await client.post("/v1/cursors/g/nak", json={"offsets": [1]})
    assert nak.json() == {"settled": 1, "position": 0, "pending": 3}
    assert (await client.post("/v1/cursors/g/progress", json={"offsets": [0, 2]})).json()[
        "settled"
    ] == 2
    assert await _fetch(client, "b", 10) == [1]  # redelivered to another member
    assert (await client.get("/v1/cursors/g")).json()["redelivered"] == 1
    # cumulative commit keeps its meaning: everything below is acknowledged
    assert (await client.post("/v1/cursors/g/commit", json={"offset": 3})).status_code == 200
    assert (await client.get("/v1/cursors/g")).json()["pending"] == 0
    # per-event settlement needs the explicit policy
    plain = await client.put("/v1/cursors/p", json={"filter": "jobs/#"})
    assert plain.json()["ack_policy"] == "cumulative"
    refused = await client.post("/v1/cursors/p/ack", json={"offsets": [0]})
    assert refused.status_code == 409 and refused.json()["code"] == "ack_policy"
    # options are checked; a consumer must not read its own dead letters
    bad = await client.put("/v1/cursors/x", json={**EXPLICIT, "dead_letter_topic": "jobs/dead"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_consumer_options"
    bad = await client.put("/v1/cursors/x", json={**EXPLICIT, "ack_policy": "sometimes"})
    assert bad.status_code == 422
    # options of an existing cursor can change (its position stays)
    changed = await client.put("/v1/cursors/g", json={**EXPLICIT, "max_leased": 7})
    assert changed.status_code == 200 and changed.json()["max_leased"] == 7
    assert changed.json()["position"] == 3


async def test_ack_policy_none_moves_on_fetch(client: httpx.AsyncClient) -> None:
    spec = {"filter": "jobs/#", "start": "earliest", "ack_policy": "none"}
    assert (await client.put("/v1/cursors/g", json=spec)).status_code == 201
    await _publish(client, 2)
    assert await _fetch(client, "a", 10) == [0, 1]
    assert (await client.get("/v1/cursors/g")).json()["position"] == 2


class _Ws:
    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws

    async def send(self, **message: Any) -> None:
        await self.ws.send_message(json.dumps(message))

    async def next(self, kind: str) -> dict[str, Any]:
        with trio.fail_after(10):
            while True:
                frame: dict[str, Any] = json.loads(await self.ws.get_message())
                if frame["type"] == kind:
                    return frame
                assert frame["type"] != "error", frame


async def test_ws_and_rest_members_and_a_member_that_leaves(
    client: httpx.AsyncClient, ws_port: int
) -> None:
    assert (await client.put("/v1/cursors/g", json=EXPLICIT)).status_code == 201
    await _publish(client, 6)
    acked: list[int] = []
    async with trio_websocket.open_websocket("127.0.0.1", ws_port, "/v1/ws", use_ssl=False) as raw:
        ws = _Ws(raw)
        await ws.send(type="subscribe", id=1, sub="s", cursor="g", credit=3)
        await ws.next("subscribed")
        frame = await ws.next("events")
        leased_to_ws = [e["offset"] for e in frame["events"]]
        assert leased_to_ws == [0, 1, 2]
        await ws.send(type="ack", id=2, sub="s", offsets=[0])
        settled = await ws.next("settled")
        assert settled["settled"] == 1 and settled["action"] == "ack"
        acked.append(0)
        rest = await _fetch(client, "r", 10)
        assert rest == [3, 4, 5]  # the others, not the ws member's leases
        await client.post("/v1/cursors/g/ack", json={"offsets": rest})
        acked += rest
        # the ws member leaves holding 1 and 2
    with trio.fail_after(10):
        while not (again := await _fetch(client, "r", 10)):
            await trio.sleep(0.01)  # the release happens as the connection closes
    assert again == [1, 2]
    await client.post("/v1/cursors/g/ack", json={"offsets": again})
    acked += again
    assert sorted(acked) == list(range(6))
    shown = (await client.get("/v1/cursors/g")).json()
    assert shown["position"] == 6 and shown["redelivered"] == 2


async def test_metrics_show_groups(client: httpx.AsyncClient) -> None:
    assert (await client.put("/v1/cursors/g", json=EXPLICIT)).status_code == 201
    await _publish(client, 2)
    await _fetch(client, "a", 1)
    text = (await client.get("/metrics")).text
    assert "tidelog_consumer_leased 1.0" in text
    assert 'tidelog_cursor_leased{cursor="g",owner="anonymous"} 1.0' in text
    assert 'tidelog_cursor_pending{cursor="g",owner="anonymous"} 2.0' in text
    assert "tidelog_consumer_dead_lettered_total 0.0" in text
