"""REST and the WebSocket listener (/v1/ws, /mqtt): authentication, ACLs, limits."""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket

from tests.security.conftest import config, users_with_token, write_acl
from tidelog.protocols.mqtt import (
    Connack,
    Connect,
    Decoder,
    ReasonCode,
    Role,
    Suback,
    Subscribe,
    Subscription,
    encode,
)
from tidelog.server import RunningServer, run_server

ALICE = ("alice", "alice-pw")
BOB = ("bob", "bob-pw")


def basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


@dataclasses.dataclass
class Started:
    ports: dict[str, int]
    token: str
    """A bearer token of alice."""


async def start(nursery: trio.Nursery, tmp_path: Path, **security: Any) -> Started:
    users, token = users_with_token(tmp_path)
    settings: dict[str, Any] = {
        "password_file": str(users),
        "acl_file": str(write_acl(tmp_path)),
        "allow_anonymous": False,
        **security,
    }
    running: RunningServer = await nursery.start(run_server, config(tmp_path, **settings))
    return Started(running.ports, token)


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Path) -> Started:
    return await start(nursery, tmp_path)


def http(server: Started, auth: tuple[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{server.ports['HTTP']}", timeout=10, auth=auth
    )


# -- REST ----------------------------------------------------------------------------------


async def test_rest_needs_credentials(server: Started) -> None:
    async with http(server) as client:
        response = await client.get("/v1/topics")
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert "Basic" in response.headers["www-authenticate"]
        assert response.json()["code"] == "unauthorized"
        assert (await client.get("/healthz")).status_code == 200
        wrong = await client.get("/v1/topics", auth=("alice", "nope"))
        assert wrong.status_code == 401
        token = server.token
        ok = await client.get("/v1/topics", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        bad_token = await client.get("/v1/topics", headers={"Authorization": "Bearer tl_x"})
        assert bad_token.status_code == 401


async def test_rest_acl(server: Started) -> None:
    async with http(server, ALICE) as alice, http(server, BOB) as bob:
        assert (await alice.post("/v1/topics/alice/x", content=b"1")).status_code == 201
        denied = await bob.post("/v1/topics/alice/x", content=b"2")
        assert denied.status_code == 403 and denied.json()["code"] == "forbidden"
        batch = {"events": [{"topic": "shared/a", "payload": "YQ=="},
                            {"topic": "alice/no", "payload": "YQ=="}]}  # fmt: skip
        assert (await bob.post("/v1/events", json=batch)).status_code == 403
        for topic in ["shared/a", "shared/secret/b", "shared/c"]:
            assert (await bob.post(f"/v1/topics/{topic}", content=b"x")).status_code == 201
        # reads: bob has no read right; alice's wildcard read hides shared/secret
        assert (await bob.get("/v1/events", params={"filter": "shared/#"})).status_code == 403
        page = (await alice.get("/v1/events", params={"filter": "shared/#"})).json()
        assert [e["topic"] for e in page["events"]] == ["shared/a", "shared/c"]
        assert (await alice.get("/v1/events")).status_code == 403  # every topic: not hers
        topics = (await alice.get("/v1/topics")).json()["topics"]
        assert sorted(t["topic"] for t in topics) == ["alice/x", "shared/a", "shared/c"]
        # cursors need read on their filter
        put = await alice.put("/v1/cursors/c1", json={"filter": "shared/#", "start": "earliest"})
        assert put.status_code == 201
        assert (await bob.put("/v1/cursors/c2", json={"filter": "bob/#"})).status_code == 403
        fetched = (await alice.post("/v1/cursors/c1/fetch")).json()
        assert [e["topic"] for e in fetched["events"]] == ["shared/a", "shared/c"]
        # another user's cursor is not there for bob (404, as for an unknown name)
        assert (await bob.post("/v1/cursors/c1/fetch")).status_code == 404
        assert (await bob.post("/v1/cursors/c1/commit", json={"offset": 1})).status_code == 404
        assert (await bob.delete("/v1/cursors/c1")).status_code == 404
        assert (await bob.get("/v1/cursors")).json()["cursors"] == []
        assert len((await alice.get("/v1/cursors")).json()["cursors"]) == 1
        # SSE: bob may follow bob/# live, but not replay it
        assert (
            await bob.get("/v1/events/stream", params={"filter": "bob/#", "from": "earliest"})
        ).status_code == 403
        async with bob.stream("GET", "/v1/events/stream", params={"filter": "bob/#"}) as live:
            assert live.status_code == 200


async def test_rest_client_id_header(server: Started) -> None:
    async with http(server, BOB) as bob:
        path = "/v1/topics/devices/d1/t"
        assert (await bob.post(path, content=b"1")).status_code == 403
        ok = await bob.post(path, content=b"1", headers={"X-Tidelog-Client-Id": "d1"})
        assert ok.status_code == 201


async def test_rest_brute_force_gets_429(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await start(nursery, tmp_path, auth_failures_per_address=3)
    async with http(server) as client:
        for _ in range(3):
            assert (await client.get("/v1/topics", auth=("alice", "x"))).status_code == 401
        limited = await client.get("/v1/topics", auth=ALICE)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert limited.json()["code"] == "too_many_attempts"


async def test_rest_connection_limit_gets_503(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await start(nursery, tmp_path, max_connections_per_address=1)
    async with http(server, ALICE) as client:
        params = {"filter": "alice/#"}
        async with client.stream("GET", "/v1/events/stream", params=params) as held:
            assert held.status_code == 200
            busy = await client.get("/v1/topics")
            assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        with trio.fail_after(5):
            while (await client.get("/v1/topics")).status_code != 200:
                await trio.sleep(0.05)


# -- WebSocket ---------------------------------------------------------------------------


async def test_ws_handshake_is_authenticated(server: Started) -> None:
    port = server.ports["WebSocket"]
    with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
        async with trio_websocket.open_websocket("127.0.0.1", port, "/v1/ws", use_ssl=False):
            pass
    assert rejected.value.status_code == 401
    headers = dict(rejected.value.headers or [])
    assert b"Basic" in headers[b"www-authenticate"]
    token = server.token
    path = f"/v1/ws?access_token={token}"
    async with trio_websocket.open_websocket("127.0.0.1", port, path, use_ssl=False) as ws:
        await ws.send_message(json.dumps({"type": "ping", "id": 1}))
        assert json.loads(await ws.get_message())["type"] == "pong"


async def ws_request(ws: trio_websocket.WebSocketConnection, **message: Any) -> dict[str, Any]:
    await ws.send_message(json.dumps(message))
    with trio.fail_after(10):
        reply: dict[str, Any] = json.loads(await ws.get_message())
    return reply


async def test_ws_acl(server: Started) -> None:
    port = server.ports["WebSocket"]
    auth = [(b"authorization", basic(*ALICE)["Authorization"].encode())]
    async with trio_websocket.open_websocket(
        "127.0.0.1", port, "/v1/ws", use_ssl=False, extra_headers=auth
    ) as ws:
        denied = await ws_request(ws, type="publish", id=1, topic="bob/x", payload="eA==")
        assert (denied["type"], denied["status"], denied["code"]) == ("error", 403, "forbidden")
        sub = await ws_request(ws, type="subscribe", id=2, sub="s", filter="bob/#")
        assert sub["status"] == 403
        sub = await ws_request(ws, type="subscribe", id=3, sub="s", filter="shared/#")
        assert sub["type"] == "subscribed"
        for n, topic in enumerate(["shared/secret/x", "shared/y"], 4):
            await ws.send_message(
                json.dumps({"type": "publish", "id": n, "topic": topic, "payload": "eA=="})
            )
        seen: list[str] = []
        with trio.fail_after(10):
            while "shared/y" not in seen:
                frame = json.loads(await ws.get_message())
                if frame["type"] == "events":
                    seen.extend(e["topic"] for e in frame["events"])
        assert seen == ["shared/y"]


async def test_mqtt_over_websocket_with_http_credentials(server: Started) -> None:
    port = server.ports["WebSocket"]
    with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
        async with trio_websocket.open_websocket(
            "127.0.0.1", port, "/mqtt", use_ssl=False, subprotocols=["mqtt"],
            extra_headers=[(b"authorization", basic("alice", "bad")["Authorization"].encode())],
        ):  # fmt: skip
            pass
    assert rejected.value.status_code == 401
    auth = [(b"authorization", basic(*ALICE)["Authorization"].encode())]
    async with trio_websocket.open_websocket(
        "127.0.0.1", port, "/mqtt", use_ssl=False, subprotocols=["mqtt"], extra_headers=auth
    ) as ws:
        decoder = Decoder(5, role=Role.CLIENT)
        await ws.send_message(encode(Connect("ws-1", 5), 5))  # no user name: the handshake's
        await ws.send_message(
            encode(Subscribe(1, [Subscription("alice/#"), Subscription("bob/#")]), 5)
        )
        packets: list[Any] = []
        with trio.fail_after(10):
            while len(packets) < 2:
                packets.extend(decoder.feed(await ws.get_message()))
        assert isinstance(packets[0], Connack) and packets[0].reason_code == ReasonCode.SUCCESS
        assert isinstance(packets[1], Suback)
        assert list(packets[1].reason_codes) == [0, ReasonCode.NOT_AUTHORIZED]
    # without credentials anywhere: anonymous is disabled, CONNACK 0x87
    async with trio_websocket.open_websocket(
        "127.0.0.1", port, "/mqtt", use_ssl=False, subprotocols=["mqtt"]
    ) as ws:
        await ws.send_message(encode(Connect("ws-2", 5), 5))
        with trio.fail_after(10):
            (connack,) = Decoder(5, role=Role.CLIENT).feed(await ws.get_message())
        assert connack.reason_code == ReasonCode.NOT_AUTHORIZED
