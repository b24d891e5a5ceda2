"""Inbound QoS 2 exactly once across a crash, rebuilt from the log itself.

A crash can fall between the commit of a QoS 2 PUBLISH and the save of the session
that records its packet identifier (the PUBREC was never sent). The event carries
the publisher's client id and packet identifier (its provenance), and the stored
session says from where its client's QoS 2 events may be missing (``rx_end``); a
session left by a crash reads that range back when it resumes, so the client's
resend gets PUBREC without a second copy.

These tests build the state such a crash leaves, on real storage, by writing it
with the storage API while no server runs (the kill -9 itself is exercised in
tests/crash/test_qos2_crash_window.py and by the crash harness), then restart a
server on it and talk to it over a socket.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from tests.protocols.mqtt.server_helpers import RawClient, ServerThread
from tidelog.protocols.mqtt import Pubcomp, Publish, Pubrec, Pubrel
from tidelog.protocols.mqtt.stored_session import RX_WINDOW
from tidelog.server import ServerConfig
from tidelog.storage import NewEvent, Provenance, open_log


def storage_url(tmp_path: Path, scheme: str) -> str:
    return f"lmdb://{tmp_path}/data" if scheme == "lmdb" else f"sqlite://{tmp_path}/log.db"


def start(storage: str) -> ServerThread:
    config = ServerConfig(
        storage=storage,
        mqtt_port=0,
        ws_port=None,
        http_port=None,
        mqtt_options={"session_save_interval": 60},
    )
    return ServerThread(config).start()


async def leave_as_a_crash_would(
    storage: str, client_id: str, events: list[NewEvent], rx_end_at: int
) -> list[int]:
    """Append ``events`` and mark the stored session of ``client_id`` as a crash leaves
    it: connected (no ``disconnected_at``), with ``rx_end`` at the offset of
    ``events[rx_end_at]`` (the events before it count as recorded). Returns their
    offsets."""
    async with open_log(storage) as log:
        stored = await log.append(events)
        raw = await log.get_state("sessions", client_id)
        assert raw is not None
        session = json.loads(raw)
        session["disconnected_at"] = None
        session["inflight"]["rx_end"] = stored[rx_end_at].offset
        await log.put_state("sessions", {client_id: json.dumps(session).encode()})
    return [event.offset for event in stored]


async def copies(storage: str, payload: bytes) -> int:
    async with open_log(storage) as log:
        result = await log.read(0, None, limit=100_000)
    return sum(event.payload == payload for event in result.events)


def qos2(client_id: str, packet_id: int, payload: bytes) -> NewEvent:
    return NewEvent("dev/in", payload, 2, provenance=Provenance(client_id, packet_id))


@pytest.mark.parametrize("scheme", ["lmdb", "sqlite"])
def test_a_resend_after_a_crash_before_the_session_save_is_not_stored_twice(
    tmp_path: Path, scheme: str
) -> None:
    storage = storage_url(tmp_path, scheme)
    server = start(storage)
    client = RawClient(server.port)
    client.connect("dev", clean=False)
    client.send(Publish("dev/in", b"kept", 2, packet_id=3))
    assert client.expect(Pubrec).packet_id == 3  # stored, and listed in the session
    client.close()
    server.stop()

    # the crash: "lost-ack" (packet 9) was committed, the session save that would list
    # 9 never happened. "released" (packet 11) lies before rx_end: already accounted
    # for (its exchange ended), so 11 is free. Another client's packet 9 is not ours.
    trio.run(
        leave_as_a_crash_would,
        storage,
        "dev",
        [
            qos2("dev", 11, b"released"),
            qos2("dev", 9, b"lost-ack"),
            qos2("other", 12, b"someone else"),
        ],
        1,
    )
    server = start(storage)
    client = RawClient(server.port)
    assert client.connect("dev", clean=False).session_present
    client.send(Publish("dev/in", b"lost-ack", 2, dup=True, packet_id=9))
    assert client.expect(Pubrec).packet_id == 9
    client.send(Publish("dev/in", b"kept", 2, dup=True, packet_id=3))
    assert client.expect(Pubrec).packet_id == 3
    client.send(Publish("dev/in", b"new", 2, packet_id=11))  # 11 reused: a new message
    assert client.expect(Pubrec).packet_id == 11
    client.send(Publish("dev/in", b"new too", 2, packet_id=12))
    assert client.expect(Pubrec).packet_id == 12
    for packet_id in (9, 3, 11, 12):
        client.send(Pubrel(packet_id))
        assert client.expect(Pubcomp).packet_id == packet_id
    client.close()
    server.stop()
    for payload in (b"lost-ack", b"kept", b"new", b"new too", b"released"):
        assert trio.run(copies, storage, payload) == 1, payload


def test_pubrel_after_a_crash_gets_pubcomp_for_a_recovered_identifier(tmp_path: Path) -> None:
    """The client never saw the PUBREC of a recovered message, but a PUBREL for it (as
    after a PUBREC lost on the wire) completes it as known, not as "not found"."""
    storage = storage_url(tmp_path, "lmdb")
    server = start(storage)
    client = RawClient(server.port, level=5)
    client.connect("dev5", clean=False, properties=_expiry())
    client.close()
    server.stop()
    trio.run(leave_as_a_crash_would, storage, "dev5", [qos2("dev5", 40, b"x")], 0)
    server = start(storage)
    client = RawClient(server.port, level=5)
    assert client.connect("dev5", clean=False, properties=_expiry()).session_present
    client.send(Pubrel(40))
    pubcomp = client.expect(Pubcomp)
    assert (pubcomp.packet_id, pubcomp.reason_code) == (40, 0)
    client.close()
    server.stop()


def test_recovery_reads_a_bounded_range(tmp_path: Path) -> None:
    """The range read back is ``rx_end`` to ``rx_end + RX_WINDOW`` (the connection
    stores the session again before a QoS 2 PUBLISH could land past it): a QoS 2
    event of the client beyond it is not taken for an unrecorded one."""
    storage = storage_url(tmp_path, "lmdb")
    server = start(storage)
    client = RawClient(server.port)
    client.connect("far", clean=False)
    client.close()
    server.stop()
    filler = [NewEvent("fill", b"") for _ in range(RX_WINDOW)]
    trio.run(
        leave_as_a_crash_would,
        storage,
        "far",
        [qos2("far", 1, b"near"), *filler, qos2("far", 2, b"beyond")],
        0,
    )
    server = start(storage)
    client = RawClient(server.port)
    assert client.connect("far", clean=False).session_present
    client.send(Publish("dev/in", b"near", 2, dup=True, packet_id=1))
    assert client.expect(Pubrec).packet_id == 1
    client.send(Publish("dev/in", b"beyond", 2, dup=True, packet_id=2))
    assert client.expect(Pubrec).packet_id == 2
    client.close()
    server.stop()
    assert trio.run(copies, storage, b"near") == 1
    assert trio.run(copies, storage, b"beyond") == 2  # outside the range: stored again


def test_a_clean_restart_reads_nothing_back(tmp_path: Path) -> None:
    """A session its connection saved at the end (a clean stop) has no ``rx_end``."""
    storage = storage_url(tmp_path, "sqlite")
    server = start(storage)
    client = RawClient(server.port)
    client.connect("tidy", clean=False)
    client.send(Publish("dev/in", b"a", 2, packet_id=5))
    assert client.expect(Pubrec).packet_id == 5
    client.close()
    server.stop()

    async def stored() -> dict[str, object]:
        async with open_log(storage) as log:
            raw = await log.get_state("sessions", "tidy")
        assert raw is not None
        return json.loads(raw)  # type: ignore[no-any-return]

    session = trio.run(stored)
    assert session["disconnected_at"] is not None
    assert session["inflight"] == {**session["inflight"], "in": [5]}  # type: ignore[dict-item]
    assert "rx_end" not in session["inflight"]  # type: ignore[operator]


def _expiry() -> object:
    from tidelog.protocols.mqtt import Properties

    return Properties(session_expiry_interval=3600)
