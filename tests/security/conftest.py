"""Servers with security settings, password and ACL files for the security tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.protocols.mqtt.server_helpers import ServerThread
from tidelog.security import SecurityConfig
from tidelog.security.passwords import PasswordFile, hash_password, new_token
from tidelog.server import ServerConfig

FAST_N = 2**10
"""Cheap scrypt for test users (the cost is stored per entry)."""

USERS = {"alice": "alice-pw", "bob": "bob-pw", "admin": "admin-pw"}

ACL_TEXT = """\
# everyone
all
allow all devices/%c/#
allow subscribe,read public/#

anonymous
allow publish public/anon/#

user alice
allow all alice/#
allow publish,subscribe,read shared/#
deny subscribe,read shared/secret/#

user bob
allow publish shared/#
allow subscribe bob/#
"""


def write_users(directory: Path, users: dict[str, str] = USERS) -> Path:
    path = directory / "users.txt"
    passwords = PasswordFile()
    for user, password in users.items():
        passwords.set_password(user, hash_password(password, n=FAST_N))
    passwords.save(path)
    return path


def users_with_token(directory: Path, user: str = "alice") -> tuple[Path, str]:
    """The password file of :data:`USERS` plus a bearer token of ``user``."""
    path = write_users(directory)
    passwords = PasswordFile.load(path)
    token = new_token()
    passwords.add_token(user, token)
    passwords.save(path)
    return path, token


def write_acl(directory: Path, text: str = ACL_TEXT) -> Path:
    path = directory / "acl.txt"
    path.write_text(text)
    return path


def config(tmp_path: Path, **security: Any) -> ServerConfig:
    return ServerConfig(
        storage="memory://",
        mqtt_port=0,
        ws_port=0,
        http_port=0,
        mqtt_options={"session_save_interval": 0.05},
        security=SecurityConfig(**security),
    )


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., ServerThread]]:
    """Start a server (memory log, every listener on 127.0.0.1) with security settings."""
    started: list[ServerThread] = []

    def make(server_config: ServerConfig | None = None, **security: Any) -> ServerThread:
        running = ServerThread(server_config or config(tmp_path, **security)).start()
        started.append(running)
        return running

    try:
        yield make
    finally:
        for running in started:
            running.stop()


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    return write_users(tmp_path)


@pytest.fixture
def acl_file(tmp_path: Path) -> Path:
    return write_acl(tmp_path)


@pytest.fixture
def secured(
    make_server: Callable[..., ServerThread], users_file: Path, acl_file: Path
) -> ServerThread:
    """Passwords and the ACL above, anonymous clients allowed (loopback default),
    ``admin`` may read $SYS."""
    return make_server(password_file=str(users_file), acl_file=str(acl_file), sys_users=["admin"])
