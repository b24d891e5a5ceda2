"""`tidelog serve` refuses to expose an unauthenticated broker (before binding anything)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import trio

from tests.security.conftest import config
from tidelog.security import SecurityConfig, SecurityConfigError
from tidelog.server import RunningServer, run_server

ROOT = Path(__file__).resolve().parents[2]


def test_serve_on_all_interfaces_without_authentication_fails(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tidelog", "serve", "--storage", "memory://",
         "--bind", "0.0.0.0", "--mqtt-port", "0", "--ws-port", "off", "--http-port", "off"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 1
    assert "refusing to listen on 0.0.0.0 without authentication" in result.stderr
    assert "allow_anonymous = true" in result.stderr
    assert "listening" not in result.stderr


async def test_run_server_raises_before_binding(tmp_path: Path) -> None:
    server_config = config(tmp_path)
    server_config.bind = "0.0.0.0"
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(run_server, server_config)
    except* SecurityConfigError as group:
        assert "0.0.0.0" in str(group.exceptions[0])
    else:
        raise AssertionError("the server started")


async def test_other_loopback_addresses_are_loopback(nursery: trio.Nursery, tmp_path: Path) -> None:
    server_config = config(tmp_path)
    server_config.bind = "127.0.0.2"
    running: RunningServer = await nursery.start(run_server, server_config)
    assert running.ports["MQTT"] > 0
    nursery.cancel_scope.cancel()


async def test_explicit_allow_anonymous_is_accepted(tmp_path: Path) -> None:
    # check only: binding 0.0.0.0 in tests is avoided
    from tidelog.security.auth import load_security

    server_config = config(tmp_path, allow_anonymous=True)
    server_config.bind = "0.0.0.0"
    assert load_security(server_config).anonymous
    server_config.security = SecurityConfig(acl_file=str(tmp_path / "missing"))
    server_config.bind = "127.0.0.1"
    try:
        load_security(server_config)
    except SecurityConfigError as exc:
        assert "cannot read ACL file" in str(exc)
    else:
        raise AssertionError("a missing ACL file was accepted")
