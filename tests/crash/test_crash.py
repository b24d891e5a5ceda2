"""kill -9 under mixed load, restart, check every promise (see bench/crash.py).

CI runs ten kills; ``python -m bench.crash`` runs a hundred.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench.crash import Harness

pytestmark = pytest.mark.slow


async def test_kill_9_under_mixed_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    harness = Harness(tmp_path, kills=10, min_life=0.3, max_life=1.5, seed=int(time.time()))
    try:
        totals = await harness.run()
    finally:
        harness.server.kill()
    print(f"storage {harness.storage}: {totals.summary()}")
    assert not totals.violations, "\n".join(totals.violations[:20])
    assert totals.kills == 10
    assert totals.lost == 0
    assert totals.qos2_redelivered == 0, "a QoS 2 delivery came twice"
    # totals.qos2_duplicates (a QoS 2 PUBLISH resent with DUP after a kill between its
    # commit and the session save, stored twice) is a known limitation: reported only
    assert totals.acknowledged > 500, "too little load to test anything"
    for client in [*harness.publishers, harness.rest, *harness.subscribers]:
        assert client.connections >= totals.kills, f"{client.name} did not reconnect"
