"""``tidelog cursors`` with consumer options and per-event settlement, and
``tidelog webhooks``, through subprocesses against a running server and on storage."""

from __future__ import annotations

import json
from pathlib import Path

from tests.serve_process import ok, run
from tidelog.testing.server import ServerProcess


def test_group_commands_against_a_server(tmp_path: Path, server: ServerProcess) -> None:
    url = ("--url", server.url)
    ok("publish", "jobs/a", *url, cwd=tmp_path, input="a\nb\nc\n")
    created = json.loads(ok("cursors", "create", "w", "--filter", "jobs/#", "--from", "earliest",
                            "--ack-policy", "explicit", "--backoff", "1,5", "--max-deliver", "3",
                            *url, cwd=tmp_path))  # fmt: skip
    assert created["ack_policy"] == "explicit" and created["backoff"] == [1.0, 5.0]
    fetched = [
        json.loads(line)
        for line in ok("cursors", "fetch", "w", *url, cwd=tmp_path).split("\n")
        if line
    ]
    assert [e["offset"] for e in fetched] == [0, 1, 2]
    settled = json.loads(ok("cursors", "ack", "w", "0", "2", *url, cwd=tmp_path))
    assert settled == {"settled": 2, "position": 1, "pending": 1}
    assert json.loads(ok("cursors", "nak", "w", "1", *url, cwd=tmp_path))["settled"] == 1
    listing = ok("cursors", "list", *url, cwd=tmp_path)
    assert "leased 0" in listing and "pending 1" in listing
    # webhooks: this open server has no admin_users, so none can be created over REST
    assert json.loads(ok("webhooks", "list", "--json", *url, cwd=tmp_path)) == {"webhooks": []}
    refused = run("webhooks", "put", "h", "--endpoint", "http://127.0.0.1:9/", "--secret",
                  "whsec_" + "A" * 40, *url, cwd=tmp_path)  # fmt: skip
    assert refused.returncode == 1 and "admin_users" in refused.stderr


def test_group_commands_on_storage(tmp_path: Path) -> None:
    storage = ("--storage", f"sqlite://{tmp_path}/log.db")
    ok("publish", "jobs/a", *storage, cwd=tmp_path, input="a\nb\n")
    ok("cursors", "create", "w", "--filter", "jobs/#", "--from", "earliest", "--ack-policy",
       "explicit", *storage, cwd=tmp_path)  # fmt: skip
    ok("cursors", "fetch", "w", *storage, cwd=tmp_path)
    settled = json.loads(ok("cursors", "ack", "w", "0", "1", *storage, cwd=tmp_path))
    assert settled == {"settled": 2, "position": 2, "pending": 0}


def test_dump_and_load_carry_a_groups_leases(tmp_path: Path) -> None:
    source = ("--storage", f"sqlite://{tmp_path}/a.db")
    ok("publish", "jobs/a", *source, cwd=tmp_path, input="a\nb\nc\n")
    ok("cursors", "create", "w", "--filter", "jobs/#", "--from", "earliest", "--ack-policy",
       "explicit", "--ack-wait", "3600", *source, cwd=tmp_path)  # fmt: skip
    ok("cursors", "fetch", "w", *source, cwd=tmp_path)  # leases 0, 1, 2
    ok("cursors", "ack", "w", "0", "2", *source, cwd=tmp_path)
    (tmp_path / "dump.jsonl").write_text(ok("dump", *source, cwd=tmp_path))
    target = ("--storage", f"sqlite://{tmp_path}/b.db")
    ok("load", str(tmp_path / "dump.jsonl"), *target, cwd=tmp_path)
    shown = json.loads(ok("cursors", "show", "w", *target, cwd=tmp_path))
    assert (shown["position"], shown["pending"], shown["leased"]) == (1, 1, 1)
