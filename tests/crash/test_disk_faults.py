"""Disk faults through ``tidelog serve``: a full file system, unreadable and corrupt files.

The full disk is a small tmpfs the test mounts (it needs root; skipped with the
reason otherwise). While it is full, MQTT 5 publishers get PUBACK 0x97 (quota
exceeded), MQTT 3.1.1 publishers a closed connection, REST 507; nothing
acknowledged is lost, and once space returns the same broker takes publishes
again without a restart.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

from tests.crash.harness import read_everything
from tidelog.protocols.mqtt import Puback, Publish, encode
from tidelog.testing.mqtt_client import ClientConnection, LoadError, Target
from tidelog.testing.server import HOST, HarnessServer, default_storage

ROOT = Path(__file__).resolve().parents[2]
PAYLOAD = 32 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(path: Path) -> None:
    """Write ``path`` until the file system is full."""
    block = b"\xff" * 65_536
    with path.open("wb", buffering=0) as f:
        while True:
            try:
                f.write(block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
        while True:  # the last partial block
            try:
                f.write(b"\xff" * 512)
            except OSError:
                break


async def publish_qos1(
    connection: ClientConnection, topic: str, payloads: list[bytes]
) -> list[int]:
    """Publish QoS 1 one by one; the reason code of each PUBACK (stops at a closed one)."""
    codes = []
    for i, payload in enumerate(payloads):
        await connection.send(encode(Publish(topic, payload, 1, packet_id=i + 1), connection.level))
        with trio.fail_after(10):
            ack = await connection.expect(Puback)
        codes.append(ack.reason_code)
    return codes


def payloads(tag: str, count: int) -> list[bytes]:
    return [f"{tag}:{i}:".encode().ljust(PAYLOAD, b".") for i in range(count)]


async def test_full_disk_refuses_clearly_and_recovers_by_itself(
    small_disk: Path, tmp_path: Path
) -> None:
    server = HarnessServer(default_storage(small_disk), tmp_path / "server.log")
    await server.start()
    acked: list[bytes] = []
    try:
        target = Target(HOST, server.ports["MQTT"])
        v5 = await ClientConnection.open(target, "full-v5", 5)
        before = payloads("before", 5)
        assert await publish_qos1(v5, "disk/v5", before) == [0] * 5
        acked += before

        fill(small_disk / "filler")
        # MQTT 5: PUBACK 0x97 quota exceeded (a write may still fit in what the
        # backend had allocated: publish until the refusal comes)
        during = payloads("during", 200)
        codes: list[int] = []
        for payload in during:
            (code,) = await publish_qos1(v5, "disk/v5", [payload])
            codes.append(code)
            if code:
                break
            acked.append(payload)
        assert codes[-1] == 0x97, f"expected QUOTA_EXCEEDED, got {codes[-5:]}"

        # REST: 507 with a problem document
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{server.ports['HTTP']}") as http:
            body = {"events": [{"topic": "disk/rest", "payload": "x" * 60_000, "encoding": "text"}]}
            response = await http.post("/v1/events", json=body)
            assert response.status_code == 507, response.text
            assert response.json()["code"] == "storage_full"

        # MQTT 3.1.1 has no reason code in PUBACK: the connection closes instead
        v3 = await ClientConnection.open(target, "full-v3", 4)
        with pytest.raises(LoadError):
            await publish_qos1(v3, "disk/v3", payloads("v3", 3))

        # space returns: the same connection and a new one publish again, no restart
        (small_disk / "filler").unlink()
        after = payloads("after", 5)
        with trio.fail_after(10):
            assert await publish_qos1(v5, "disk/v5", after) == [0] * 5
        acked += after
        v3 = await ClientConnection.open(target, "full-v3", 4)
        again = payloads("v3-after", 1)
        assert await publish_qos1(v3, "disk/v3", again) == [0]
        acked += again
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{server.ports['HTTP']}") as http:
            response = await http.post("/v1/events", json=body)
            assert response.status_code == 201, response.text
        assert await server.terminate() == 0, server.tail()
    finally:
        server.kill()
    events, _ = await read_everything(server.storage)
    stored = [payload for _, payload in events]
    for payload in acked:
        assert stored.count(payload) == 1, f"{payload[:20]!r} stored {stored.count(payload)} times"
    assert [offset for offset, _ in events] == list(range(len(events)))


def serve_once(storage: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``tidelog serve`` expecting it to refuse to start."""
    return subprocess.run(
        [
            *(sys.executable, "-m", "tidelog", "serve", "--storage", storage),
            *("--mqtt-port", "0", "--http-port", "0", "--ws-port", "off"),
            *("--mqtt-tls-port", "off"),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _make_log(storage: str) -> None:
    from tidelog.storage import NewEvent, open_log

    async with open_log(storage) as log:
        await log.append([NewEvent("t", b"x" * 100) for _ in range(100)])


def _data_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.stat().st_size > 0)


@pytest.mark.parametrize("damage", ["unreadable", "corrupt"])
async def test_damaged_log_files_at_startup_name_the_file(tmp_path: Path, damage: str) -> None:
    directory = tmp_path / "data"
    directory.mkdir()
    storage = default_storage(directory)
    await _make_log(storage)
    files = [p for p in _data_files(directory) if "lock" not in p.name]
    assert files
    victim = max(files, key=lambda p: p.stat().st_size)  # the events
    if damage == "unreadable":
        if os.geteuid() == 0:
            # root reads whatever the mode bits say: make it unreadable another way
            victim.unlink()
            victim.mkdir()
        else:
            victim.chmod(0)
    else:
        data = bytearray(victim.read_bytes())
        for i in range(0, len(data), 97):
            data[i] ^= 0x5A
        victim.write_bytes(bytes(data))
    result = serve_once(storage, tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("tidelog: "), result.stderr[-2000:]
    # SQLite names its file; LMDB names the environment (the segment's directory)
    assert str(victim) in last or str(victim.parent) in last, last
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
