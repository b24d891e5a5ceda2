"""`tidelog passwd` as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tidelog.security.passwords import Credentials, PasswordFile, check_password

ROOT = Path(__file__).resolve().parents[2]


def passwd(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidelog", "passwd", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_add_change_token_delete(tmp_path: Path) -> None:
    path = tmp_path / "users"
    args = ("--password-stdin", "--scrypt-n", "1024")
    assert passwd(str(path), "alice", *args, stdin="first\n").returncode == 0
    assert passwd(str(path), "bob", *args, stdin="bobs\n").returncode == 0
    assert passwd(str(path), "alice", *args, stdin="second\n").returncode == 0
    token_run = passwd(str(path), "alice", "--token")
    token = token_run.stdout.strip()
    assert token_run.returncode == 0 and token.startswith("tl_")
    credentials = Credentials.from_entries(PasswordFile.load(path).entries)
    assert check_password("second", credentials.password_hash("alice") or "")
    assert not check_password("first", credentials.password_hash("alice") or "")
    assert credentials.token_user(token) == "alice"
    assert path.stat().st_mode & 0o777 == 0o600
    assert "second" not in path.read_text() and token not in path.read_text()

    deleted = passwd(str(path), "alice", "-D")
    assert deleted.returncode == 0
    assert PasswordFile.load(path).users() == ["bob"]
    missing = passwd(str(path), "alice", "-D")
    assert missing.returncode == 1 and "no user 'alice'" in missing.stderr


def test_refuses_empty_passwords_and_bad_names(tmp_path: Path) -> None:
    path = tmp_path / "users"
    empty = passwd(str(path), "alice", "--password-stdin", stdin="\n")
    assert empty.returncode == 1 and "empty" in empty.stderr
    bad = passwd(str(path), "a:b", "--password-stdin", stdin="pw\n")
    assert bad.returncode == 1 and "':'" in bad.stderr
    assert not path.exists()
