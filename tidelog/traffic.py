"""Traffic counters of the network layers (MQTT, REST, WebSocket), per server.

The engine counts what it commits and delivers (:meth:`Broker.statistics`);
the protocol adapters count what only they see: open connections by protocol,
packets and bytes on the wire, refused connections, malformed and rejected
packets. They update these counters per connection, per socket read or write
and per batch, never per message in a hot loop. ``/metrics`` and the
``$SYS`` topics read them. One :class:`TrafficCounters` belongs to each server's
:class:`~tidelog.context.ServerContext`, which hands it to the listeners.

Protocol names are ``mqtt`` (every MQTT transport), ``websocket`` (the native
``/v1/ws`` protocol) and ``sse`` (REST event streams).
"""

from __future__ import annotations

import time
from collections import Counter

import attrs


@attrs.define
class TrafficCounters:
    started_at: float = attrs.field(factory=time.time)
    connections: Counter[str] = attrs.field(factory=Counter)
    """Open now, by protocol."""
    connections_total: Counter[str] = attrs.field(factory=Counter)
    connections_max: Counter[str] = attrs.field(factory=Counter)
    rejected_connections: Counter[str] = attrs.field(factory=Counter)
    """Refused: over the connection limit, or CONNECT refused."""
    malformed_packets: Counter[str] = attrs.field(factory=Counter)
    rejected_packets: Counter[str] = attrs.field(factory=Counter)
    """Well-formed but refused (e.g. a publish the log refused, a protocol violation)."""
    packets_received: Counter[str] = attrs.field(factory=Counter)
    publishes_received: Counter[str] = attrs.field(factory=Counter)
    publishes_sent: Counter[str] = attrs.field(factory=Counter)
    bytes_received: Counter[str] = attrs.field(factory=Counter)
    bytes_sent: Counter[str] = attrs.field(factory=Counter)

    def opened(self, protocol: str) -> None:
        self.connections[protocol] += 1
        self.connections_total[protocol] += 1
        if self.connections[protocol] > self.connections_max[protocol]:
            self.connections_max[protocol] = self.connections[protocol]

    def closed(self, protocol: str) -> None:
        self.connections[protocol] -= 1
