"""kill -9 of a broker whose consumer group is mid-stream: after the restart nothing
acknowledged is delivered again and nothing is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import tidelog
from tests.engine.consume_child import EVENTS
from tests.storage.backends import BackendUnderTest, ManualClock

ROOT = Path(__file__).resolve().parents[2]


def run_and_kill(url: str) -> tuple[set[int], set[int]]:
    """(offsets whose ack returned, offsets whose ack was at least started)."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.engine.consume_child", url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdout is not None
    assert child.stdout.readline() == b"ready\n"
    time.sleep(0.5)
    child.send_signal(signal.SIGKILL)
    out, _ = child.communicate()
    acked: set[int] = set()
    started: set[int] = set()
    for line in out.decode().splitlines():
        kind, _, rest = line.partition(" ")
        offsets = {int(o) for o in rest.split() if o.isdigit()}
        if kind == "acked":
            acked |= offsets
        elif kind == "acking":
            started |= offsets
    return acked, started


async def test_kill_9_redelivers_only_unacknowledged(durable_backend: BackendUnderTest) -> None:
    url = durable_backend.url
    acked, started = run_and_kill(url)
    assert len(acked) > 20, "the child acknowledged too little to test anything"
    # two hours later every lease of the dead broker has ended
    clock = ManualClock(now=int(time.time() * 1000) + 7_200_000)
    delivered: list[int] = []
    async with tidelog.open(url, clock=clock) as broker:
        cursor = await broker.cursor("g")
        while batch := await cursor.fetch(500, member="after"):
            delivered += [e.offset for e in batch]
            await cursor.ack([e.offset for e in batch])
        assert cursor.position == EVENTS
    assert not acked & set(delivered)  # nothing acknowledged comes again
    assert len(delivered) == len(set(delivered))
    assert set(range(EVENTS)) <= set(delivered) | started  # nothing lost
    assert {o for o in range(EVENTS) if o % 7 == 0} <= set(delivered)
