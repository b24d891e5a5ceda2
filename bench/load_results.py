"""What one scenario run measured (:class:`ScenarioResult`, with its :class:`Latency`
percentiles) and its one-line summary (:func:`format_result`); the runners write
results as JSON lines and ``bench.charts`` draws them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs

MIB = 1024 * 1024


@attrs.frozen
class Latency:
    """Percentiles of a latency sample, nanoseconds (nearest rank)."""

    count: int
    p50_ns: int
    p99_ns: int
    p999_ns: int
    max_ns: int

    @classmethod
    def from_samples(cls, samples: Sequence[int]) -> Latency | None:
        if not samples:
            return None
        ordered = sorted(samples)
        n = len(ordered)

        def rank(q: float) -> int:
            return ordered[min(n - 1, max(0, math.ceil(q * n) - 1))]

        return cls(n, rank(0.50), rank(0.99), rank(0.999), ordered[-1])


@attrs.define
class ScenarioResult:
    """One run of one scenario against one broker.

    ``messages`` is what the scenario publishes (all publishers); ``accepted``
    the messages the broker acknowledged with success (QoS 0: confirmed read
    by PINGRESP); ``refused`` acknowledged with a failure reason code (v5);
    ``delivered`` distinct messages received, summed over subscribers.
    ``lost``: with subscribers, expected deliveries (messages x subscribers)
    that never arrived; without, messages never acknowledged. ``duplicated``:
    second copies delivered plus acks for packet identifiers not in flight.
    ``rate`` is delivered/s with subscribers, accepted/s without, over
    ``elapsed_s`` from the first send to the last delivery (or ack).
    ``latency`` is publish -> delivery; ``ack_latency`` publish -> PUBACK
    (PUBCOMP for QoS 2). CPU figures are seconds used during the run.
    """

    scenario: str
    broker: str
    protocol_level: int
    messages: int
    sent: int = 0
    accepted: int = 0
    refused: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    elapsed_s: float = 0.0
    rate: float = 0.0
    window: int | None = None
    latency: Latency | None = None
    ack_latency: Latency | None = None
    broker_cpu_s: float | None = None
    client_cpu_s: float = 0.0
    errors: list[str] = attrs.field(factory=list)
    rss_start_bytes: int | None = None
    """Broker VmRSS when the run started (after its clients connected, except idle)."""
    rss_anon_start_bytes: int | None = None
    peak_rss_bytes: int | None = None
    """Highest broker VmRSS sampled during the run (every 100 ms)."""
    peak_rss_anon_bytes: int | None = None
    """Highest broker RssAnon sampled during the run."""
    connections: int | None = None
    """idle: connections that got a CONNACK."""
    rss_anon_per_connection_bytes: float | None = None
    """idle: broker RssAnon growth / connections, 1 s after the last CONNACK."""
    rss_per_connection_bytes: float | None = None
    """idle: the same with VmRSS."""
    drain_s: float | None = None
    """burst: seconds from the last PUBACK until the subscriber had everything (or stalled)."""
    capped_from: int | None = None
    """Messages, all publishers (idle: connections), the scenario asks for, when
    the runner capped this broker below it; ``messages`` is what ran."""
    schedule_lag_s: float | None = None
    """trickle: how late after its due time the load generator's latest send left
    (near zero: the generator kept its schedule)."""

    @property
    def ok(self) -> bool:
        """No errors, nothing lost, nothing duplicated, nothing refused."""
        return not (self.errors or self.lost or self.duplicated or self.refused)

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def format_result(result: ScenarioResult) -> str:
    """One line per result, for logs and the command line."""
    parts = [
        f"{result.scenario:<20} {result.broker:<20} {result.rate:>12,.0f} msg/s",
        f"sent {result.sent} accepted {result.accepted} delivered {result.delivered}",
        f"lost {result.lost} dup {result.duplicated}",
    ]
    if result.refused:
        parts.append(f"refused {result.refused}")
    if result.window is not None:
        parts.append(f"window {result.window}")
    for label, latency in (("lat", result.latency), ("ack", result.ack_latency)):
        if latency:
            parts.append(
                f"{label} p50/p99/p99.9 {latency.p50_ns / 1e6:.2f}/{latency.p99_ns / 1e6:.2f}"
                f"/{latency.p999_ns / 1e6:.2f} ms"
            )
    if result.broker_cpu_s is not None:
        parts.append(f"broker cpu {result.broker_cpu_s:.2f} s")
    parts.append(f"client cpu {result.client_cpu_s:.2f} s")
    if result.peak_rss_bytes is not None:
        parts.append(
            f"peak RSS {result.peak_rss_bytes / MIB:.0f} MiB "
            f"(anon {(result.peak_rss_anon_bytes or 0) / MIB:.0f})"
        )
    if result.rss_anon_per_connection_bytes is not None:
        parts.append(
            f"anon RSS/conn {result.rss_anon_per_connection_bytes / 1024:.1f} KiB "
            f"(VmRSS {(result.rss_per_connection_bytes or 0) / 1024:.1f})"
        )
    if result.drain_s is not None:
        parts.append(f"drain {result.drain_s:.1f} s")
    if result.capped_from is not None:
        parts.append(f"capped from {result.capped_from}")
    if result.schedule_lag_s is not None:
        parts.append(f"connections {result.connections}, send lag <= {result.schedule_lag_s:.3f} s")
    line = "  ".join(parts)
    if result.errors:
        line += "\n    ERRORS: " + "; ".join(result.errors[:5])
    return line
