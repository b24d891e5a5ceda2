"""Issue 20 (security hardening), REST and /v1/ws: resources belong to users, metadata
follows the ACL, limits and quotas, credentials. Two users (alice, bob) and an
admin against a real server on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket

import tidelog.options  # noqa: F401  (declares the options)
from tests.security.certs import PKI, make_pki
from tests.security.conftest import config, users_with_token, write_acl, write_users
from tidelog import config as cfg
from tidelog.api.routes.cluster import _visible_shares
from tidelog.protocols.mqtt import Connack, Connect, Decoder, ReasonCode, Role, encode
from tidelog.security import Principal, Security, SecurityConfig
from tidelog.security.acl import ACL as AclPolicy
from tidelog.security.acl import parse_acl
from tidelog.server import RunningServer, ServerConfig, run_server

ALICE = ("alice", "alice-pw")
BOB = ("bob", "bob-pw")
ADMIN = ("admin", "admin-pw")

ACL = """\
user alice
allow all alice/#
allow all shared/#
user bob
allow all bob/#
allow all shared/#
user admin
allow publish admin/#
anonymous
allow all public/#
"""


class Server:
    def __init__(self, running: RunningServer, token: str) -> None:
        self.ports = running.ports
        self.token = token
        """A bearer token of alice."""

    def http(self, auth: tuple[str, str] | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.ports['HTTP']}", timeout=10, auth=auth
        )

    @asynccontextmanager
    async def ws(self, auth: tuple[str, str] | None = None) -> AsyncIterator[Ws]:
        headers = []
        if auth is not None:
            raw = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers.append((b"authorization", f"Basic {raw}".encode()))
        async with trio_websocket.open_websocket(
            "127.0.0.1", self.ports["WebSocket"], "/v1/ws", use_ssl=False, extra_headers=headers
        ) as ws:
            yield Ws(ws)


class Ws:
    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.next_id = 0

    async def request(self, **message: Any) -> dict[str, Any]:
        """Send a request and return its reply (skipping event frames)."""
        self.next_id += 1
        message["id"] = self.next_id
        await self.ws.send_message(json.dumps(message))
        with trio.fail_after(10):
            while True:
                reply: dict[str, Any] = json.loads(await self.ws.get_message())
                if reply.get("id") == self.next_id:
                    return reply


async def start(
    nursery: trio.Nursery, tmp_path: Path, *, http: dict[str, Any] | None = None, **security: Any
) -> Server:
    users, token = users_with_token(tmp_path)
    settings: dict[str, Any] = {
        "password_file": str(users),
        "acl_file": str(write_acl(tmp_path, ACL)),
        "admin_users": ["admin"],
        **security,
    }
    server_config = config(tmp_path, **settings)
    server_config.http_options = http or {}
    running: RunningServer = await nursery.start(run_server, server_config)
    return Server(running, token)


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Path) -> Server:
    return await start(nursery, tmp_path)


def problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code, response.json()


# -- finding 6: cursors belong to their creator --------------------------------------------


async def test_rest_cursors_are_per_user(server: Server) -> None:
    async with server.http(ALICE) as alice, server.http(BOB) as bob, server.http(ADMIN) as admin:
        for n in range(3):
            assert (await alice.post(f"/v1/topics/shared/{n}", content=b"x")).status_code == 201
        spec = {"filter": "shared/#", "start": "earliest"}
        created = await alice.put("/v1/cursors/jobs", json=spec)
        assert created.status_code == 201 and created.json()["owner"] == "alice"
        assert (await alice.post("/v1/cursors/jobs/commit", json={"offset": 2})).status_code == 200
        # bob: alice's cursor is not there (404 as for an unknown name), everywhere
        problem(await bob.get("/v1/cursors/jobs"), 404, "cursor_not_found")
        problem(await bob.post("/v1/cursors/jobs/fetch"), 404, "cursor_not_found")
        problem(await bob.post("/v1/cursors/jobs/commit", json={"offset": 0}), 404,
                "cursor_not_found")  # fmt: skip
        problem(await bob.delete("/v1/cursors/jobs"), 404, "cursor_not_found")
        problem(await bob.get("/v1/cursors/jobs", params={"owner": "alice"}), 404,
                "cursor_not_found")  # fmt: skip
        problem(await bob.delete("/v1/cursors/jobs", params={"owner": "alice"}), 404,
                "cursor_not_found")  # fmt: skip
        # the same name is bob's own cursor, not alice's position
        mine = await bob.put("/v1/cursors/jobs", json=spec)
        assert mine.status_code == 201
        assert mine.json() == {"name": "jobs", "owner": "bob", "filter": "shared/#",
                               "position": 0, "lag": 3, "pending": 3,
                               "ack_policy": "cumulative"}  # fmt: skip
        assert (await bob.delete("/v1/cursors/jobs")).status_code == 204
        assert (await alice.get("/v1/cursors/jobs")).json()["position"] == 2
        assert (await bob.get("/v1/cursors")).json()["cursors"] == []
        assert [c["name"] for c in (await alice.get("/v1/cursors")).json()["cursors"]] == ["jobs"]
        # admin_users see and manage every user's cursors (not by an ACL right: admin
        # may not even read shared/#)
        listed = (await admin.get("/v1/cursors")).json()["cursors"]
        assert [(c["name"], c["owner"]) for c in listed] == [("jobs", "alice")]
        problem(await admin.get("/v1/cursors/jobs"), 404, "cursor_not_found")  # own namespace
        shown = await admin.get("/v1/cursors/jobs", params={"owner": "alice"})
        assert shown.status_code == 200 and shown.json()["position"] == 2
        reset = await admin.post(
            "/v1/cursors/jobs/commit", params={"owner": "alice"}, json={"offset": 0}
        )
        assert reset.status_code == 200
        assert (await alice.get("/v1/cursors/jobs")).json()["position"] == 0
        problem(await admin.post("/v1/cursors/jobs/fetch", params={"owner": "alice"}), 403,
                "forbidden")  # managing is not reading  # fmt: skip
        deleted = await admin.delete("/v1/cursors/jobs", params={"owner": "alice"})
        assert deleted.status_code == 204
        problem(await alice.get("/v1/cursors/jobs"), 404, "cursor_not_found")


async def test_ws_checks_the_acl_before_creating_a_cursor(server: Server) -> None:
    async with server.ws(BOB) as bob, server.http(ADMIN) as admin, server.ws(ALICE) as alice:
        for n in range(20):
            denied = await bob.request(
                type="subscribe", sub=f"s{n}", filter="alice/#", cursor=f"c{n}", start="earliest"
            )
            assert (denied["type"], denied["status"], denied["code"]) == ("error", 403,
                                                                          "forbidden")  # fmt: skip
        assert (await admin.get("/v1/cursors")).json()["cursors"] == []
        ok = await alice.request(type="subscribe", sub="a", filter="alice/#", cursor="inbox")
        assert ok["type"] == "subscribed" and ok["cursor"] == "inbox"
        # another user's cursor by name: 404 (not 403 naming its filter)
        for message in (
            {"type": "subscribe", "sub": "x", "cursor": "inbox"},
            {"type": "commit", "cursor": "inbox", "offset": 0},
        ):
            reply = await bob.request(**message)
            assert (reply["status"], reply["code"]) == (404, "cursor_not_found"), reply
            assert "alice" not in reply["detail"]
        # bob's own "inbox" is a different cursor
        own = await bob.request(type="subscribe", sub="b", filter="bob/#", cursor="inbox")
        assert own["type"] == "subscribed"
        listed = (await admin.get("/v1/cursors")).json()["cursors"]
        assert sorted((c["owner"], c["name"], c["filter"]) for c in listed) == [
            ("alice", "inbox", "alice/#"),
            ("bob", "inbox", "bob/#"),
        ]


async def test_anonymous_clients_are_one_user(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await start(nursery, tmp_path, allow_anonymous=True)
    async with server.http() as one, server.http() as two, server.http(ALICE) as alice:
        created = await one.put("/v1/cursors/shared-anon", json={"filter": "public/#"})
        assert created.status_code == 201 and created.json()["owner"] == "anonymous"
        assert (await two.get("/v1/cursors/shared-anon")).status_code == 200
        problem(await alice.get("/v1/cursors/shared-anon"), 404, "cursor_not_found")


# -- finding 5: metadata follows the ACL -----------------------------------------------------


async def test_stats_topics_offsets_follow_the_acl(server: Server) -> None:
    async with server.http(ALICE) as alice, server.http(BOB) as bob, server.http(ADMIN) as admin:
        assert (await alice.post("/v1/topics/alice/secret-plan", content=b"x")).status_code == 201
        assert (await bob.post("/v1/topics/bob/x", content=b"x")).status_code == 201
        assert (await bob.post("/v1/topics/shared/y", content=b"x")).status_code == 201
        bob_stats = (await bob.get("/v1/stats")).json()
        assert set(bob_stats["topic_counts"]) == {"bob/x", "shared/y"}
        assert bob_stats["published"] == 3  # broker-wide counters stay
        assert set((await admin.get("/v1/stats")).json()["topic_counts"]) == {
            "alice/secret-plan", "bob/x", "shared/y"}  # fmt: skip
        bob_topics = {t["topic"] for t in (await bob.get("/v1/topics")).json()["topics"]}
        assert bob_topics == {"bob/x", "shared/y"}
        admin_topics = {t["topic"] for t in (await admin.get("/v1/topics")).json()["topics"]}
        assert admin_topics == {"alice/secret-plan", "bob/x", "shared/y"}
        # /v1/offsets needs the read right on the filter it is for
        problem(await bob.get("/v1/offsets", params={"time": 0}), 403, "forbidden")
        problem(await bob.get("/v1/offsets", params={"time": 0, "filter": "alice/#"}), 403,
                "forbidden")  # fmt: skip
        ok = await bob.get("/v1/offsets", params={"time": 0, "filter": "bob/#"})
        assert ok.status_code == 200 and ok.json()["offset"] == 0


async def test_metrics_cursor_labels(nursery: trio.Nursery, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plain = await start(nursery, tmp_path / "a")
    labelled = await start(nursery, tmp_path / "b", http={"metrics_cursor_labels": True})
    for server in (plain, labelled):
        async with server.http(ALICE) as alice, server.http(BOB) as bob:
            assert (await alice.put("/v1/cursors/alice-billing", json={"filter": "alice/#"})
                    ).status_code == 201  # fmt: skip
            assert (await bob.put("/v1/cursors/bob-jobs", json={"filter": "bob/#"})
                    ).status_code == 201  # fmt: skip
    async with plain.http(BOB) as bob:
        text = (await bob.get("/metrics")).text
        assert "tidelog_cursor_lag" not in text and "alice-billing" not in text
    async with labelled.http(BOB) as bob, labelled.http(ADMIN) as admin:
        text = (await bob.get("/metrics")).text
        assert 'tidelog_cursor_lag{cursor="bob-jobs",owner="bob"}' in text
        assert "alice-billing" not in text
        assert "tidelog_cursors 1.0" in text
        text = (await admin.get("/metrics")).text
        assert 'cursor="alice-billing",owner="alice"' in text and 'cursor="bob-jobs"' in text


# -- finding 7: name maxima and quotas ------------------------------------------------------


async def test_name_maxima_are_checked_where_names_enter(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    server = await start(
        nursery,
        tmp_path,
        max_topic_bytes=20,
        max_filter_bytes=20,
        max_cursor_name_bytes=10,
        max_user_property_key_bytes=8,
        max_client_id_bytes=8,
    )
    long_topic = "alice/" + "é" * 8  # 22 bytes, 14 characters
    long_filter = "alice/" + "x" * 14 + "/#"
    async with server.http(ALICE) as alice, server.ws(ALICE) as ws:
        problem(await alice.post(f"/v1/topics/{long_topic}", content=b"x"), 400, "name_too_long")
        assert (await alice.post("/v1/topics/alice/" + "é" * 7, content=b"x")).status_code == 201
        batch = {"events": [{"topic": long_topic, "payload": ""}]}
        problem(await alice.post("/v1/events", json=batch), 400, "name_too_long")
        props = {"user_properties": [["k" * 9, "v"]]}
        batch = {"events": [{"topic": "alice/p", "payload": "", "properties": props}]}
        problem(await alice.post("/v1/events", json=batch), 400, "name_too_long")
        for path in ("/v1/events", "/v1/topics", "/v1/events/stream"):
            problem(await alice.get(path, params={"filter": long_filter}), 400, "name_too_long")
        problem(await alice.put("/v1/cursors/c", json={"filter": long_filter}), 400,
                "name_too_long")  # fmt: skip
        problem(await alice.put("/v1/cursors/" + "n" * 11, json={"filter": "alice/#"}), 400,
                "name_too_long")  # fmt: skip
        problem(await alice.get("/v1/cursors/" + "n" * 11), 400, "name_too_long")
        problem(await alice.put("/v1/cursors/a%01b", json={"filter": "alice/#"}), 400,
                "invalid_cursor_name")  # fmt: skip
        client_id = {"X-Tidelog-Client-Id": "d" * 9}
        problem(await alice.get("/v1/topics", headers=client_id), 400, "name_too_long")
        assert (await alice.get("/v1/topics", headers={"X-Tidelog-Client-Id": "d" * 8})
                ).status_code == 200  # fmt: skip
        for message in (
            {"type": "publish", "topic": long_topic, "payload": ""},
            {"type": "publish_batch", "events": [{"topic": long_topic, "payload": ""}]},
            {"type": "publish", "topic": "alice/p", "payload": "", "properties": props},
            {"type": "subscribe", "filter": long_filter},
            {"type": "subscribe", "filter": "alice/#", "cursor": "n" * 11},
            {"type": "commit", "cursor": "n" * 11, "offset": 0},
        ):
            reply = await ws.request(**message)
            assert (reply["type"], reply["status"], reply["code"]) == (
                "error", 400, "name_too_long"), (message, reply)  # fmt: skip
        assert (await alice.get("/v1/cursors")).json()["cursors"] == []
    with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
        raw = base64.b64encode(b"alice:alice-pw").decode()
        headers = [(b"authorization", f"Basic {raw}".encode()),
                   (b"x-tidelog-client-id", b"d" * 9)]  # fmt: skip
        async with trio_websocket.open_websocket(
            "127.0.0.1", server.ports["WebSocket"], "/v1/ws", use_ssl=False, extra_headers=headers
        ):
            pass
    assert rejected.value.status_code == 400


async def test_cursor_quota_per_user(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await start(nursery, tmp_path, max_cursors_per_user=2)
    async with server.http(ALICE) as alice, server.http(BOB) as bob, server.ws(BOB) as ws:
        for name in ("a", "b"):
            assert (await bob.put(f"/v1/cursors/{name}", json={"filter": "bob/#"})
                    ).status_code == 201  # fmt: skip
        problem(await bob.put("/v1/cursors/c", json={"filter": "bob/#"}), 429, "quota_exceeded")
        reply = await ws.request(type="subscribe", filter="bob/#", cursor="d")
        assert (reply["status"], reply["code"]) == (429, "quota_exceeded")
        # confirming an existing one is no new cursor
        assert (await bob.put("/v1/cursors/a", json={"filter": "bob/#"})).status_code == 200
        reply = await ws.request(type="subscribe", filter="bob/#", cursor="a")
        assert reply["type"] == "subscribed"
        # alice is not affected, and deleting frees a place
        assert (await alice.put("/v1/cursors/c", json={"filter": "alice/#"})).status_code == 201
        assert (await bob.delete("/v1/cursors/b")).status_code == 204
        assert (await bob.put("/v1/cursors/c", json={"filter": "bob/#"})).status_code == 201


async def test_retained_quota_per_user(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await start(nursery, tmp_path, max_retained_per_user=2)
    async with server.http(ALICE) as alice, server.http(BOB) as bob, server.ws(BOB) as ws:
        for topic in ("bob/1", "bob/2"):
            assert (await bob.post(f"/v1/topics/{topic}?retain=true", content=b"x")
                    ).status_code == 201  # fmt: skip
        problem(await bob.post("/v1/topics/bob/3?retain=true", content=b"x"), 429,
                "quota_exceeded")  # fmt: skip
        reply = await ws.request(type="publish", topic="bob/3", payload="eA==", retain=True)
        assert (reply["status"], reply["code"]) == (429, "quota_exceeded")
        # replacing one's own retained message, and non-retained publishes, are fine
        assert (await bob.post("/v1/topics/bob/1?retain=true", content=b"y")).status_code == 201
        assert (await bob.post("/v1/topics/bob/3", content=b"y")).status_code == 201
        assert (await alice.post("/v1/topics/alice/1?retain=true", content=b"x")
                ).status_code == 201  # fmt: skip
        # clearing (an empty retained message) frees a place
        assert (await bob.post("/v1/topics/bob/2?retain=true", content=b"")).status_code == 201
        reply = await ws.request(type="publish", topic="bob/3", payload="eA==", retain=True)
        assert reply["type"] == "ack"


async def test_subscription_quota_per_user_over_connections(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    server = await start(nursery, tmp_path, max_subscriptions_per_user=2)
    async with server.ws(BOB) as one, server.ws(BOB) as two, server.ws(ALICE) as alice, \
            server.http(BOB) as rest:  # fmt: skip
        assert (await one.request(type="subscribe", sub="1", filter="bob/1"))["type"] == (
            "subscribed")  # fmt: skip
        assert (await two.request(type="subscribe", sub="2", filter="bob/2"))["type"] == (
            "subscribed")  # fmt: skip
        refused = await two.request(type="subscribe", sub="3", filter="bob/3")
        assert (refused["status"], refused["code"]) == (429, "quota_exceeded")
        # an SSE stream is a subscription too
        stream = await rest.get("/v1/events/stream", params={"filter": "bob/#"})
        problem(stream, 429, "quota_exceeded")
        assert (await alice.request(type="subscribe", filter="alice/#"))["type"] == "subscribed"
        assert (await one.request(type="unsubscribe", sub="1"))["type"] == "unsubscribed"
        async with rest.stream("GET", "/v1/events/stream", params={"filter": "bob/#"}) as live:
            assert live.status_code == 200
            refused = await two.request(type="subscribe", sub="3", filter="bob/3")
            assert refused["code"] == "quota_exceeded"
        with trio.fail_after(10):  # the stream's place is free once the server saw it close
            while (await two.request(type="subscribe", sub="3", filter="bob/3"))["type"] != (
                "subscribed"
            ):
                await trio.sleep(0.05)


# -- finding 2: allow_anonymous = false means no -------------------------------------------


async def test_allow_anonymous_false_in_the_file_refuses_anonymous(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    users = write_users(tmp_path)
    toml = tmp_path / "tidelog.toml"
    toml.write_text(
        '[storage]\nurl = "memory://"\n[mqtt]\nport = 0\ntls_port = "off"\n'
        "[websocket]\nport = 0\n[http]\nport = 0\n"
        f'[security]\npassword_file = "{users}"\nallow_anonymous = false\n'
    )
    server_config = ServerConfig.from_settings(cfg.load(str(toml), environ={}))
    running: RunningServer = await nursery.start(run_server, server_config)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.ports['HTTP']}") as client:
        for path in ("/v1/stats", "/metrics", "/v1/topics"):
            problem(await client.get(path), 401, "unauthorized")
        assert (await client.get("/v1/stats", auth=ALICE)).status_code == 200
    with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
        async with trio_websocket.open_websocket(
            "127.0.0.1", running.ports["WebSocket"], "/v1/ws", use_ssl=False
        ):
            pass
    assert rejected.value.status_code == 401
    connack = await mqtt_connect(running.ports["MQTT"], Connect("anon", 5))
    assert connack.reason_code == ReasonCode.NOT_AUTHORIZED


async def mqtt_connect(
    port: int, connect: Connect, stream: trio.abc.Stream | None = None
) -> Connack:
    stream = stream or await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(encode(connect, 5))
        decoder = Decoder(5, role=Role.CLIENT)
        with trio.fail_after(10):
            while True:
                data = await stream.receive_some()
                assert data, "the server closed the connection without a CONNACK"
                for packet in decoder.feed(data):
                    assert isinstance(packet, Connack)
                    return packet


# -- finding 8: credentials -----------------------------------------------------------------


async def test_tokens_work_during_a_password_lockout(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await start(nursery, tmp_path, auth_failures_per_user=2)
    async with server.http() as client:
        for _ in range(2):
            assert (await client.get("/v1/topics", auth=("alice", "wrong"))).status_code == 401
        problem(await client.get("/v1/topics", auth=ALICE), 429, "too_many_attempts")
        bearer = {"Authorization": f"Bearer {server.token}"}
        assert (await client.get("/v1/topics", headers=bearer)).status_code == 200
        # the token as the password of its user, over HTTP Basic and MQTT
        assert (await client.get("/v1/topics", auth=("alice", server.token))).status_code == 200
    token = server.token.encode()
    ok = await mqtt_connect(server.ports["MQTT"], Connect("t", 5, username="alice", password=token))
    assert ok.reason_code == ReasonCode.SUCCESS
    locked = await mqtt_connect(
        server.ports["MQTT"], Connect("p", 5, username="alice", password=b"alice-pw")
    )
    assert locked.reason_code == ReasonCode.CONNECTION_RATE_EXCEEDED
    # a token of someone else is no way around the lockout
    stolen = await mqtt_connect(
        server.ports["MQTT"], Connect("s", 5, username="bob", password=token)
    )
    assert stolen.reason_code == ReasonCode.BAD_USER_NAME_OR_PASSWORD


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def test_require_tls_for_credentials(nursery: trio.Nursery, tmp_path: Path, pki: PKI) -> None:
    import ssl

    users = write_users(tmp_path)
    server_config = config(tmp_path, password_file=str(users), require_tls_for_credentials=True)
    server_config.mqtt_tls_port = 0
    server_config.tls_cert, server_config.tls_key = pki.server.cert, pki.server.key
    running: RunningServer = await nursery.start(run_server, server_config)
    with_password = Connect("c", 5, username="alice", password=b"alice-pw")
    refused = await mqtt_connect(running.ports["MQTT"], with_password)
    assert refused.reason_code == ReasonCode.BAD_USER_NAME_OR_PASSWORD
    context = ssl.create_default_context(cafile=pki.ca)
    tcp = await trio.open_tcp_stream("127.0.0.1", running.ports["MQTT-TLS"])
    tls = trio.SSLStream(tcp, context, server_hostname="localhost")
    accepted = await mqtt_connect(0, with_password, tls)
    assert accepted.reason_code == ReasonCode.SUCCESS
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.ports['HTTP']}") as client:
        plain = await client.get("/v1/topics", auth=ALICE)
        problem(plain, 401, "unauthorized")
        assert "TLS" in plain.json()["detail"]
        assert (await client.get("/v1/topics")).status_code == 200  # anonymous, on loopback


async def test_cli_sends_credentials(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await start(nursery, tmp_path, allow_anonymous=False)
    url = f"http://127.0.0.1:{server.ports['HTTP']}"
    env = {**os.environ, "TIDELOG_URL": url}
    env.pop("TIDELOG_TOKEN", None)

    def tidelog(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tidelog", *args],
            input=stdin, capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip

    def run_all() -> None:
        anonymous = tidelog("stats", "--json")
        assert anonymous.returncode == 1 and "401" in anonymous.stderr
        published = tidelog(
            "publish", "alice/x", "--user", "alice", "--password-stdin", stdin="alice-pw\nhello\n"
        )
        assert published.returncode == 0, published.stderr
        listed = tidelog("topics", "--json", "--token", server.token)
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout) == [{"topic": "alice/x", "count": 1, "last_offset": 0}]
        replayed = tidelog("replay", "alice/#", "--user", "alice", "--password-stdin",
                           stdin="alice-pw\n")  # fmt: skip
        assert replayed.returncode == 0, replayed.stderr
        assert json.loads(replayed.stdout)["payload"] == "hello"
        env["TIDELOG_PASSWORD"] = "bob-pw"
        cursors = tidelog("cursors", "list", "--json", "--user", "bob")
        assert cursors.returncode == 0 and json.loads(cursors.stdout) == {"cursors": []}
        wrong = tidelog("stats", "--user", "alice", "--password-stdin", stdin="nope\n")
        assert wrong.returncode == 1 and "401" in wrong.stderr

    await trio.to_thread.run_sync(run_all)


# -- /v1/cluster: shared groups are metadata of the topics they read -----------------------


def test_cluster_shares_show_only_groups_the_caller_may_read() -> None:
    security = Security(SecurityConfig(admin_users=["admin"]), policy=AclPolicy(parse_acl(ACL)))
    node = {"id": "n1", "shares": [["g", "alice/#", 3], ["h", "bob/jobs", 4], ["k", "shared/+", 1]]}
    alice = security.access(Principal(user="alice"))
    admin = security.access(Principal(user="admin"))
    assert _visible_shares(node, alice)["shares"] == [["g", "alice/#", 3], ["k", "shared/+", 1]]
    assert _visible_shares(node, security.access(Principal()))["shares"] == []
    assert admin.sees_all  # the route hands admins the nodes untouched
