"""The parts of ``bench.mesh`` that describe a latency run: the fsync policy given to
every node, the disk's own commit latency, each broker's scheduling per message and
its group commits (docs/mesh.md, "Benchmark")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.disk_probe import describe, format_probe, lmdb_commit_latency
from bench.mesh import _commits, _per_message, _tidelog_argv
from bench.process_stats import cpu_times, scheduler_delta, scheduler_seconds

REPO = Path(__file__).resolve().parents[2]


def _config_show(argv: list[str]) -> str:
    """``tidelog config show`` with the flags ``tidelog serve`` would get."""
    assert argv[1:4] == ["-m", "tidelog", "serve"]
    return subprocess.run(
        [sys.executable, "-m", "tidelog", "config", "show", *argv[4:]],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    ).stdout


def test_every_node_gets_the_fsync_policy_asked_for(tmp_path: Path) -> None:
    config = '[node]\nid = "n"\n'
    chosen = _config_show(_tidelog_argv(tmp_path, "n", 1883, 8080, config, "interval:100"))
    default = _config_show(_tidelog_argv(tmp_path, "n", 1883, 8080, config))
    assert 'fsync = "interval:100"' in chosen
    assert 'fsync = "interval:100"' not in default
    assert 'fsync = "always"' in default


def test_the_disk_probe_times_synced_lmdb_commits(tmp_path: Path) -> None:
    latency = lmdb_commit_latency(tmp_path, count=5)
    assert latency is not None
    assert latency.count == 5
    assert 0 < latency.p50_ns <= latency.p99_ns <= latency.max_ns
    info = describe(latency)
    assert format_probe(info, "commit").startswith("commit p50 ")
    assert list(tmp_path.iterdir()) == []  # its environment was removed


def test_scheduler_seconds_of_a_process_and_of_none() -> None:
    before = scheduler_seconds(os.getpid())
    sum(range(200_000))  # some CPU time
    after = scheduler_seconds(os.getpid())
    assert before is not None and after is not None
    running, _, _ = scheduler_delta(before, after)
    assert running > 0  # ran
    assert sum(count for _, _, count in after.values()) > 0  # put on a CPU at least once
    assert scheduler_seconds(2**22 + 12345) is None  # above the largest pid Linux gives
    per = _per_message({"a": before, "gone": None}, {"a": after, "gone": None}, 10)
    assert set(per) == {"a"}
    assert per["a"]["cpu_us"] == running * 1e6 / 10


def test_scheduler_delta_per_thread() -> None:
    """A thread that ended between the snapshots takes nothing away; a new one counts
    from zero."""
    before = {"1": (100, 10, 5), "2": (10_000, 50, 40)}
    after = {"1": (300, 30, 9), "3": (50, 5, 2)}  # 2 ended, 3 started
    assert scheduler_delta(before, after) == (250 / 1e9, 25 / 1e9, 6)


def test_commits_between_two_histograms() -> None:
    before = {"0.001": 5.0, "0.005": 10.0, "0.01": 10.0, "+Inf": 10.0, "count": 10, "sum": 0.02}
    # 100 commits more: 60 under 1 ms, 39 more under 5 ms, one of 8 ms
    after = {"0.001": 65.0, "0.005": 109.0, "0.01": 110.0, "+Inf": 110.0, "count": 110}
    after["sum"] = 0.02 + 0.25
    commits = _commits(before, after)
    assert commits["count"] == 100
    assert round(commits["mean_ms"], 6) == 2.5
    assert commits["p50_le_ms"] == 1.0
    assert commits["p99_le_ms"] == 5.0
    assert _commits(after, after) == {"count": 0}


def test_cpu_times_of_a_process_and_of_none() -> None:
    before = cpu_times(os.getpid())
    sum(range(2_000_000))  # some CPU time
    after = cpu_times(os.getpid())
    assert before is not None and after is not None
    assert sum(after) >= sum(before)
    assert cpu_times(2**22 + 12345) is None  # above the largest pid Linux gives


def test_the_receiver_bench_runs_a_link_against_its_scripted_origin() -> None:
    """``bench.mesh_receiver`` end to end, tiny: a receiver process takes the scripted
    origin's batches over a real link, all acknowledged, and the run is reported."""
    out = subprocess.run(
        [
            *(sys.executable, "-m", "bench.mesh_receiver", "--events", "2000"),
            *("--batch", "500", "--rate", "0", "--rounds", "1", "--threads"),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    ).stdout
    assert "CPU µs per event" in out
    assert "(4 batches of 500, offered unpaced)" in out
    assert "thread " in out
