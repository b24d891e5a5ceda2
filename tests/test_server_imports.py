"""An MQTT-only broker does not load the HTTP and WebSocket stacks, nor the webhooks' HTTP
client until a webhook exists (issue 19: memory, and CPU just after the port opens)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_importing_the_server_leaves_fastapi_pydantic_and_httpx_unloaded() -> None:
    code = (
        "import sys, tidelog.server, tidelog.cli.serve\n"
        "print(','.join(m for m in ('fastapi', 'pydantic', 'hypercorn', 'httpx') "
        "if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.strip() == ""


def test_enabled_http_and_websocket_stacks_load_before_any_listener_accepts(
    tmp_path: Path,
) -> None:
    """Their import takes a second or more of CPU on the event loop: done once the MQTT
    listener accepts, it would stall the connections (and links) already running."""
    code = (
        "import sys, trio, tidelog.server as server\n"
        "from tidelog.context import ServerConfig\n"
        "seen = []\n"
        "mqtt = server.LISTENERS[0]\n"
        "async def watched(*args, **kwargs):\n"
        "    seen.append(all(m in sys.modules for m in "
        "('tidelog.api.rest', 'tidelog.websocket_listener')))\n"
        "    await mqtt.serve(*args, **kwargs)\n"
        "server.LISTENERS[0] = server.ListenerSpec('MQTT', 'mqtt_port', watched)\n"
        "async def main():\n"
        "    config = ServerConfig(storage=sys.argv[1], bind='127.0.0.1', mqtt_port=0,\n"
        "        mqtt_tls_port=None, ws_port=0, http_port=0)\n"
        "    async with trio.open_nursery() as nursery:\n"
        "        await nursery.start(server.run_server, config)\n"
        "        nursery.cancel_scope.cancel()\n"
        "trio.run(main)\n"
        "print(seen)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code, f"lmdb://{tmp_path / 'data'}"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    assert result.stdout.strip().splitlines()[-1] == "[True]"
