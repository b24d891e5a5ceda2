"""`tidelog serve` as a process: ready lines, listeners, clean exit on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio_websocket

ROOT = Path(__file__).resolve().parents[1]


def start_server(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], dict[str, int]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tidelog", "serve", *args],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    ports: dict[str, int] = {}
    assert process.stderr is not None
    for line in process.stderr:
        match = re.search(r"(\w+) listening on [\d.]+:(\d+)", line)
        if match:
            ports[match.group(1)] = int(match.group(2))
        if "WebSocket listening" in line:
            break
    return process, ports


async def test_serve_runs_listeners_and_stops_on_sigterm(tmp_path: Path) -> None:
    process, ports = start_server(
        tmp_path,
        "--storage",
        "memory://",
        "--mqtt-port",
        "off",
        "--http-port",
        "off",
        "--ws-port",
        "0",
    )
    try:
        with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
            async with trio_websocket.open_websocket(
                "127.0.0.1", ports["WebSocket"], "/nope", use_ssl=False
            ):
                pass
        assert rejected.value.status_code == 404
        assert b"no WebSocket at /nope" in (rejected.value.body or b"")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tidelog", "serve", "--mqtt-port", "nope"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 2
    assert "not a port number" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "tidelog", "serve", "--storage", "nosuch://x"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 1
    assert "unknown scheme" in result.stderr


def test_tls_flags_are_accepted(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tidelog", "serve", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0
    for flag in ("--mqtt-tls-port", "--tls-cert", "--tls-key"):
        assert flag in result.stdout
