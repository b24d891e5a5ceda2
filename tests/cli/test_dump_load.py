"""``tidelog dump`` / ``tidelog load``: a log moves between backends exactly (offsets,
timestamps, topics, payloads, qos, retain, properties, provenance, cursors, retained messages,
sessions), and bad input is refused clearly."""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import pytest
import trio

import tidelog
from tests.serve_process import ok, run
from tidelog.cli.common import Progress
from tidelog.cli.data import _Clock, dump_log, load_log
from tidelog.engine import NEVER_EXPIRES, Session, SessionSubscription
from tidelog.storage import NewEvent, Properties, Provenance, open_log

HAS_LMDB = importlib.util.find_spec("tidelog.storage.lmdb_log") is not None


async def build_source(url: str) -> None:
    full = Properties(
        payload_format=1,
        message_expiry=3600,
        content_type="application/json",
        response_topic="replies/1",
        correlation_data=b"\x00\x01corr",
        user_properties=(("unit", "C"), ("unit", "K"), ("ключ", "значение")),
    )
    async with tidelog.open(url) as broker:
        await broker.publish_many(
            [
                NewEvent("devices/1/temp", b"21.5", 1, False, full),
                NewEvent("devices/2/temp", b"\x00\xff\x10binary", 2, False, None),
                NewEvent("devices/2/temp", b"", 0, False, Properties()),
                NewEvent(
                    "devices/3/temp",
                    b"forwarded",
                    2,
                    False,
                    None,
                    Provenance("pub-7", 42, "node-a@1", 1234, ("node-a", "node-b")),
                ),
            ]
        )
        for n in range(30):  # several timestamps, several batches
            await broker.publish(f"stream/{n % 3}", b"%d" % n, qos=n % 3)
            if n % 10 == 0:
                await trio.sleep(0.003)
        await broker.publish("config/mode", b"eco", qos=1, retain=True)
        await broker.publish("config/level", b"3", qos=0, retain=True)
        await broker.publish("sensors/café", "ünïcode".encode(), retain=False)
        await broker.create_cursor("billing", "devices/#", start="earliest")
        cursor = await broker.create_cursor("all", None, start="earliest")
        await cursor.commit(7)
        session = Session(
            "client-1",
            expiry_interval=NEVER_EXPIRES,
            position=5,
            subscriptions={"devices/#": SessionSubscription("devices/#", {"qos": 1}, 0)},
        )
        await broker.sessions.save(session)


def records(text: str) -> list[dict[str, object]]:
    out = [json.loads(line) for line in text.splitlines()]
    assert out[0]["type"] == "tidelog-dump"
    del out[0]["source"]
    return out


async def test_round_trip_across_backends(tmp_path: Path) -> None:
    source = f"sqlite://{tmp_path}/source.db"
    await build_source(source)
    original = ok("dump", "--storage", source, cwd=tmp_path)
    dumped = records(original)
    kinds = [r["type"] for r in dumped]
    assert kinds.count("event") == 37
    assert kinds.count("cursor") == 2
    namespaces = {r["namespace"] for r in dumped if r["type"] == "state"}
    assert namespaces == {"retained", "sessions"}
    assert kinds[-1] == "end"
    provenance = [r["provenance"] for r in dumped if r["type"] == "event" and r["provenance"]]
    assert provenance == [
        {
            "client_id": "pub-7",
            "packet_id": 42,
            "origin_node": "node-a@1",
            "origin_offset": 1234,
            "hop_path": ["node-a", "node-b"],
        }
    ]
    timestamps = {r["timestamp"] for r in dumped if r["type"] == "event"}
    assert len(timestamps) > 3

    chain = [f"sqlite://{tmp_path}/copy.db"]
    if HAS_LMDB:  # LMDB -> SQLite and back
        chain = [f"lmdb://{tmp_path}/lmdb-copy", f"sqlite://{tmp_path}/from-lmdb.db"]
    previous = tmp_path / "original.jsonl"
    previous.write_text(original)
    for target in chain:
        loaded = ok("load", str(previous), "--storage", target, cwd=tmp_path)
        assert "loaded 37 events" in loaded
        again = ok("dump", "--storage", target, cwd=tmp_path)
        assert records(again) == dumped, target
        previous = tmp_path / "again.jsonl"
        previous.write_text(again)
        verified = run("verify", "--storage", target, cwd=tmp_path)
        assert verified.returncode == 0, verified.stdout + verified.stderr

    # the copy is a working broker: retained messages and sessions came along
    async with tidelog.open(chain[-1]) as broker:
        assert {e.topic for e in broker.retained.matching("config/#")} == {
            "config/mode",
            "config/level",
        }
        session = broker.sessions.get("client-1")
        assert session is not None and session.position == 5
        assert (await broker.cursor("all")).position == 7

    # and the memory backend, in process
    clock = _Clock()
    async with open_log("memory://", clock=clock) as memory:
        quiet = Progress("", 0, enabled=False)
        assert await load_log(memory, clock, io.StringIO(original), "dump", quiet) == 37
        out = io.StringIO()
        await dump_log(memory, "memory://", out, quiet)
    assert records(out.getvalue()) == dumped


def test_load_refuses_bad_input(tmp_path: Path) -> None:
    target = f"sqlite://{tmp_path}/t.db"
    header = {"type": "tidelog-dump", "version": 1, "source": "x", "first_offset": 0,
              "next_offset": 1}  # fmt: skip
    event = {"type": "event", "offset": 0, "timestamp": 1000, "topic": "a", "payload": "eA==",
             "qos": 0, "retain": False, "properties": None}  # fmt: skip
    cases = {
        "truncated": [header, event],
        "not-a-dump": [{"type": "something"}],
        "bad-payload": [header, {**event, "payload": "@@@"}, {"type": "end", "events": 1}],
        "late-start": [{**header, "first_offset": 5}],
    }
    messages = {
        "truncated": "truncated",
        "not-a-dump": "not a tidelog dump",
        "bad-payload": "bad event record",
        "late-start": "starts at offset 5",
    }
    for name, lines in cases.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(line) + "\n" for line in lines))
        result = run("load", str(path), "--storage", f"sqlite://{tmp_path}/{name}.db", cwd=tmp_path)
        assert result.returncode == 1, name
        assert messages[name] in result.stderr, (name, result.stderr)
    good = tmp_path / "good.jsonl"
    good.write_text(
        "".join(json.dumps(x) + "\n" for x in [header, event, {"type": "end", "events": 1}])
    )
    ok("load", str(good), "--storage", target, cwd=tmp_path)
    again = run("load", str(good), "--storage", target, cwd=tmp_path)
    assert again.returncode == 1 and "not empty" in again.stderr


@pytest.mark.skipif(not HAS_LMDB, reason="the LMDB backend is not merged yet")
def test_verify_and_reindex_lmdb(tmp_path: Path) -> None:
    url = f"lmdb://{tmp_path}/data"
    trio.run(build_source, url)
    verified = run("verify", "--storage", url, cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "verified 37 events" in verified.stdout
    reindexed = run("reindex", "--storage", url, "--progress", cwd=tmp_path)
    assert reindexed.returncode == 0, reindexed.stderr
    assert "reindexed" in reindexed.stdout and "37 events" in reindexed.stdout
