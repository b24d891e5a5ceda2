"""The side-by-side suite's peers (nats-server, amqtt) and its non-stream scenarios
(idle connections, a burst to a slow subscriber), each run small against real brokers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest

from bench import mqtt_compare
from bench.brokers import PEERS, Peer, RunningBroker
from bench.load_clients import encode_publishes
from bench.load_scenarios import SCENARIOS
from bench.mqtt_load import run_scenario
from tidelog.protocols.mqtt import Decoder, Publish, Role
from tidelog.testing.mqtt_client import Target


def needs(peer: Peer) -> pytest.MarkDecorator:
    return pytest.mark.skipif(peer.unavailable() is not None, reason=str(peer.unavailable()))


MOSQUITTO = PEERS["mosquitto-unlimited"]
NATS = PEERS["nats"]
AMQTT = PEERS["amqtt"]


@pytest.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[RunningBroker]:
    async with MOSQUITTO.start(tmp_path) as running:
        yield running


@pytest.mark.parametrize(
    "peer",
    [pytest.param(NATS, marks=needs(NATS)), pytest.param(AMQTT, marks=needs(AMQTT))],
    ids=["nats", "amqtt"],
)
async def test_peer_runs_end_to_end_without_loss(peer: Peer, tmp_path: Path) -> None:
    async with peer.start(tmp_path) as running:
        target = Target(running.host, running.port, running.pid)
        result = await run_scenario(target, SCENARIOS["e2e-qos1"], broker=peer.name, messages=300)
    assert result.errors == []
    assert (result.lost, result.duplicated, result.refused) == (0, 0, 0)
    assert result.accepted == result.delivered == 300
    assert result.peak_rss_bytes is not None and result.peak_rss_bytes > 0
    assert peer.version()


def test_what_peers_cannot_do_is_skipped_not_failed(tmp_path: Path) -> None:
    assert NATS.cannot(level=5, qos=1) is not None
    assert NATS.cannot(level=4, qos=2) is not None
    assert NATS.cannot(level=4, qos=1) is None
    assert AMQTT.cannot(level=5, qos=0) is not None
    assert PEERS["tidelog"].cannot(level=5, qos=2) is None
    out = tmp_path / "skipped.json"
    # nothing runs: every scenario needs MQTT 5, which nats lacks
    status = mqtt_compare.main(
        ["--quick", "--brokers", "nats", "--protocol", "5", "--json", str(out)]
    )
    assert status == 0
    document = json.loads(out.read_text())
    assert document["summary"] == [] and document["results"] == []
    assert {skip["scenario"] for skip in document["skipped"]} == set(SCENARIOS)
    assert all("3.1.1 only" in skip["reason"] for skip in document["skipped"])


def test_slow_peers_are_capped_and_say_so() -> None:
    fanout = SCENARIOS["fanout-100"]
    assert AMQTT.work_cap is not None
    assert mqtt_compare.run_size(AMQTT, fanout, quick=False, scale=1.0) == (
        AMQTT.work_cap // 100,
        fanout.messages,
    )
    assert mqtt_compare.run_size(MOSQUITTO, fanout, quick=False, scale=1.0) == (
        fanout.messages,
        None,
    )
    idle = SCENARIOS["idle-10k"]
    assert mqtt_compare.run_size(AMQTT, idle, quick=False, scale=1.0) == (
        AMQTT.connection_cap,
        10_000,
    )


async def test_idle_connections_measure_accept_rate_and_memory(
    mosquitto: RunningBroker,
) -> None:
    target = Target(mosquitto.host, mosquitto.port, mosquitto.pid)
    result = await run_scenario(target, SCENARIOS["idle-10k"], broker="mosquitto", messages=300)
    assert result.errors == []
    assert result.connections == result.accepted == 300
    assert result.rate > 0
    assert result.rss_per_connection_bytes is not None
    assert result.rss_anon_per_connection_bytes is not None
    assert result.peak_rss_bytes is not None and result.rss_start_bytes is not None


async def test_burst_to_a_slow_subscriber_counts_every_message(
    mosquitto: RunningBroker,
) -> None:
    target = Target(mosquitto.host, mosquitto.port, mosquitto.pid)
    burst = attrs.evolve(SCENARIOS["burst"], read_rate=500.0)
    result = await run_scenario(target, burst, broker="mosquitto", messages=3000)
    assert result.errors == []
    assert (result.lost, result.duplicated) == (0, 0)
    assert result.accepted == result.delivered == 3000
    assert result.drain_s is not None and result.rate > 0
    assert result.latency is None  # it would measure the pacing, not the broker
    assert result.peak_rss_bytes is not None


async def test_a_burst_beyond_mosquittos_queue_cap_is_reported_lost(tmp_path: Path) -> None:
    async with PEERS["mosquitto"].start(tmp_path) as running:
        target = Target(running.host, running.port, running.pid)
        result = await run_scenario(
            target, SCENARIOS["burst"], broker="mosquitto", messages=5000, stall_timeout=1
        )
    assert result.accepted == 5000
    assert result.lost > 0  # max_queued_messages 1000 drops the rest
    assert result.lost == 5000 - result.delivered


@pytest.mark.parametrize("level", [4, 5])
def test_patched_publishes_match_the_codec(level: int) -> None:
    count = 65_540  # packet identifiers wrap after 65,535
    packets = encode_publishes("t/x", 1, count, 20, level, 7)
    decoded = Decoder(level, role=Role.CLIENT).feed(bytes(packets.buffer))
    assert len(decoded) == count
    for i in (0, 1, 2, 65_534, 65_535, 65_539):
        packet = decoded[i]
        assert isinstance(packet, Publish)
        assert packet.packet_id == i % 65_535 + 1
        assert int.from_bytes(packet.payload[:8], "big") == 7 + i
