"""The public API the console uses (issue 15): ``/`` by Accept, ``/ui/`` redirect,
``/v1/overview`` and its SSE stream, ``?access_token=`` on SSE, ``/v1/clients``
and the administrators' disconnect. Real servers on 127.0.0.1, real MQTT clients."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as paho

from tests.protocols.mqtt.server_helpers import Client, ServerThread, wait_for
from tests.security.conftest import config, users_with_token, write_acl

ACL = """\
user alice
allow all alice/#
user admin
allow all #
"""
ALICE = ("alice", "alice-pw")
BOB = ("bob", "bob-pw")
ADMIN = ("admin", "admin-pw")


def sse_messages(response: httpx.Response) -> Iterator[tuple[str, dict[str, object]]]:
    """(event name, data) of each SSE message of a streaming response."""
    name, data = "message", ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif line == "" and data:
            yield name, json.loads(data)
            name, data = "message", ""


def test_root_is_the_console_for_browsers_and_json_otherwise(
    make_server: Callable[..., ServerThread],
) -> None:
    server = make_server()
    with httpx.Client(base_url=f"http://127.0.0.1:{server.ports('HTTP')}", timeout=10) as http:
        page = http.get("/", headers={"accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "<title>tidelog console</title>" in page.text
        index = http.get("/", headers={"accept": "application/json"})
        assert index.json()["name"] == "tidelog" and index.json()["console"] == "/"
        assert http.get("/").json()["docs"] == "/docs"  # no Accept: JSON
        for old in ("/ui", "/ui/"):
            moved = http.get(old)
            assert moved.status_code == 308 and moved.headers["location"] == "/"
        script = http.get("/console/app.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        assert http.get("/console/vendor/uPlot.iife.min.js").status_code == 200
        assert http.get("/console/config.json").json()["ws_path"] == "/v1/ws"


def test_console_files_load_before_login_but_the_api_does_not(
    make_server: Callable[..., ServerThread], tmp_path: Path
) -> None:
    users, _ = users_with_token(tmp_path)
    server = make_server(password_file=str(users), allow_anonymous=False)
    with httpx.Client(base_url=f"http://127.0.0.1:{server.ports('HTTP')}", timeout=10) as http:
        assert http.get("/", headers={"accept": "text/html"}).status_code == 200
        assert http.get("/console/app.js").status_code == 200
        assert http.get("/").status_code == 401  # the JSON index is API
        refused = http.get("/v1/overview")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Basic")
        # a script (the console) is not offered Basic: browsers would open their own prompt
        scripted = http.get("/v1/overview", headers={"x-requested-with": "tidelog-console"})
        assert scripted.status_code == 401
        assert scripted.headers["www-authenticate"] == 'Bearer realm="tidelog"'
        assert http.get("/v1/overview", auth=ALICE).status_code == 200


def test_overview_counts_what_flows(make_server: Callable[..., ServerThread]) -> None:
    server = make_server()
    with httpx.Client(base_url=f"http://127.0.0.1:{server.ports('HTTP')}", timeout=10) as http:
        before = http.get("/v1/overview").json()
        assert before["node"]["version"] and before["node"]["uptime_seconds"] >= 0
        assert before["storage"]["backend"] == "memory"
        assert before["listeners"]["HTTP"] == server.ports("HTTP")
        assert before["listeners"]["MQTT"] == server.port
        for n in range(5):
            assert http.post(f"/v1/topics/a/{n}", content=b"12345").status_code == 201
        client = Client(server.port, "overview-1")
        try:
            after = http.get("/v1/overview").json()
            assert after["totals"]["published"] == before["totals"]["published"] + 5
            assert after["storage"]["next_offset"] == before["storage"]["next_offset"] + 5
            assert after["storage"]["bytes"] > before["storage"]["bytes"]
            assert after["connections"]["mqtt"] == 1
            assert after["topics"] == 5
            assert after["commit"]["mean_seconds"] > 0
            assert after["commit"]["p99_seconds"] is not None
            assert after["rates"]["published"] is None  # a single document has no rate
        finally:
            client.disconnect()


def test_overview_stream_sends_rates(make_server: Callable[..., ServerThread]) -> None:
    server = make_server()
    base = f"http://127.0.0.1:{server.ports('HTTP')}"
    with (
        httpx.Client(base_url=base, timeout=10) as http,
        http.stream("GET", "/v1/overview/stream", params={"interval_ms": 250}) as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        messages = sse_messages(stream)
        name, first = next(messages)
        assert name == "overview" and first["rates"] == {
            "published": None, "deliveries": None, "delivered_bytes": None
        }  # fmt: skip
        for n in range(4):
            assert http.post(f"/v1/topics/r/{n}", content=b"x").status_code == 201
        published = 0.0
        for _ in range(10):  # until a tick has seen the publishes
            _, later = next(messages)
            rates = later["rates"]
            assert isinstance(rates, dict)
            published += rates["published"]
            totals = later["totals"]
            assert isinstance(totals, dict)
            if totals["published"] == 4:
                break
        assert published > 0
    with httpx.Client(base_url=base, timeout=10) as http:
        assert http.get("/v1/overview/stream", params={"interval_ms": 10}).status_code == 422


def test_sse_takes_access_token_in_the_query_and_nothing_else_does(
    make_server: Callable[..., ServerThread], tmp_path: Path
) -> None:
    users, token = users_with_token(tmp_path)  # alice's token
    server = make_server(
        password_file=str(users), acl_file=str(write_acl(tmp_path, ACL)), allow_anonymous=False
    )
    base = f"http://127.0.0.1:{server.ports('HTTP')}"
    with httpx.Client(base_url=base, timeout=10) as http:
        params = {"access_token": token, "filter": "alice/#", "from": "earliest"}
        assert http.post("/v1/topics/alice/1", content=b"one", auth=ALICE).status_code == 201
        with http.stream("GET", "/v1/events/stream", params=params) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            while not (line := next(lines)).startswith("data: "):
                pass
            assert json.loads(line[6:])["topic"] == "alice/1"
        with http.stream("GET", "/v1/overview/stream", params={"access_token": token}) as s:
            assert s.status_code == 200
        bad = http.get("/v1/events/stream", params={**params, "access_token": "tl_nope"})
        assert bad.status_code == 401
        # a filter alice may not read is refused as with the header
        denied = http.get("/v1/events/stream", params={**params, "filter": "admin/#"})
        assert denied.status_code == 403
        # not a stream: the token must come in the Authorization header
        assert http.get("/v1/topics", params={"access_token": token}).status_code == 401
        headers = {"authorization": f"Bearer {token}"}
        assert http.get("/v1/topics", headers=headers).status_code == 200


def test_clients_lists_own_and_admin_disconnects(
    make_server: Callable[..., ServerThread], tmp_path: Path
) -> None:
    users, _ = users_with_token(tmp_path)
    server_config = config(
        tmp_path,
        password_file=str(users),
        acl_file=str(write_acl(tmp_path, ACL)),
        admin_users=["admin"],
    )
    server = make_server(server_config)
    alice = Client(server.port, "alice-dev", version=paho.MQTTv5, connect=False)
    alice.paho.username_pw_set(*ALICE)
    alice.connect()
    alice.subscribe("alice/#", 1)
    bob = Client(server.port, "bob-dev", connect=False)
    bob.paho.username_pw_set(*BOB)
    bob.connect()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.ports('HTTP')}", timeout=10) as http:
            seen = http.get("/v1/clients", auth=ALICE).json()
            assert [c["client_id"] for c in seen["clients"]] == ["alice-dev"]
            (mine,) = seen["clients"]
            assert mine["owner"] == "alice" and mine["protocol_level"] == 5
            assert mine["subscriptions"] == ["alice/#"] and mine["transport"] == "tcp"
            assert mine["address"].startswith("127.0.0.1") and mine["persistent"] is False
            assert seen["connections"]["mqtt"] == 2 and seen["may_disconnect"] is False
            everyone = http.get("/v1/clients", auth=ADMIN).json()
            assert [c["client_id"] for c in everyone["clients"]] == ["alice-dev", "bob-dev"]
            assert everyone["may_disconnect"] is True
            refused = http.delete("/v1/clients/bob-dev", auth=ALICE)
            assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
            assert http.delete("/v1/clients/nobody", auth=ADMIN).status_code == 404
            assert http.delete("/v1/clients/alice-dev", auth=ADMIN).status_code == 204
            reason = alice.disconnects.get(timeout=10)
            assert getattr(reason, "value", reason) == 0x98  # Administrative action
            wait_for(lambda: not http.get("/v1/clients", auth=ALICE).json()["clients"])
            assert [c["client_id"] for c in http.get("/v1/clients", auth=ADMIN).json()[
                "clients"]] == ["bob-dev"]  # fmt: skip
    finally:
        alice.paho.loop_stop()
        bob.disconnect()


def test_clients_shows_stored_sessions_of_absent_clients(
    make_server: Callable[..., ServerThread],
) -> None:
    server = make_server()  # anonymous clients on loopback
    device = Client(server.port, "sleepy", version=paho.MQTTv5, clean=False, session_expiry=600)
    device.subscribe("sleep/#", 1)
    device.disconnect()
    with httpx.Client(base_url=f"http://127.0.0.1:{server.ports('HTTP')}", timeout=10) as http:
        wait_for(lambda: bool(http.get("/v1/clients").json()["sessions"]))
        listing = http.get("/v1/clients").json()
        assert listing["clients"] == []
        (session,) = listing["sessions"]
        assert session["client_id"] == "sleepy" and session["subscriptions"] == ["sleep/#"]
        assert session["expiry_interval"] == 600 and session["expires_at"] is not None


def test_every_console_file_is_package_data() -> None:
    """``pip install .`` ships the console: each of its files is matched by a
    package-data pattern of ``tidelog.console`` in pyproject.toml."""
    import glob
    import tomllib

    from tidelog.console import STATIC_DIR

    package = STATIC_DIR.parent
    pyproject = tomllib.loads((package.parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["tidelog.console"]
    shipped = {f for p in patterns for f in glob.glob(p, root_dir=package)}  # setuptools' rule
    files = {p.relative_to(package).as_posix() for p in STATIC_DIR.rglob("*") if p.is_file()}
    assert "static/vendor/uPlot.iife.min.js" in files
    assert files - shipped == set()


def test_topics_list_the_last_offset_and_on_request_the_last_event(
    make_server: Callable[..., ServerThread],
) -> None:
    server = make_server()
    with httpx.Client(base_url=f"http://127.0.0.1:{server.ports('HTTP')}", timeout=10) as http:
        offsets = {}
        for topic, payload in [("t/a", b"first"), ("t/b", b"other"), ("t/a", b"newest")]:
            response = http.post(f"/v1/topics/{topic}", content=payload)
            assert response.status_code == 201
            offsets[topic] = response.json()["offset"]
        plain = http.get("/v1/topics").json()["topics"]
        assert [(t["topic"], t["count"], t["last_offset"]) for t in plain] == [
            ("t/a", 2, offsets["t/a"]),
            ("t/b", 1, offsets["t/b"]),
        ]
        assert all("last_event" not in t for t in plain)  # only on request: it costs reads
        listed = http.get("/v1/topics", params={"last": "true", "encoding": "text"}).json()
        last = {t["topic"]: t["last_event"] for t in listed["topics"]}
        assert last["t/a"]["payload"] == "newest" and last["t/a"]["offset"] == offsets["t/a"]
        assert last["t/b"]["payload"] == "other" and last["t/b"]["timestamp"] > 0
        assert http.get("/v1/topics", params={"last": "nope"}).status_code == 422
