"""The load shapes of the MQTT benchmarks: a :class:`Scenario` is data (publishers,
subscribers, QoS, window, counts, rate); :data:`SCENARIOS` lists every one, in the
order runners use (``bench/mqtt_load.py`` runs them)."""

from __future__ import annotations

import attrs

from bench.load_clients import HEADER
from tidelog.testing.mqtt_client import (
    MAX_PACKET_ID,
)


@attrs.frozen
class Scenario:
    """A load shape. Counts are per publisher; ``rate`` is messages/s per publisher.

    With ``subscribers`` > 0 every subscriber subscribes (at ``subscribe_qos``)
    to all publishers' topics and must receive every message once; the rate is
    then deliveries/s.
    """

    name: str
    description: str
    publish_qos: int
    messages: int
    quick_messages: int
    window: int = 0
    subscribers: int = 0
    subscribe_qos: int = 1
    publishers: int = 1
    rate: float | None = None
    payload_size: int = 100
    kind: str = "load"
    """``load`` (a message stream), ``idle`` (``messages`` idle connections), ``burst``,
    or ``trickle`` (``publishers`` connections at ``rate`` msg/s each, :mod:`bench.trickle`)."""
    read_rate: float | None = None
    """burst: msg/s the subscriber reads while the publisher is still sending."""
    heavy: bool = False
    """Long and stable: runners repeat it once by default."""
    quick_publishers: int | None = None
    """Publishers of a quick (smoke) run, when fewer than ``publishers`` (trickle)."""

    def publisher_count(self, quick: bool) -> int:
        """Publishers of a run (a quick run may have fewer)."""
        if quick and self.quick_publishers is not None:
            return min(self.publishers, self.quick_publishers)
        return self.publishers

    @property
    def needs_qos(self) -> int:
        """The highest QoS the broker must support for this scenario."""
        return max(self.publish_qos, self.subscribe_qos if self.subscribers else 0)

    @property
    def figure(self) -> str:
        """What ``rate`` counts for this scenario."""
        if self.kind == "idle":
            return "connections/s"
        if self.kind == "burst":
            return "acked msg/s during the burst"
        if self.kind == "trickle":
            return "delivered msg/s"
        return "delivered msg/s" if self.subscribers else "acked msg/s"

    def __attrs_post_init__(self) -> None:
        if self.publish_qos not in (0, 1, 2) or self.subscribe_qos not in (0, 1, 2):
            raise ValueError("QoS must be 0, 1 or 2")
        if self.publish_qos and not 0 < self.window <= MAX_PACKET_ID:
            raise ValueError(f"QoS {self.publish_qos} needs a window of 1..{MAX_PACKET_ID}")
        if self.payload_size < HEADER.size:
            raise ValueError(f"payload must hold at least {HEADER.size} bytes")
        if self.kind not in ("load", "idle", "burst", "trickle"):
            raise ValueError(f"unknown scenario kind {self.kind!r}")
        if self.kind == "burst" and (self.publishers, self.subscribers) != (1, 1):
            raise ValueError("a burst has one publisher and one subscriber")
        if self.kind == "trickle" and not (self.rate and self.publish_qos == 1):
            raise ValueError("a trickle publishes QoS 1 at a fixed rate per connection")


def _trickle(
    name: str, connections: int, *, seconds: int, quick: tuple[int, int], heavy: bool = False
) -> Scenario:
    """A trickle scenario: ``connections`` publishers at 1 msg/s each for ``seconds``
    (quick: (connections, seconds)), one subscriber on a ``+`` wildcard."""
    return Scenario(
        name,
        f"{connections:,} connections each publishing QoS 1 at 1 msg/s (random phase, "
        "64-byte payloads) -> 1 subscriber on a + wildcard at QoS 1 (delivered msg/s)",
        publish_qos=1,
        window=1,
        publishers=connections,
        subscribers=1,
        rate=1.0,
        payload_size=64,
        kind="trickle",
        messages=seconds,
        quick_publishers=quick[0],
        quick_messages=quick[1],
        heavy=heavy,
    )


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "qos0-publish",
            "QoS 0 publish, 1 publisher, no subscriber (accepted msg/s)",
            publish_qos=0,
            messages=200_000,
            quick_messages=10_000,
        ),
        Scenario(
            "qos1-publish-w100",
            "QoS 1 publish, window 100, no subscriber (acked msg/s)",
            publish_qos=1,
            window=100,
            messages=50_000,
            quick_messages=2_000,
        ),
        Scenario(
            "qos1-publish-w1000",
            "QoS 1 publish, window 1000, no subscriber (acked msg/s)",
            publish_qos=1,
            window=1000,
            messages=50_000,
            quick_messages=2_000,
        ),
        Scenario(
            "e2e-qos1",
            "QoS 1 end to end, window 1000, 1 -> 1 subscriber at QoS 1 (delivered msg/s)",
            publish_qos=1,
            window=1000,
            subscribers=1,
            messages=50_000,
            quick_messages=2_000,
        ),
        Scenario(
            "latency-500",
            "QoS 1 at a fixed 500 msg/s, 1 -> 1 subscriber at QoS 1 (publish -> delivery)",
            publish_qos=1,
            window=100,
            subscribers=1,
            rate=500.0,
            messages=5_000,
            quick_messages=100,
        ),
        Scenario(
            "fanout-100",
            "QoS 1, window 1000, 1 -> 100 subscribers at QoS 1 (deliveries/s)",
            publish_qos=1,
            window=1000,
            subscribers=100,
            messages=2_000,
            quick_messages=20,
        ),
        Scenario(
            "fanin-100",
            "QoS 1, 100 publishers (window 100 each) -> 1 subscriber on a + wildcard at QoS 1 "
            "(delivered msg/s)",
            publish_qos=1,
            window=100,
            publishers=100,
            subscribers=1,
            messages=300,
            quick_messages=10,
        ),
        Scenario(
            "latency-2000",
            "QoS 1 at a fixed 2,000 msg/s, 1 -> 1 subscriber at QoS 1 (publish -> delivery)",
            publish_qos=1,
            window=100,
            subscribers=1,
            rate=2000.0,
            messages=6_000,
            quick_messages=200,
        ),
        Scenario(
            "e2e-qos1-1k",
            "1 KiB payloads, QoS 1 end to end, window 100, 1 -> 1 subscriber (delivered msg/s)",
            publish_qos=1,
            window=100,
            subscribers=1,
            payload_size=1024,
            messages=20_000,
            quick_messages=500,
        ),
        Scenario(
            "e2e-qos1-64k",
            "64 KiB payloads, QoS 1 end to end, window 100, 1 -> 1 subscriber (delivered msg/s)",
            publish_qos=1,
            window=100,
            subscribers=1,
            payload_size=65_536,
            messages=2_000,
            quick_messages=50,
        ),
        Scenario(
            "idle-10k",
            "10,000 idle MQTT connections held (connections/s, broker RSS per connection)",
            publish_qos=0,
            kind="idle",
            messages=10_000,
            quick_messages=100,
            heavy=True,
        ),
        Scenario(
            "burst",
            "QoS 1 burst, window 1000, to 1 subscriber reading 1,000 msg/s until the burst "
            "is acked, then draining (peak broker RSS, lost)",
            publish_qos=1,
            window=1000,
            subscribers=1,
            kind="burst",
            read_rate=1000.0,
            messages=1_000_000,
            quick_messages=2_000,
            heavy=True,
        ),
        _trickle("trickle", 2_000, seconds=20, quick=(300, 3)),
        _trickle("trickle-10k", 10_000, seconds=10, quick=(400, 2), heavy=True),
    )
}
"""Every scenario, in the order runners use."""
