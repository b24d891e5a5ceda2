"""The MQTT load generator checks itself: counts against a real mosquitto, and
detection of lost and duplicated messages against a broker that misbehaves on purpose."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
import trio

from bench import mqtt_compare
from bench.brokers import PEERS, RunningBroker, Tidelog
from bench.load_clients import HEADER
from bench.load_scenarios import SCENARIOS, Scenario
from bench.mqtt_load import run_scenario
from tidelog.protocols.mqtt import (
    Connack,
    Connect,
    Decoder,
    Disconnect,
    Pingreq,
    Pingresp,
    Puback,
    Publish,
    ReasonCode,
    Suback,
    Subscribe,
    encode,
)
from tidelog.testing.mqtt_client import LoadError, Target

MOSQUITTO = PEERS["mosquitto-unlimited"]
needs_mosquitto = pytest.mark.skipif(
    MOSQUITTO.unavailable() is not None,
    reason=f"{MOSQUITTO.unavailable()} (scripts/test.sh installs it in CI)",
)

SMALL = {"latency-500": 50, "fanout-100": 40, "fanin-100": 20, "e2e-qos1-64k": 100}
"""Messages per publisher in these tests (default 400); latency runs at 500 msg/s."""


@pytest.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[RunningBroker]:
    async with MOSQUITTO.start(tmp_path) as running:
        yield running


@needs_mosquitto
@pytest.mark.parametrize("level", [4, 5])
@pytest.mark.parametrize("name", [n for n, s in SCENARIOS.items() if s.kind == "load"])
async def test_scenario_against_mosquitto(mosquitto: RunningBroker, name: str, level: int) -> None:
    scenario = SCENARIOS[name]
    per_publisher = SMALL.get(name, 400)
    messages = per_publisher * scenario.publishers
    target = Target(mosquitto.host, mosquitto.port, mosquitto.pid)
    result = await run_scenario(
        target, scenario, broker="mosquitto", protocol_level=level, messages=per_publisher
    )
    assert result.errors == []
    assert (result.lost, result.duplicated, result.refused) == (0, 0, 0)
    assert result.messages == result.sent == result.accepted == messages
    assert result.rate > 0 and result.elapsed_s > 0
    assert result.broker_cpu_s is not None
    if scenario.subscribers:
        assert result.delivered == messages * scenario.subscribers
        assert result.latency is not None
        assert result.latency.count == messages * scenario.subscribers
        assert 0 < result.latency.p50_ns <= result.latency.p99_ns <= result.latency.max_ns
    else:
        assert result.delivered == 0 and result.latency is None
    if scenario.publish_qos:
        assert result.ack_latency is not None and result.ack_latency.count == messages


@needs_mosquitto
async def test_qos2_both_ways_and_several_publishers(mosquitto: RunningBroker) -> None:
    scenario = Scenario(
        "qos2-fan-in",
        "QoS 2 from 3 publishers to 2 subscribers at QoS 2",
        publish_qos=2,
        window=50,
        publishers=3,
        subscribers=2,
        subscribe_qos=2,
        messages=200,
        quick_messages=200,
    )
    result = await run_scenario(Target(mosquitto.host, mosquitto.port), scenario)
    assert result.errors == []
    assert (result.lost, result.duplicated, result.refused) == (0, 0, 0)
    assert result.sent == result.accepted == 600
    assert result.delivered == 1200  # every message at each of the two subscribers


# -- a broker that loses and duplicates on purpose -------------------------------


@attrs.define
class FaultyBroker:
    """Acks and forwards QoS 1 PUBLISHes, except: sequence number 3 is never
    delivered, 4 is delivered twice; packet id 5 is acked twice, 7 never."""

    subscribers: list[trio.SocketStream] = attrs.field(factory=list)
    next_id: int = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        decoder = Decoder()
        while data := await stream.receive_some(65_536):
            level = 4
            replies: list[bytes] = []
            for packet in decoder.feed(data):
                level = decoder.protocol_level or 4
                if isinstance(packet, Connect):
                    replies.append(encode(Connack(), level))
                elif isinstance(packet, Subscribe):
                    replies.append(encode(Suback(packet.packet_id, [1]), level))
                    self.subscribers.append(stream)
                elif isinstance(packet, Publish):
                    assert packet.packet_id is not None
                    if packet.packet_id != 7:
                        replies.append(encode(Puback(packet.packet_id), level))
                    if packet.packet_id == 5:
                        replies.append(encode(Puback(packet.packet_id), level))
                    seq, _ = HEADER.unpack_from(packet.payload)
                    copies = {3: 0, 4: 2}.get(seq, 1)
                    for _ in range(copies):
                        await self.forward(packet, level)
                elif isinstance(packet, Pingreq):
                    replies.append(encode(Pingresp(), level))
                elif isinstance(packet, Disconnect):
                    return
            if replies:
                await stream.send_all(b"".join(replies))

    async def forward(self, packet: Publish, level: int) -> None:
        for subscriber in self.subscribers:
            self.next_id += 1
            copy = Publish(packet.topic, packet.payload, qos=1, packet_id=self.next_id)
            await subscriber.send_all(encode(copy, level))


async def test_lost_and_duplicated_messages_are_counted(nursery: trio.Nursery) -> None:
    broker = FaultyBroker()
    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, broker.handle, 0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]
    scenario = attrs.evolve(SCENARIOS["e2e-qos1"], window=10)
    result = await run_scenario(Target("127.0.0.1", port), scenario, messages=20, stall_timeout=0.3)
    assert result.sent == 20
    assert result.accepted == 19  # packet id 7 was never acknowledged
    assert result.delivered == 19  # sequence number 3 never arrived
    assert result.lost == 1
    assert result.duplicated == 2  # one delivery twice, one PUBACK twice
    assert any("no acknowledgement" in error for error in result.errors)
    assert "1 messages were never acknowledged" in result.errors


TRICKLE = attrs.evolve(SCENARIOS["trickle"], rate=20.0)
"""The trickle scenario, faster per connection so that small tests end quickly."""


@needs_mosquitto
@pytest.mark.parametrize("level", [4, 5])
async def test_trickle_against_mosquitto(mosquitto: RunningBroker, level: int) -> None:
    """Many connections on one epoll thread: every message acknowledged and delivered once,
    every connection counted, the schedule kept."""
    target = Target(mosquitto.host, mosquitto.port, mosquitto.pid)
    result = await run_scenario(
        target, TRICKLE, broker="mosquitto", protocol_level=level, messages=3, connections=150
    )
    assert result.errors == []
    assert (result.lost, result.duplicated, result.refused) == (0, 0, 0)
    assert result.messages == result.sent == result.accepted == result.delivered == 450
    assert result.connections == 151  # and one subscriber
    assert result.latency is not None and result.latency.count == 450
    assert result.ack_latency is not None and result.ack_latency.count == 450
    assert result.broker_cpu_s is not None and result.rate > 0
    assert result.schedule_lag_s is not None


async def test_trickle_counts_lost_and_duplicated_messages(nursery: trio.Nursery) -> None:
    broker = FaultyBroker()
    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, broker.handle, 0, host="127.0.0.1")
    )
    port = listeners[0].socket.getsockname()[1]
    result = await run_scenario(
        Target("127.0.0.1", port), TRICKLE, messages=8, connections=2, stall_timeout=0.3
    )
    # per publisher, packet ids 1..8: id 7 never acknowledged, id 5 twice;
    # publisher 0 sends sequence numbers 0..7: 3 never delivered, 4 twice
    assert result.sent == 16
    assert result.accepted == 14
    assert result.delivered == 15
    assert result.lost == 1
    assert result.duplicated == 3
    assert "2 messages were never acknowledged" in result.errors
    assert any("stalled" in error for error in result.errors)


# -- the runner ------------------------------------------------------------------


@needs_mosquitto
def test_compare_runner_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mqtt.json"
    status = mqtt_compare.main(
        [
            "--quick",
            "--scale",
            "0.1",
            "--brokers",
            "mosquitto,mosquitto-unlimited",
            "--scenarios",
            "qos0-publish,qos1-publish-w100,e2e-qos1",
            "--baseline",
            "mosquitto-unlimited",
            "--json",
            str(out),
            "--markdown",
        ]
    )
    printed = capsys.readouterr().out
    assert status == 0, printed
    document = json.loads(out.read_text())
    assert {(s["scenario"], s["broker"]) for s in document["summary"]} == {
        (scenario, broker)
        for scenario in ("qos0-publish", "qos1-publish-w100", "e2e-qos1")
        for broker in ("mosquitto", "mosquitto-unlimited")
    }
    assert all(r["errors"] == [] and r["rate"] > 0 for r in document["results"])
    assert "vs mosquitto-unlimited" in printed
    assert "| e2e-qos1 | mosquitto |" in printed


def test_tidelog_peer_says_why_it_cannot_run_without_an_mqtt_listener() -> None:
    from tidelog import server

    has_mqtt = any(spec.port_field == "mqtt_port" for spec in server.LISTENERS)
    reason = Tidelog().unavailable()
    if has_mqtt:
        assert reason is None
    else:
        assert reason is not None and "no MQTT listener" in reason
        assert mqtt_compare.main(["--quick", "--brokers", "tidelog"]) == 2


async def test_a_refused_connection_is_an_error(nursery: trio.Nursery) -> None:
    async def refuse(stream: trio.SocketStream) -> None:
        decoder = Decoder()
        while data := await stream.receive_some(65_536):
            for packet in decoder.feed(data):
                if isinstance(packet, Connect):
                    refused = Connack(reason_code=ReasonCode.NOT_AUTHORIZED)
                    await stream.send_all(encode(refused, packet.protocol_level))

    listeners = await nursery.start(functools.partial(trio.serve_tcp, refuse, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    with pytest.raises(LoadError, match="CONNACK refused: Not authorized"):
        await run_scenario(Target("127.0.0.1", port), SCENARIOS["qos1-publish-w100"], messages=5)
