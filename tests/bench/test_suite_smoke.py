"""The benchmark suite's one command runs end to end (smoke run, small counts), so it
cannot rot: real brokers, real sockets, real LMDB, real PNGs. No figure is checked
against a threshold; only that every measurement ran and tidelog lost and
duplicated nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import charts
from bench.brokers import PEERS, REPO
from bench.load_scenarios import SCENARIOS

AVAILABLE = [name for name, peer in PEERS.items() if peer.unavailable() is None]
TIDELOG_ONLY = {"replay-engine", "read-engine", "read-storage", "scan-raw-lmdb", "catch-up"}
CHARTS = ["mqtt-throughput.png", "mqtt-latency.png", "mqtt-cpu.png", "tidelog-only.png"]
HANG_GUARD = 900
"""Seconds before a hung suite is killed (a guard against hangs, not a speed check)."""


def run_compare(out: Path, *options: str) -> str:
    """``python -m bench.compare --quick --out OUT OPTIONS``; its output, asserting exit 0."""
    argv = [sys.executable, "-m", "bench.compare", "--quick", "--out", str(out), *options]
    done = subprocess.run(
        argv, cwd=REPO, capture_output=True, text=True, timeout=HANG_GUARD, check=False
    )
    log = (done.stdout + done.stderr)[-6000:]
    assert done.returncode == 0, log
    return log


@pytest.mark.slow
@pytest.mark.skipif("tidelog" not in AVAILABLE, reason="tidelog's MQTT server cannot run here")
def test_compare_quick_runs_every_part(tmp_path: Path) -> None:
    """Every MQTT scenario and every tidelog-only measurement on tidelog, then charts."""
    out = tmp_path / "results"
    log = run_compare(
        out, "--brokers", "tidelog", "--scale", "0.2", "--events", "20000", "--messages", "5000"
    )

    mqtt: dict[str, Any] = json.loads((out / "mqtt.json").read_text())
    assert list(mqtt["meta"]["brokers"]) == ["tidelog"]
    tidelog = {s["scenario"]: s for s in mqtt["summary"] if s["broker"] == "tidelog"}
    assert set(tidelog) == set(SCENARIOS), log
    assert not mqtt.get("skipped")
    for name, summary in tidelog.items():
        assert (summary["lost"], summary["duplicated"], summary["failed_runs"]) == (0, 0, 0), name
        assert summary["rate"] > 0, name
    results = [r for r in mqtt["results"] if r["broker"] == "tidelog"]
    assert results and all(not r["errors"] for r in results)

    only: dict[str, Any] = json.loads((out / "tidelog-only.json").read_text())
    measurements = {m["name"]: m for m in only["measurements"]}
    assert set(measurements) == TIDELOG_ONLY
    for name, m in measurements.items():
        assert (m["lost"], m["duplicated"], m["errors"]) == (0, 0, []), name
        assert m["rate"] > 0 and m["count"] > 0, name
    assert measurements["catch-up"]["count"] == 5000
    assert measurements["replay-engine"]["count"] == 20000

    for name in CHARTS:
        assert (out / name).read_bytes().startswith(b"\x89PNG"), name
    table = (out / "results.md").read_text()
    assert "| catch-up |" in table and "| e2e-qos1 | tidelog |" in table


PEERS_HERE = [name for name in AVAILABLE if name != "tidelog"]


@pytest.mark.slow
@pytest.mark.skipif(
    not PEERS_HERE, reason="no peer broker installed (scripts/test.sh installs them)"
)
def test_compare_quick_starts_every_peer(tmp_path: Path) -> None:
    """Every peer installed here starts, runs a scenario end to end and is charted beside
    tidelog (the peers' own losses are theirs to report, not a failure)."""
    out = tmp_path / "results"
    brokers = ",".join([*PEERS_HERE, *(["tidelog"] if "tidelog" in AVAILABLE else [])])
    log = run_compare(
        out, "--brokers", brokers, "--scenarios", "e2e-qos1", "--skip", "tidelog-only"
    )
    mqtt: dict[str, Any] = json.loads((out / "mqtt.json").read_text())
    assert set(mqtt["meta"]["brokers"]) == set(brokers.split(","))
    for summary in mqtt["summary"]:
        assert summary["failed_runs"] == 0 and summary["rate"] > 0, (summary["broker"], log)
    assert {s["broker"] for s in mqtt["summary"]} == set(brokers.split(","))
    assert (out / "mqtt-throughput.png").read_bytes().startswith(b"\x89PNG")
    assert not (out / "tidelog-only.json").exists()


def _summary(scenario: str, broker: str, rate: float, **extra: Any) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "broker": broker,
        "runs": 1,
        "rate": rate,
        "p50_ms": 0.3,
        "p99_ms": 1.5,
        "p999_ms": 4.0,
        "broker_cpu_us_per_msg": 5.0,
        "lost": 0,
        "duplicated": 0,
        "failed_runs": 0,
        **extra,
    }


def test_charts_cope_with_new_fields_losses_and_failures(tmp_path: Path) -> None:
    """Scenarios and fields the runner does not know yet (peak RSS, skipped), lost
    messages and failed runs still chart; a scenario missing for a broker leaves a gap."""
    document = {
        "meta": {"date": "2026-11-26T12:00:00+00:00", "protocol_level": 4, "repeat": 1},
        "summary": [
            _summary("qos0-publish", "tidelog", 200_000.0),
            _summary("qos0-publish", "mosquitto", 250_000.0, lost=12),
            _summary("qos0-publish", "amqtt", 0.0, failed_runs=1),
            _summary("latency-500", "tidelog", 500.0),
            _summary("latency-500", "mosquitto", 500.0),
            _summary("burst-slow", "tidelog", 1000.0, peak_rss_mib=80.5),
            _summary("burst-slow", "mosquitto", 1000.0, peak_rss_mib=512.0),
            _summary("idle-10k", "tidelog", 5000.0, rss_per_connection_kb=6.2),
            _summary("idle-10k", "amqtt", 0.0, skipped="not installed", runs=0),
        ],
    }
    path = tmp_path / "mqtt.json"
    path.write_text(json.dumps(document))
    written, skipped = charts.render(path, None, tmp_path / "images")
    assert sorted(p.name for p in written) == [
        "mqtt-cpu.png",
        "mqtt-latency.png",
        "mqtt-rss.png",
        "mqtt-throughput.png",
    ]
    assert skipped == []
    assert all(p.stat().st_size > 0 for p in written)

    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"meta": {}, "summary": []}))
    written, skipped = charts.render(empty, None, tmp_path / "none")
    assert written == [] and len(skipped) == 4
    assert charts.main(["--mqtt", str(empty), "--out", str(tmp_path / "none")]) == 1
