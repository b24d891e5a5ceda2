"""What a new user does in the first hour with the CLI, through subprocesses against a
running server and on storage: publish a large file, consume from a cursor, read stats."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import httpx

from tests.serve_process import ok, run
from tidelog.testing.server import ServerProcess

MiB = 1024 * 1024


def test_publish_a_large_file_as_bytes(tmp_path: Path, server: ServerProcess) -> None:
    """13 MiB fits the default 16 MiB body limit as raw bytes (as base64 in JSON it
    would not); past the limit the server's 413 is shown, not a broken pipe."""
    payload = bytes(range(256)) * (13 * MiB // 256)
    (tmp_path / "big").write_bytes(payload)
    out = ok("publish", "files/big", "--file", "big", "--url", server.url, cwd=tmp_path)
    assert "offset 0" in out
    stored = httpx.get(f"{server.url}/v1/events", params={"limit": 1}, timeout=30).json()
    (event,) = stored["events"]
    assert event["properties"]["content_type"] == "application/octet-stream"
    raw = httpx.get(
        f"{server.url}/v1/events", params={"limit": 1, "max_bytes": 16 * MiB}, timeout=30
    )
    assert base64.b64decode(raw.json()["events"][0]["payload"]) == payload

    (tmp_path / "huge").write_bytes(b"\0" * (20 * MiB))
    refused = run("publish", "files/huge", "--file", "huge", "--url", server.url, cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.startswith("tidelog: POST /v1/topics/files/huge: 413 ")
    assert "larger than" in refused.stderr and "Broken pipe" not in refused.stderr
    assert refused.stderr.count("\n") == 1

    typed = ok("publish", "files/t", "--file", "big", "--content-type", "image/png",
               "--retain", "--url", server.url, cwd=tmp_path)  # fmt: skip
    assert "offset 1" in typed
    last = httpx.get(f"{server.url}/v1/events", params={"from_offset": 1}, timeout=30).json()
    assert last["events"][0]["properties"]["content_type"] == "image/png"
    assert last["events"][0]["retain"] is True


def test_consume_from_a_cursor(tmp_path: Path, server: ServerProcess) -> None:
    url = ("--url", server.url)
    for topic in ("orders/1", "audit/1", "orders/2", "audit/2", "audit/3", "orders/3"):
        ok("publish", topic, "-m", topic, *url, cwd=tmp_path)
    created = ok("cursors", "create", "billing", "--filter", "orders/#", "--from", "earliest",
                 *url, cwd=tmp_path)  # fmt: skip
    assert json.loads(created)["position"] == 0
    listed = ok("cursors", "list", *url, cwd=tmp_path)
    assert re.search(r"billing\s+position 0\s+pending 3\s+lag 6\s+filter orders/#", listed)

    fetched = run("cursors", "fetch", "billing", "--limit", "2", *url, cwd=tmp_path)
    assert fetched.returncode == 0, fetched.stderr
    events = [json.loads(line) for line in fetched.stdout.splitlines()]
    assert [e["payload"] for e in events] == ["orders/1", "orders/2"]
    assert "next offset 3" in fetched.stderr and "cursors commit billing 3" in fetched.stderr
    again = ok("cursors", "fetch", "billing", "--limit", "2", *url, cwd=tmp_path)
    assert again == fetched.stdout  # fetch does not move the cursor

    committed = json.loads(ok("cursors", "commit", "billing", "3", *url, cwd=tmp_path))
    assert (committed["position"], committed["pending"], committed["lag"]) == (3, 1, 3)
    last = run("cursors", "fetch", "billing", "--commit", "--format", "raw", *url, cwd=tmp_path)
    assert last.stdout == "orders/3\n" and "committed" in last.stderr
    shown = json.loads(ok("cursors", "show", "billing", *url, cwd=tmp_path))
    assert (shown["position"], shown["pending"], shown["lag"]) == (6, 0, 0)
    past = run("cursors", "commit", "billing", "99", *url, cwd=tmp_path)
    assert past.returncode == 1 and "400 cursor 'billing': cannot commit offset 99" in past.stderr


def test_consume_from_a_cursor_on_storage(tmp_path: Path) -> None:
    storage = ("--storage", f"sqlite://{tmp_path}/log.db")
    for topic in ("orders/1", "audit/1", "orders/2"):
        ok("publish", topic, "-m", topic, *storage, cwd=tmp_path)
    created = ok("cursors", "create", "billing", "--filter", "orders/#", "--from", "earliest",
                 *storage, cwd=tmp_path)  # fmt: skip
    assert json.loads(created)["pending"] == 2
    listed = ok("cursors", "list", *storage, cwd=tmp_path)
    assert re.search(r"billing\s+position 0\s+pending 2\s+lag 3", listed)
    fetched = run("cursors", "fetch", "billing", "--commit", *storage, cwd=tmp_path)
    assert [json.loads(line)["payload"] for line in fetched.stdout.splitlines()] == [
        "orders/1",
        "orders/2",
    ]
    shown = json.loads(ok("cursors", "show", "billing", *storage, cwd=tmp_path))
    assert (shown["position"], shown["pending"]) == (3, 0)
    missing = run("cursors", "fetch", "nobody", *storage, cwd=tmp_path)
    assert missing.returncode == 1 and "no cursor named 'nobody'" in missing.stderr


def test_stats_prints_times_people_read(tmp_path: Path, server: ServerProcess) -> None:
    ok("publish", "a/b", "-m", "x", "--url", server.url, cwd=tmp_path)
    out = ok("stats", "--url", server.url, cwd=tmp_path)
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \(\d+ s ago\)"
    assert re.search(r"first event:\s+" + stamp, out), out
    assert re.search(r"last event:\s+" + stamp, out), out
    assert not re.search(r"\b1\d{12}\b", out)  # no epoch milliseconds
    assert re.search(r"bytes:\s+\d+ \(\d+(\.\d)? (B|KiB)\)", out)
    empty = ok("stats", "--storage", "memory://", cwd=tmp_path)
    assert re.search(r"first event:\s+-\n", empty)
