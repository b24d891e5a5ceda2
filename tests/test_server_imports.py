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
