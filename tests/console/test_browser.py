"""The console in a real Chromium (Debian's, driven by Playwright) against a real
``tidelog serve`` subprocess: every page shows live data, the publish form reaches a
live tail, a replay by time shows exactly its range and then follows live, a cursor
reset changes the next fetch, consumer groups and webhooks (a real endpoint on
127.0.0.1) show their state, login and the ACL hide what a user may not read, and
the browser logs no error.

Screenshots of each page go to ``$TIDELOG_SCREENSHOTS`` (default: the test's tmp
directory); ``TIDELOG_SCREENSHOTS=docs/images`` refreshes the ones docs/console.md
shows. Chromium is never downloaded (``playwright install`` cannot run here): a
missing /usr/bin/chromium fails these tests (CONTRACTS, "Configuration and CI").
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from tests.browser import Console, chromium
from tests.protocols.mqtt.server_helpers import Client
from tests.security.conftest import users_with_token, write_acl
from tests.serve_process import start_server
from tidelog.testing.server import ServerProcess
from tidelog.webhooks.signing import new_secret


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def serve(tmp_path: Path, *extra: str) -> ServerProcess:
    server = start_server(
        tmp_path,
        "--storage",
        f"lmdb://{tmp_path}/data",
        "--mqtt-port",
        "0",
        "--ws-port",
        "off",  # the console needs only the HTTP port
        "--http-port",
        "0",
        *extra,
        expect=("HTTP", "MQTT"),
    )
    return server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    running = serve(tmp_path)
    yield running
    running.stop()


@pytest.fixture
def console(browser: Browser, server: ServerProcess, tmp_path: Path) -> Iterator[Console]:
    shots = Path(os.environ.get("TIDELOG_SCREENSHOTS", tmp_path / "screenshots"))
    opened = Console(browser, server.url, shots)
    yield opened
    opened.close()


def utc_input(ms: int) -> str:
    """A datetime-local value (the browser runs in UTC) for epoch ms."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


def publish(http: httpx.Client, topic: str, payload: bytes) -> dict[str, int]:
    response = http.post(f"/v1/topics/{topic}", content=payload)
    assert response.status_code == 201, response.text
    stored: dict[str, int] = response.json()
    return stored


def wait_until_after(ms: int) -> None:
    while time.time() * 1000 <= ms + 1:
        time.sleep(0.005)


def offsets_shown(page: Page) -> list[int]:
    return [int(text) for text in page.locator("#events tr.event td.offset").all_inner_texts()]


# -- every page with live data -----------------------------------------------------------


def test_every_page_renders_live_data(console: Console, server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for n in range(12):
            publish(http, f"plant/line{n % 3}/temp", f'{{"celsius": {20 + n}}}'.encode())
        spec = {"filter": "plant/#", "start": "earliest"}
        assert http.put("/v1/cursors/dashboard", json=spec).status_code == 201
        device = Client(server.ports["MQTT"], "press-7", version=paho.MQTTv5)
        device.subscribe("plant/line1/#", 1)
        try:
            page = console.page("overview")
            expect(page.locator("#overview-status")).to_contain_text("live")
            events = page.locator('#storage dd[data-fact="events"]')
            expect(events).to_contain_text("12 (offsets 0\u201312)")
            expect(page.locator('#storage dd[data-fact="backend"]')).to_contain_text("lmdb")
            expect(page.locator("#connections")).to_contain_text("mqtt")
            # the live part: publishes after the page opened show up in the next ticks
            for n in range(30):
                publish(http, "plant/line0/pressure", str(n).encode())
            expect(page.locator('#engine dd[data-fact="published"]')).to_have_text("42")
            expect(page.locator('#storage dd[data-fact="events"]')).to_contain_text("42 (")
            page.wait_for_function(
                "Number(document.querySelector('#overview-status').dataset.ticks) >= 4"
            )
            assert page.locator("#rate-chart canvas").count() == 1
            expect(page.locator("#links")).to_contain_text("no links on node")
            expect(page.locator("#cluster")).to_contain_text("storage is not shared")
            expect(page.locator('#commit dd[data-fact="mean"]')).to_contain_text("s")
            console.shot(page, "overview")

            page.goto(f"{server.url}/#/topics")
            line0 = page.locator('a.topic[data-topic="plant/line0"]')
            expect(line0).to_contain_text("34")  # 4 temperatures + 30 pressures
            expect(page.locator('a.topic[data-topic="plant"]')).to_contain_text("42")

            # each topic shows its last event: time and the start of the payload
            def last_event(topic: str) -> Locator:
                return page.locator(f'li:has(> a.topic[data-topic="{topic}"]) > .last-event')

            expect(last_event("plant/line0/pressure").locator(".preview")).to_have_text("29")
            temp = last_event("plant/line2/temp")
            expect(temp.locator(".preview")).to_have_text('{"celsius": 31}')
            expect(temp.locator(".time")).not_to_be_empty()
            expect(last_event("plant/line0")).to_have_count(0)  # a level, not a topic: no event
            page.fill("#topic-search", "pressure")
            expect(page.locator('a.topic[data-topic="plant/line1"]')).to_have_count(0)
            expect(page.locator('a.topic[data-topic="plant/line0/pressure"]')).to_be_visible()
            page.fill("#topic-search", "")
            page.locator('a.topic[data-topic="plant/line2/temp"]').click()
            expect(page.locator("#tail-status")).to_have_text("live")
            publish(http, "plant/line2/temp", b'{"celsius": 99}')
            expect(page.locator("#events tr.event")).to_have_count(1)
            expect(page.locator("#events tr.event")).to_contain_text('{"celsius": 99}')
            console.shot(page, "topics")

            page.goto(f"{server.url}/#/consumers")
            row = page.locator('tr.cursor[data-name="dashboard"]')
            expect(row.locator("td.pending")).to_have_text("43")
            assert page.locator("#lag-chart canvas").count() == 1
            console.shot(page, "consumers")

            page.goto(f"{server.url}/#/clients")
            client_row = page.locator('tr.client[data-client="press-7"]')
            expect(client_row).to_contain_text("5.0")
            expect(client_row.locator("td.subs")).to_have_text("plant/line1/#")
            expect(page.locator("#connection-summary")).to_contain_text("mqtt")
            console.shot(page, "clients")
        finally:
            device.disconnect()


# -- publish form -> live tail ---------------------------------------------------------------


def test_a_publish_in_the_form_appears_in_the_live_tail(
    console: Console, server: ServerProcess
) -> None:
    tail = console.page("topics?filter=form%2F%23")
    expect(tail.locator("#tail-status")).to_have_text("live")
    form = console.page("publish")
    form.fill("#pub-topic", "form/hello")
    form.fill("#pub-payload", '{"greeting": "héllo", "n": 1}')
    form.select_option("#pub-qos", "1")
    form.check("#pub-retain")
    form.fill("#pub-content-type", "application/json")
    form.fill("#pub-user-properties", "unit=C\nsource=console")
    form.click("#pub-submit")
    expect(form.locator("#pub-result")).to_have_text("stored at offset 0")
    console.shot(form, "publish")
    row = tail.locator("#events tr.event")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("form/hello")
    expect(row).to_contain_text('{"greeting": "héllo", "n": 1}')
    expect(row).to_contain_text("1 R")  # QoS 1, retained
    expect(row).to_contain_text('"user_properties":[["unit","C"],["source","console"]]')
    expect(row).to_contain_text('"content_type":"application/json"')
    # the same payload as pretty JSON and as hex
    tail.select_option("#view", "json")
    expect(row.locator("pre.payload")).to_have_text('{\n  "greeting": "héllo",\n  "n": 1\n}')
    tail.select_option("#view", "hex")
    expect(row.locator("pre.payload")).to_contain_text("000000  7b 22 67 72")
    with httpx.Client(base_url=server.url, timeout=10) as http:
        (event,) = http.get("/v1/events", params={"encoding": "text"}).json()["events"]
    assert event["payload"] == '{"greeting": "héllo", "n": 1}' and event["qos"] == 1
    assert event["retain"] is True


# -- replay by time, then live ---------------------------------------------------------------


def test_replay_by_time_range_shows_exactly_that_range_then_follows_live(
    console: Console, server: ServerProcess
) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        before = [publish(http, "dev/42/state", f"before {n}".encode()) for n in range(3)]
        publish(http, "dev/7/state", b"other device")
        wait_until_after(before[-1]["timestamp"])
        start = int(time.time() * 1000)
        inside = [publish(http, "dev/42/state", f"inside {n}".encode()) for n in range(4)]
        publish(http, "dev/7/state", b"other device, inside")
        wait_until_after(inside[-1]["timestamp"])
        end = int(time.time() * 1000)
        wait_until_after(end)
        after = [publish(http, "dev/42/state", f"after {n}".encode()) for n in range(2)]

        page = console.page("topics")
        page.fill("#filter", "dev/42/#")
        page.select_option("#mode", "replay")
        page.fill("#from-time", utc_input(start))
        page.fill("#to-time", utc_input(end))
        page.click("#start")
        expect(page.locator("#tail-status")).to_contain_text("replayed 4 events")
        assert offsets_shown(page) == [e["offset"] for e in inside]
        payloads = page.locator("#events pre.payload").all_inner_texts()
        assert payloads == [f"inside {n}" for n in range(4)]
        console.shot(page, "replay")

        # again, then follow live: the rest of the range's stream arrives without a gap
        page.check("#follow")
        page.click("#start")
        expect(page.locator("#tail-status")).to_have_text("live")
        live = [publish(http, "dev/42/state", f"live {n}".encode()) for n in range(2)]
        publish(http, "dev/7/state", b"not this device")
        expected = [e["offset"] for e in inside + after + live]
        expect(page.locator("#events tr.event")).to_have_count(len(expected))
        assert offsets_shown(page) == expected


# -- consumers: reset and delete -------------------------------------------------------------


def test_cursor_reset_changes_what_the_next_fetch_returns(
    console: Console, server: ServerProcess
) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        stored = [publish(http, "jobs/run", f"job {n}".encode()) for n in range(10)]
        assert http.put("/v1/cursors/worker", json={"filter": "jobs/#"}).status_code == 201
        assert http.post("/v1/cursors/worker/fetch").json()["events"] == []  # at the head

        page = console.page("consumers")
        row = page.locator('tr.cursor[data-name="worker"]')
        expect(row.locator("td.position")).to_have_text("10")
        row.locator("button.reset").click()
        page.select_option("#reset-kind", "offset")
        page.fill("#reset-offset", "4")
        page.click("#reset-next")
        expect(page.locator("#confirm-text")).to_contain_text("from 10 to offset 4")
        page.click("#confirm-ok")
        expect(row.locator("td.position")).to_have_text("4")
        fetched = http.post("/v1/cursors/worker/fetch", params={"encoding": "text"}).json()
        assert [e["payload"] for e in fetched["events"]] == [f"job {n}" for n in range(4, 10)]

        # by time: the first event at or after the 8th event's timestamp
        row.locator("button.reset").click()
        page.select_option("#reset-kind", "time")
        page.fill("#reset-time", utc_input(stored[7]["timestamp"]))
        page.click("#reset-next")
        page.click("#confirm-ok")
        first_at_time = min(e["offset"] for e in stored if e["timestamp"] >= stored[7]["timestamp"])
        expect(row.locator("td.position")).to_have_text(str(first_at_time))
        fetched = http.post("/v1/cursors/worker/fetch").json()
        assert fetched["events"][0]["offset"] == first_at_time

        # earliest; the peek shows the same as the next fetch
        row.locator("button.reset").click()
        page.select_option("#reset-kind", "earliest")
        page.click("#reset-next")
        page.click("#confirm-ok")
        expect(row.locator("td.position")).to_have_text("0")
        row.locator("button.peek").click()
        expect(page.locator("#peek-events tr.event").first).to_contain_text("job 0")

        # a cancelled delete keeps it; a confirmed one removes it
        row.locator("button.delete").click()
        page.click("#confirm button[value=cancel]")
        assert http.get("/v1/cursors/worker").status_code == 200
        row.locator("button.delete").click()
        page.click("#confirm-ok")
        expect(row).to_have_count(0)
        assert http.get("/v1/cursors/worker").status_code == 404


# -- login and the ACL -------------------------------------------------------------------------


ACL = """\
user alice
allow all alice/#
allow subscribe,read sensors/#
deny subscribe,read sensors/secret/#
user admin
allow all #
"""


class Hook(BaseHTTPRequestHandler):
    """A webhook endpoint: answers 204 to every POST, keeps the bodies."""

    bodies: list[bytes] = []

    def do_POST(self) -> None:
        self.bodies.append(self.rfile.read(int(self.headers["content-length"])))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_consumer_groups_and_webhooks_have_their_sections(browser: Browser, tmp_path: Path) -> None:
    endpoint = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=endpoint.serve_forever, daemon=True).start()
    toml = tmp_path / "tidelog.toml"
    toml.write_text(
        f'[[webhook]]\nname = "orders"\nurl = "http://127.0.0.1:{endpoint.server_port}/hook"\n'
        f'filter = "orders/#"\nsecret = "{new_secret()}"\nstart = "earliest"\n'
        '[[webhook]]\nname = "down"\nurl = "http://127.0.0.1:9/"\n'
        f'secret = "{new_secret()}"\nstart = "earliest"\nretry_backoff = 60\n'
    )
    server = serve(tmp_path, "--config", str(toml))
    shots = Path(os.environ.get("TIDELOG_SCREENSHOTS", tmp_path / "screenshots"))
    console = Console(browser, server.url, shots)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for n in range(3):
                publish(http, "orders/eu", f"order {n}".encode())
            group = {"filter": "orders/#", "start": "earliest", "ack_policy": "explicit"}
            assert http.put("/v1/cursors/packers", json=group).status_code == 201
            assert http.put("/v1/cursors/plain", json={"start": "earliest"}).status_code == 201
            leased = http.post("/v1/cursors/packers/fetch", params={"limit": 2}).json()
            assert len(leased["events"]) == 2

            page = console.page("consumers")
            row = page.locator('tr.group[data-name="packers"]')
            expect(row.locator("td.leased")).to_have_text("2")
            expect(row.locator("td.pending")).to_have_text("3")  # 2 leased + 1 not fetched
            expect(row.locator("td.dead-lettered")).to_have_text("0")
            expect(row).to_contain_text("$DLQ/packers")
            # cumulative cursors are not groups
            expect(page.locator('tr.group[data-name="plain"]')).to_have_count(0)
            expect(page.locator('tr.cursor[data-name="plain"]')).to_have_count(1)

            hook = page.locator('tr.webhook[data-name="orders"]')
            expect(hook.locator("td.delivered")).to_have_text("3")
            expect(hook.locator("td.state")).to_have_text("active")
            expect(hook.locator("td.lag")).to_have_text("0")
            expect(hook.locator("td.url")).to_have_text(
                f"http://127.0.0.1:{endpoint.server_port}/hook"
            )
            down = page.locator('tr.webhook[data-name="down"]')
            expect(down.locator("td.state")).to_have_text("retrying")
            expect(down.locator("td.error")).not_to_have_text("\u2013")  # a dash: no error
            assert len(Hook.bodies) == 3
            console.shot(page, "consumers-groups-webhooks")

            # a group has the cursor's actions; peek reads past the committed position
            # (leased events too) and leases nothing
            row.locator("button.peek").click()
            expect(page.locator("#peek-events tr.event")).to_have_count(3)
            assert http.get("/v1/cursors/packers").json()["leased"] == 2
            # deleting a webhook asks first; cancelled, it stays; confirmed, it is gone
            down.locator("button.delete").click()
            expect(page.locator("#confirm-text")).to_contain_text('Delete webhook "down"')
            page.click("#confirm button[value=cancel]")
            assert http.get("/v1/webhooks/down").status_code == 200
            down.locator("button.delete").click()
            page.click("#confirm-ok")
            expect(down).to_have_count(0)
            assert http.get("/v1/webhooks/down").status_code == 404
            expect(hook.locator("td.state")).to_have_text("active")
        console.close()  # no errors in the browser's log
    finally:
        server.stop()
        endpoint.shutdown()


def test_login_and_acl_hide_what_a_user_may_not_read(browser: Browser, tmp_path: Path) -> None:
    users, admin_token = users_with_token(tmp_path, "admin")
    acl = write_acl(tmp_path, ACL)
    settings = tmp_path / "tidelog.toml"
    settings.write_text(
        "[security]\n"
        f'password_file = "{users}"\n'
        f'acl_file = "{acl}"\n'
        'admin_users = ["admin"]\n'
        "allow_anonymous = false\n"
    )
    server = serve(tmp_path, "--config", str(settings))
    shots = Path(os.environ.get("TIDELOG_SCREENSHOTS", tmp_path / "screenshots"))
    console = Console(browser, server.url, shots)
    device = None
    try:
        with httpx.Client(base_url=server.url, timeout=10, auth=("admin", "admin-pw")) as admin:
            publish(admin, "alice/thermostat", b"21.5")
            publish(admin, "sensors/hall", b"19.0")
            publish(admin, "sensors/secret/vault", b"do not show")
            publish(admin, "plans/q3", b"do not show either")

            page = console.page("topics")
            expect(page.locator("#login")).to_be_visible()
            console.shot(page, "login")
            console.allowed.append("401")  # the wrong password below, on purpose
            page.fill("#login input[name=user]", "alice")
            page.fill("#login input[name=password]", "wrong")
            page.click("#login-submit")
            expect(page.locator("#login-error")).to_contain_text("Wrong user name")
            page.fill("#login input[name=password]", "alice-pw")
            page.click("#login-submit")
            expect(page.locator("#login")).to_be_hidden()
            console.allowed.remove("401")
            expect(page.locator("#who")).to_have_text("alice")

            expect(page.locator('a.topic[data-topic="alice/thermostat"]')).to_be_visible()
            expect(page.locator('a.topic[data-topic="sensors/hall"]')).to_be_visible()
            expect(page.locator('a.topic[data-topic="sensors"]')).to_contain_text("1")
            assert page.locator('a.topic[data-topic="sensors/secret"]').count() == 0
            assert page.locator('a.topic[data-topic="plans"]').count() == 0
            # a filter alice may not subscribe to at all is refused, and says so
            console.allowed.append("403")
            page.fill("#filter", "#")
            page.click("#start")
            expect(page.locator("#tail-status")).to_contain_text("not authorized to subscribe")
            console.allowed.remove("403")
            # within a filter she may read, the events of topics she may not are dropped
            page.fill("#filter", "sensors/#")
            page.click("#start")
            expect(page.locator("#tail-status")).to_have_text("live")
            publish(admin, "sensors/secret/vault", b"still hidden")
            publish(admin, "sensors/hall", b"19.5")
            expect(page.locator("#events tr.event")).to_have_count(1)
            expect(page.locator("#events tr.event")).to_contain_text("19.5")
            assert "hidden" not in page.locator("#events").inner_text()
            console.shot(page, "acl")

            # alice sees her own client only, and may not disconnect
            device = Client(server.ports["MQTT"], "alice-phone", connect=False)
            device.paho.username_pw_set("alice", "alice-pw")
            device.connect()
            page.goto(f"{server.url}/#/clients")
            button = page.locator('tr.client[data-client="alice-phone"] button.disconnect')
            expect(button).to_be_disabled()

            # the admin, with a token: everything, and the disconnect
            page.click("#account")  # log out: the login dialog opens (no anonymous access)
            expect(page.locator("#login")).to_be_visible()
            page.fill("#login input[name=token]", admin_token)
            page.click("#login-submit")
            expect(page.locator("#who")).to_have_text("token")
            expect(button).to_be_enabled()
            button.click()
            page.click("#confirm-ok")
            expect(page.locator('tr.client[data-client="alice-phone"]')).to_have_count(0)
            reason = device.disconnects.get(timeout=10)
            assert reason is not None
            page.goto(f"{server.url}/#/topics")
            expect(page.locator('a.topic[data-topic="sensors/secret/vault"]')).to_be_visible()
            expect(page.locator('a.topic[data-topic="plans/q3"]')).to_be_visible()
    finally:
        if device is not None:
            device.paho.loop_stop()
        try:
            console.close()
        finally:
            server.stop()
