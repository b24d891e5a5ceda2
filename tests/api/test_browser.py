"""The /v1/ws example page (/console/example.html) in headless Chromium: publish over
REST, the page shows it.

Chromium is driven over the Chrome DevTools Protocol (a WebSocket): the test
opens the page, waits until it reports "subscribed", publishes, and polls the
DOM until the event's row appears. Debian's ``chromium`` package is installed
by scripts/test.sh when it runs as root; without it the tests fail (CONTRACTS:
browser tests fail, never skip).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import shutil
import subprocess
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import trio
import trio_websocket

from tidelog.server import RunningServer, ServerConfig, run_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class DevTools:
    """A minimal CDP client for one page target."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> Any:
        call_id = next(self.ids)
        await self.ws.send_message(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(await self.ws.get_message())
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(message["error"])
                return message["result"]

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 15) -> Any:
        with trio.fail_after(timeout):
            while True:
                value = await self.evaluate(expression)
                if value:
                    return value
                await trio.sleep(0.1)


async def start_chromium(url: str, profile: Path) -> tuple[trio.Process, int]:
    assert CHROMIUM is not None, "chromium is not installed (scripts/test.sh installs it)"
    process = await trio.lowlevel.open_process(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--remote-allow-origins=*",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # no internet
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    seen = b""
    with trio.fail_after(30):
        while True:
            chunk = await process.stderr.receive_some(4096)
            if not chunk:
                raise RuntimeError(f"chromium exited: {seen.decode(errors='replace')}")
            seen += chunk
            match = re.search(rb"DevTools listening on ws://[\d.]+:(\d+)/", seen)
            if match:
                return process, int(match.group(1))


@contextlib.asynccontextmanager
async def open_page(url: str, profile: Path) -> AsyncIterator[DevTools]:
    """Chromium showing ``url``, driven through DevTools; closed on exit."""
    process, devtools_port = await start_chromium(url, profile)
    path = urllib.parse.urlsplit(url).path
    try:
        async with httpx.AsyncClient() as devtools_http:
            with trio.fail_after(15):
                while True:
                    targets = (
                        await devtools_http.get(f"http://127.0.0.1:{devtools_port}/json/list")
                    ).json()
                    pages = [t for t in targets if t["type"] == "page" and path in t["url"]]
                    if pages:
                        break
                    await trio.sleep(0.1)
        async with trio_websocket.open_websocket_url(pages[0]["webSocketDebuggerUrl"]) as ws:
            yield DevTools(ws)
    finally:
        process.terminate()
        with trio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()


async def test_example_page_shows_events_published_over_rest(
    client: httpx.AsyncClient, http_port: int, ws_port: int, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{http_port}/console/example.html?filter=browser/%23&ws=ws://127.0.0.1:{ws_port}/v1/ws"
    async with open_page(url, tmp_path / "profile") as page:
        await page.wait_for("document.getElementById('status').textContent === 'subscribed'")
        await client.post("/v1/topics/browser/hello", content="héllo from REST".encode())
        await client.post("/v1/topics/elsewhere", content=b"not shown")
        await client.post("/v1/topics/browser/bye", content=b"second")
        rows_js = "Array.from(document.querySelectorAll('tr.event'), r => r.textContent)"
        rows = await page.wait_for(f"{rows_js}.length >= 2 && {rows_js}")
        assert len(rows) == 2
        assert "browser/bye" in rows[0] and "second" in rows[0]  # newest first
        assert "browser/hello" in rows[1] and "héllo from REST" in rows[1]
        assert not any("not shown" in row for row in rows)


async def test_example_page_says_why_without_the_websocket_listener(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    config = ServerConfig(storage="memory://", mqtt_port=None, ws_port=None, http_port=0)
    running: RunningServer = await nursery.start(run_server, config)
    url = f"http://127.0.0.1:{running.ports['HTTP']}/console/example.html"
    async with open_page(url, tmp_path / "profile") as page:
        status = await page.wait_for(
            "(s => s.startsWith('unavailable') && s)(document.getElementById('status').textContent)"
        )
        assert "WebSocket listener is off" in status and "--ws-port" in status


async def test_swagger_ui_renders_without_internet(http_port: int, tmp_path: Path) -> None:
    """Every host but 127.0.0.1 is unresolvable for this browser: /docs must not need a CDN."""
    url = f"http://127.0.0.1:{http_port}/docs"
    async with open_page(url, tmp_path / "profile") as page:
        title = await page.wait_for(
            "(document.querySelector('.swagger-ui .info .title') || {}).textContent"
        )
        assert title.startswith("tidelog")
        operations = await page.wait_for(
            "document.querySelectorAll('.opblock').length > 10 && "
            "Array.from(document.querySelectorAll('.opblock-summary-path'), e => e.textContent)"
        )
        assert "/v1/events" in operations and "/v1/cursors/{name}/fetch" in operations
