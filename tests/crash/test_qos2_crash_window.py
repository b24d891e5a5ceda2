"""A real kill -9 between a QoS 2 PUBLISH's commit and the save of its session.

The window is a few milliseconds wide, so the test holds it open: on LMDB the
events live in segment environments and the sessions in the ``meta`` environment,
each with its own cross-process write lock. This process takes the active
segment's write lock (the server's append waits), lets the server store the
session first (what it does before a QoS 2 PUBLISH), then takes meta's write
lock and lets the append through: the event is committed and the session save
that would record its packet identifier waits. Then ``tidelog serve`` is killed
with SIGKILL. After a restart, the client's resend must get PUBREC without a
second copy in the log, and its PUBREL a PUBCOMP.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import lmdb
import pytest
import trio

from tests.crash.harness import ServerProcess
from tests.protocols.mqtt.server_helpers import RawClient
from tidelog.protocols.mqtt import Pubcomp, Publish, Pubrec, Pubrel
from tidelog.storage import open_log
from tidelog.storage.lmdb_segment import MAX_DBS

pytestmark = pytest.mark.slow

CLIENT = "q2-window"


def open_env(path: Path) -> lmdb.Environment:
    return lmdb.open(str(path), subdir=True, max_dbs=MAX_DBS, map_size=1 << 30, create=False)


def stored_inflight(meta: lmdb.Environment) -> dict[str, object] | None:
    with meta.begin() as txn:
        raw = txn.get(b"sessions\x00" + CLIENT.encode(), db=meta.open_db(b"state", txn=txn))
    return None if raw is None else json.loads(raw)["inflight"]  # type: ignore[no-any-return]


async def wait_until(predicate: object, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await trio.sleep(0.02)


async def test_kill_9_between_commit_and_session_save_stores_the_resend_once(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    storage = f"lmdb://{data}"
    server = ServerProcess(storage, tmp_path / "server.log")
    await server.start()
    try:
        client = RawClient(server.ports["MQTT"])
        client.connect(CLIENT, clean=False)
        client.send(Publish("window/t", b"before", 2, packet_id=1))
        client.expect(Pubrec)
        client.send(Pubrel(1))
        client.expect(Pubcomp)

        segments = sorted(p for p in (data / "segments").iterdir() if p.name[0] != ".")
        segment, meta = open_env(segments[-1]), open_env(data / "meta")
        committed = segment.info()["last_txnid"]
        hold_segment = segment.begin(write=True)  # the server's next append waits
        client.send(Publish("window/t", b"in the window", 2, packet_id=2))
        # the server stores the session before it submits the PUBLISH (rx_end)
        await wait_until(
            lambda: "rx_end" in (stored_inflight(meta) or {}), "the session store first"
        )
        hold_meta = meta.begin(write=True)  # now the save after the commit waits
        hold_segment.abort()
        await wait_until(lambda: segment.info()["last_txnid"] > committed, "the commit")
        server.kill()
        hold_meta.abort()
        segment.close()
        meta.close()
    finally:
        server.kill()

    # the state the kill left: the event is stored, its identifier is not in the session
    async with open_log(storage) as log:
        events = (await log.read(0, None, limit=1000)).events
        session = json.loads(await log.get_state("sessions", CLIENT) or b"{}")
    window = [e for e in events if e.payload == b"in the window"]
    assert len(window) == 1
    assert window[0].provenance is not None
    assert (window[0].provenance.client_id, window[0].provenance.packet_id) == (CLIENT, 2)
    assert 2 not in session["inflight"]["in"]
    assert session["disconnected_at"] is None

    await server.start()
    try:
        client = RawClient(server.ports["MQTT"])
        assert client.connect(CLIENT, clean=False).session_present
        client.send(Publish("window/t", b"in the window", 2, dup=True, packet_id=2))
        assert client.expect(Pubrec).packet_id == 2
        client.send(Pubrel(2))
        assert client.expect(Pubcomp).packet_id == 2
        client.close()
        assert await server.terminate() == 0
    finally:
        server.kill()
    async with open_log(storage) as log:
        events = (await log.read(0, None, limit=1000)).events
    assert [e.payload for e in events].count(b"in the window") == 1
