"""``/v1/webhooks`` on a real server with users: only ``security.admin_users`` create
webhooks, the secret is never shown, others get 404; ``[[webhook]]`` from the
configuration file; status and metrics."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import trio

from tests.security.conftest import write_acl
from tests.security.test_ownership import ACL, ADMIN, ALICE, Server, problem, start
from tests.webhooks.receiver import Receiver
from tidelog import config as cfg
from tidelog.context import ServerConfig
from tidelog.server import run_server
from tidelog.webhooks.signing import new_secret


async def test_admin_creates_webhooks_others_cannot(nursery: trio.Nursery, tmp_path: Path) -> None:
    receiver = Receiver()
    await nursery.start(receiver.serve)
    (tmp_path / "own").mkdir()
    acl = write_acl(tmp_path / "own", ACL.replace("allow publish admin/#", "allow all admin/#"))
    server: Server = await start(nursery, tmp_path, acl_file=str(acl))
    secret = new_secret()
    # userinfo in the URL: Basic credentials, the password never shown
    url = receiver.url.replace("http://", "http://hook:pa%40ss-1@")
    masked = receiver.url.replace("http://", "http://hook:********@")
    spec = {"url": url, "filter": "admin/#", "secret": secret, "start": "earliest"}
    async with server.http(ALICE) as alice, server.http(ADMIN) as admin:
        problem(await alice.put("/v1/webhooks/h", json=spec), 403, "forbidden")
        problem(await admin.put("/v1/webhooks/h", json={**spec, "secret": "x"}), 400,
                "invalid_webhook")  # fmt: skip
        # the admin may not read alice/#: a webhook delivers only what its creator reads
        problem(await admin.put("/v1/webhooks/h", json={**spec, "filter": "alice/#"}), 403,
                "forbidden")  # fmt: skip
        created = await admin.put("/v1/webhooks/h", json=spec)
        assert created.status_code == 201, created.text
        body = created.json()
        assert "secret" not in body and body["owner"] == "admin" and body["url"] == masked
        assert (await admin.post("/v1/topics/admin/x", content=b"hi")).status_code == 201
        await receiver.wait_for(1)
        basic = base64.b64encode(b"hook:pa@ss-1").decode()
        assert receiver.requests[0].headers["authorization"] == f"Basic {basic}"
        while (shown := (await admin.get("/v1/webhooks/h")).json())["status"]["delivered"] < 1:
            await trio.sleep(0.01)
        assert shown["status"]["last_success"] is not None and "secret" not in shown
        listed = await admin.get("/v1/webhooks")
        assert [w["url"] for w in listed.json()["webhooks"]] == [masked]
        assert "pa%40ss" not in listed.text and "pa%40ss" not in shown["url"]
        problem(await alice.get("/v1/webhooks/h"), 404, "webhook_not_found")
        problem(await alice.get("/v1/webhooks/h", params={"owner": "admin"}), 404,
                "webhook_not_found")  # fmt: skip
        assert (await alice.get("/v1/webhooks")).json() == {"webhooks": []}
        metrics = (await admin.get("/metrics")).text
        assert 'tidelog_webhook_delivered_total{owner="admin",webhook="h"} 1.0' in metrics
        problem(await alice.delete("/v1/webhooks/h"), 404, "webhook_not_found")
        assert (await admin.delete("/v1/webhooks/h")).status_code == 204
        problem(await admin.get("/v1/webhooks/h"), 404, "webhook_not_found")


async def test_webhooks_from_the_configuration_file(nursery: trio.Nursery, tmp_path: Path) -> None:
    receiver = Receiver()
    await nursery.start(receiver.serve)
    toml = tmp_path / "tidelog.toml"
    toml.write_text(
        f"""
[[webhook]]
name = "orders"
url = "{receiver.url}"
filter = "orders/#"
secret = "{new_secret()}"
batch = 10
start = "earliest"
"""
    )
    config = ServerConfig.from_settings(cfg.load(str(toml), environ={}))
    config.storage, config.mqtt_port, config.ws_port, config.http_port = "memory://", None, None, 0
    assert config.webhooks[0]["name"] == "orders"
    running = await nursery.start(run_server, config)
    base = f"http://127.0.0.1:{running.ports['HTTP']}"
    async with httpx.AsyncClient(base_url=base) as client:
        events = [{"topic": "orders/eu", "payload": "eA=="} for _ in range(3)]
        assert (await client.post("/v1/events", json={"events": events})).status_code == 201
        await receiver.wait_for(1)
        shown = (await client.get("/v1/webhooks/orders")).json()
        assert shown["batch"] == 10 and shown["owner"] == "anonymous"


def test_config_show_prints_webhooks_without_the_secret(tmp_path: Path) -> None:
    toml = tmp_path / "tidelog.toml"
    secret = new_secret()
    toml.write_text(
        f'[[webhook]]\nname = "a"\nurl = "http://u:pw1@127.0.0.1:9/"\nsecret = "{secret}"\n'
        'headers = {x-team = "ops"}\n'
    )
    shown = cfg.render(cfg.load(str(toml), environ={}))
    assert "[[webhook]]" in shown and 'url = "http://u:********@127.0.0.1:9/"' in shown
    assert secret not in shown and "(set, not shown)" in shown


async def test_url_allow_list_refuses_other_destinations(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    receiver = Receiver()
    await nursery.start(receiver.serve)
    (tmp_path / "own").mkdir()
    acl = write_acl(tmp_path / "own", ACL.replace("allow publish admin/#", "allow all admin/#"))
    server: Server = await start(
        nursery, tmp_path, acl_file=str(acl), webhook_urls=[f"http://127.0.0.1:{receiver.port}/"]
    )
    spec = {"url": "http://u:pw1@169.254.169.254/latest/", "filter": "admin/#",
            "secret": new_secret()}  # fmt: skip
    async with server.http(ADMIN) as admin:
        refused = await admin.put("/v1/webhooks/probe", json=spec)
        problem(refused, 400, "invalid_webhook")
        detail = refused.json()["detail"]
        assert "is not allowed" in detail and "pw1" not in detail and "u:********@" in detail
        allowed = await admin.put("/v1/webhooks/ok", json={**spec, "url": receiver.url})
        assert allowed.status_code == 201, allowed.text
