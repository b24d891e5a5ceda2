"""Durable before acknowledged: kill -9 the publishing broker, every acked event is there."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import tidelog
from tests.storage.backends import BackendUnderTest

ROOT = Path(__file__).resolve().parents[2]


def run_and_kill(url: str, tag: str, after: float) -> list[tuple[int, str]]:
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.engine.publish_child", url, tag],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    time.sleep(after)
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate()
    acked = []
    for line in out.decode().splitlines():
        parts = line.split(" ")
        if len(parts) == 2:  # a line cut by the kill was never acknowledged to anyone
            acked.append((int(parts[0]), parts[1]))
    return acked


async def test_acknowledged_events_survive_kill_9(durable_backend: BackendUnderTest) -> None:
    rng = random.Random(42)
    acked: dict[int, str] = {}
    for round_ in range(5):
        for offset, payload in run_and_kill(
            durable_backend.url, f"r{round_}", rng.uniform(0.8, 1.6)
        ):
            assert acked.setdefault(offset, payload) == payload
    assert len(acked) > 50, "the child acknowledged too little to test anything"
    async with tidelog.open(durable_backend.url) as broker:
        end = broker.end_offset
        stored = {}
        position = 0
        while position < end:
            result = await broker.log.read(position, limit=5000)
            stored.update((e.offset, e.payload.decode()) for e in result.events)
            position = result.next_offset
    assert sorted(stored) == list(range(end))  # dense offsets, nothing missing
    for offset, payload in acked.items():
        assert stored[offset] == payload  # every acknowledged event, intact
    assert len(set(stored.values())) == len(stored)  # no event stored twice
