"""kill -9 under mixed load, restart, check every promise (see tests/crash/harness.py).

CI runs ten kills; ``python -m tests.crash.harness`` runs a hundred.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.crash.harness import Harness, Totals

pytestmark = pytest.mark.slow


async def run(harness: Harness) -> Totals:
    """Run the harness; its totals, after checking no promise was broken."""
    try:
        totals = await harness.run()
    finally:
        harness.server.kill()
    print(f"storage {harness.storage}: {totals.summary()}")
    assert not totals.violations, "\n".join(totals.violations[:20])
    return totals


async def test_kill_9_under_mixed_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    harness = Harness(tmp_path, kills=10, min_life=0.3, max_life=1.5, seed=int(time.time()))
    totals = await run(harness)
    assert totals.kills == 10
    assert totals.lost == 0
    assert totals.qos2_redelivered == 0, "a QoS 2 delivery came twice"
    assert totals.qos2_duplicates == 0, "a QoS 2 PUBLISH resent after a kill was stored twice"
    assert totals.acknowledged > 500, "too little load to test anything"
    for client in [*harness.publishers, harness.rest, *harness.subscribers]:
        assert client.connections >= totals.kills, f"{client.name} did not reconnect"


@pytest.mark.parametrize("scheme", ["lmdb", "sqlite"])
async def test_fsync_interval_keeps_its_bound_on_what_a_power_loss_could_take(
    tmp_path: Path, scheme: str
) -> None:
    """Under ``fsync=interval:50`` nothing acknowledged is lost to a kill -9 (the page
    cache survives it), and at every kill, the acknowledged events not yet fsynced (what
    a power loss at that moment would take) were all acknowledged after the last
    completed sync began (so within the interval plus one sync; see tests/crash/harness.py)."""
    location = f"{tmp_path}/data" if scheme == "lmdb" else f"{tmp_path}/log.db"
    storage = f"{scheme}://{location}?fsync=interval:50"
    harness = Harness(tmp_path, storage=storage, kills=5, min_life=0.3, max_life=1.5,
                      seed=int(time.time()))  # fmt: skip
    assert harness.interval_ms == 50
    totals = await run(harness)
    assert totals.kills == 5 and totals.lost == 0
    assert totals.qos2_duplicates == 0, "a QoS 2 PUBLISH resent after a kill was stored twice"
    assert totals.acknowledged > 200, "too little load to test anything"
