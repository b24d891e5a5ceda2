"""Every ``tidelog`` client and data command, through subprocesses: against a
running server (``--url``) and directly on storage (``--storage``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

import tidelog
from tests.serve_process import env, ok, run
from tidelog.cli import build_parser
from tidelog.testing.server import ServerProcess


def lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line]


def test_every_command_has_help_with_an_example(tmp_path: Path) -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, sub in commands.items():
        nested = [a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"]
        parsers = list(nested[0].choices.values()) if nested else [sub]  # type: ignore[attr-defined]
        for each in parsers:
            assert "example:" in each.format_help(), f"tidelog {name}"
    result = run("replay", "--help", cwd=tmp_path)
    assert result.returncode == 0 and "example:" in result.stdout


def test_links_target_options_before_or_after_the_action() -> None:
    """``--url``/``--token``/``--json`` are on ``links`` and on its actions: a value given
    before the action is not overwritten by the action's default, one after it wins."""
    parser = build_parser()
    url = "http://10.0.0.5:8080"
    args = parser.parse_args(["links", "--url", url, "--token", "t1", "remove", "x"])
    assert (args.url, args.token, args.name) == (url, "t1", "x")
    args = parser.parse_args(["links", "--json", "--url", url, "list"])
    assert args.json is True and args.url == url
    args = parser.parse_args(["links", "--url", "http://a:1", "show", "x", "--url", url])
    assert args.url == url
    args = parser.parse_args(["links", "list", "--json", "--user", "u"])
    assert args.json is True and args.user == "u" and args.url == parser.parse_args(["links"]).url
    assert parser.parse_args(["links", "add", "c", "--remote-url", "mqtt://h:1"]).json is False


def test_commands_against_a_server(tmp_path: Path, server: ServerProcess) -> None:
    url = ("--url", server.url)
    assert "offset 0" in ok("publish", "sensors/1", "-m", "hello", *url, cwd=tmp_path)
    (tmp_path / "blob").write_bytes(b"\x00\xffbinary")
    assert "offset 1" in ok("publish", "sensors/2", "--file", "blob", *url, cwd=tmp_path)
    out = ok("publish", "logs/app", "--qos", "0", *url, cwd=tmp_path, input="a\nb\nc\n")
    assert "3 events" in out and "offsets 2..4" in out

    assert ok("topics", *url, cwd=tmp_path).split() == ["logs/app", "3", "sensors/1", "1",
                                                        "sensors/2", "1"]  # fmt: skip
    topics = json.loads(ok("topics", "sensors/+", "--json", *url, cwd=tmp_path))
    assert [t["topic"] for t in topics] == ["sensors/1", "sensors/2"]
    assert "events:                 5" in ok("stats", *url, cwd=tmp_path)
    assert json.loads(ok("stats", "--json", *url, cwd=tmp_path))["state"]["next_offset"] == 5

    events = lines(ok("replay", "#", *url, cwd=tmp_path))
    assert [e["offset"] for e in events] == [0, 1, 2, 3, 4]
    assert events[0]["payload"] == "hello" and events[1]["encoding"] == "base64"
    middle = events[2]["timestamp"]
    window = lines(ok("replay", "logs/#", "--from-time", str(middle), "--to-time",
                      str(middle + 1), *url, cwd=tmp_path))  # fmt: skip
    assert [e["payload"] for e in window] == ["a", "b", "c"]
    raw = subprocess.run([sys.executable, "-m", "tidelog", "replay", "sensors/2", "--format",
                          "raw", *url], capture_output=True, cwd=tmp_path, env=env())  # fmt: skip
    assert raw.stdout == b"\x00\xffbinary\n"

    # tail: history from a position, then live; resumable by offset
    history = lines(ok("tail", "#", "--from", "offset:3", "--count", "2", *url, cwd=tmp_path))
    assert [e["offset"] for e in history] == [3, 4]
    live = subprocess.Popen([sys.executable, "-m", "tidelog", "tail", "live/#", "--count", "1",
                             *url], stdout=subprocess.PIPE, text=True, cwd=tmp_path,
                            env=env())  # fmt: skip
    server.wait_feeds(1)  # the stream is subscribed
    ok("publish", "live/x", "-m", "now", *url, cwd=tmp_path)
    out, _ = live.communicate(timeout=20)
    assert live.returncode == 0
    assert [e["payload"] for e in lines(out)] == ["now"]

    # cursors
    httpx.put(f"{server.url}/v1/cursors/billing", json={"filter": "logs/#", "start": "earliest"})
    listed = ok("cursors", "list", *url, cwd=tmp_path)
    assert "billing" in listed and "lag 6" in listed
    reset = json.loads(ok("cursors", "reset", "billing", "--to", "offset:4", *url, cwd=tmp_path))
    assert reset["position"] == 4 and reset["lag"] == 2
    shown = json.loads(ok("cursors", "show", "billing", *url, cwd=tmp_path))
    assert shown["position"] == 4 and shown["filter"] == "logs/#"
    latest = json.loads(ok("cursors", "reset", "billing", "--to", "latest", *url, cwd=tmp_path))
    assert latest["position"] == 6
    assert "deleted" in ok("cursors", "delete", "billing", *url, cwd=tmp_path)
    missing = run("cursors", "show", "billing", *url, cwd=tmp_path)
    assert missing.returncode == 1
    assert (
        missing.stderr.strip() == "tidelog: GET /v1/cursors/billing: 404 no cursor named 'billing'"
    )

    # while the server holds the data directory, direct access is refused clearly
    held = run("topics", "--storage", f"sqlite://{tmp_path}/log.db", cwd=tmp_path)
    assert held.returncode == 1 and "--url" in held.stderr


def test_errors_are_one_line(tmp_path: Path) -> None:
    down = run("stats", "--url", "http://127.0.0.1:9", cwd=tmp_path)
    assert down.returncode == 1
    assert down.stderr.startswith("tidelog: cannot reach the server at http://127.0.0.1:9")
    assert down.stderr.count("\n") == 1
    usage = run("cursors", "reset", "x", cwd=tmp_path)
    assert usage.returncode == 2 and "--to" in usage.stderr
    empty = run("publish", "a", "--storage", "memory://", cwd=tmp_path, input="")
    assert empty.returncode == 1 and "nothing to publish" in empty.stderr


def test_commands_on_storage(tmp_path: Path) -> None:
    storage = ("--storage", f"sqlite://{tmp_path}/log.db")
    ok("publish", "a/b", "-m", "one", *storage, cwd=tmp_path)
    ok("publish", "a/c", *storage, cwd=tmp_path, input="x\ny\n")
    assert ok("topics", *storage, cwd=tmp_path).split() == ["a/b", "1", "a/c", "2"]
    stats = json.loads(ok("stats", "--json", *storage, cwd=tmp_path))
    assert stats["state"]["next_offset"] == 3 and stats["backend"] == "sqlite"
    assert [e["payload"] for e in lines(ok("replay", "a/c", *storage, cwd=tmp_path))] == ["x", "y"]
    assert ok("cursors", "list", *storage, cwd=tmp_path) == ""
    verified = run("verify", *storage, "--progress", cwd=tmp_path)
    assert verified.returncode == 0
    assert "verified 3 events, 2 topics" in verified.stdout and "ok" in verified.stdout
    assert "reading events [" in verified.stderr  # the progress bar
    reindex = run("reindex", *storage, cwd=tmp_path)
    assert reindex.returncode == 1 and "only lmdb://" in reindex.stderr


def test_version_says_which_checksum_path_is_active(tmp_path: Path) -> None:
    try:
        from tidelog.storage import _crc32c  # type: ignore[attr-defined]
    except ImportError:
        built = "python"
    else:
        built = f"c/{_crc32c.IMPLEMENTATION}"
    version = f"tidelog {tidelog.__version__} (record checksums:"
    assert ok("--version", cwd=tmp_path).strip() == f"{version} {built})"
    forced = run("--version", cwd=tmp_path, TIDELOG_PURE_PYTHON="1")
    assert forced.stdout.strip() == f"{version} python)"
