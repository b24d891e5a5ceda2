"""``$SYS/broker/...``: the broker's status as MQTT topics, refreshed periodically.

Names follow mosquitto's where one exists (``$SYS/broker/uptime``,
``clients/connected``, ``messages/received``, ``bytes/sent``, ...); the log's
own figures are under ``$SYS/broker/log/``. Payloads are plain text numbers
(``uptime`` is ``"<n> seconds"``, as in mosquitto).

They are *not* written to the log. ``$SYS`` values are a view of live state,
not events: storing them would put a dozen records per interval into every
replay, cursor lag and retention budget, and history of them belongs in a
metrics system (``/metrics``). So they go straight to the MQTT connections
subscribed to them, QoS 0, and the latest values are kept in memory and sent,
flagged retained, to a client when it subscribes (like mosquitto's retained
``$SYS`` messages). As ``$``-topics, they are not matched by ``#`` or ``+/...``
(MQTT 4.7.2); only MQTT clients see them (REST and WebSocket have
``/v1/stats`` and ``/metrics``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import trio

import tidelog

if TYPE_CHECKING:
    from tidelog.context import ServerContext

log = logging.getLogger(__name__)

PREFIX = "$SYS/broker/"


def sys_values(context: ServerContext, now: float | None = None) -> dict[str, bytes]:
    """The current ``$SYS`` topics and payloads."""
    counters = context.traffic
    server = context.mqtt
    stats = context.broker.statistics()
    now = time.time() if now is None else now
    values: dict[str, object] = {
        "version": f"tidelog {tidelog.__version__}",
        "uptime": f"{int(now - counters.started_at)} seconds",
        "clients/connected": len(server.connections),
        "clients/total": stats.sessions
        + sum(1 for c in server.connections.values() if not c.persistent),
        "clients/maximum": counters.connections_max["mqtt"],
        "messages/received": counters.packets_received["mqtt"],
        "messages/sent": counters.publishes_sent["mqtt"],
        "publish/messages/received": counters.publishes_received["mqtt"],
        "publish/messages/sent": counters.publishes_sent["mqtt"],
        "publish/messages/dropped": counters.rejected_packets["mqtt"],
        "bytes/received": counters.bytes_received["mqtt"],
        "bytes/sent": counters.bytes_sent["mqtt"],
        "retained messages/count": stats.retained,
        "subscriptions/count": stats.subscriptions,
        "log/first-offset": stats.log.first_offset,
        "log/next-offset": stats.log.next_offset,
        "log/bytes": stats.log.bytes,
        "log/segments": stats.log.segments,
        "log/events/committed": stats.published,
    }
    if context.mesh is not None:
        values["node/id"] = context.mesh.node_id
        for status in context.mesh.statuses.values():
            link = f"links/{status.name}/"
            values[link + "state"] = status.state
            values[link + "lag"] = status.lag
            values[link + "events/in"] = status.events_in
            values[link + "events/out"] = status.events_out
            values[link + "gaps"] = status.gaps
            values[link + "gap-events"] = status.gap_events
    return {PREFIX + name: str(value).encode() for name, value in values.items()}


async def publish_sys_topics(context: ServerContext, interval: float) -> None:
    """Refresh the ``$SYS`` topics every ``interval`` seconds until cancelled."""
    while True:
        context.mqtt.publish_sys(sys_values(context))
        await trio.sleep(interval)
