"""This server as a node of a cluster: its name, and the task that announces it.

Every ``tidelog serve`` is a node; on a shared log (``kafka://``) several nodes
serve one log, and each one's record in the broker's cluster registry
(:mod:`tidelog.engine.cluster`) is what ``GET /v1/cluster`` and
``tidelog cluster`` list: id, listeners, connections, how far behind the log
head it is. See docs/cluster.md.
"""

from __future__ import annotations

import logging
import socket

import trio

from tidelog.context import ServerContext
from tidelog.engine.cluster import ANNOUNCE_SECONDS
from tidelog.errors import StorageError

log = logging.getLogger(__name__)


def node_id(context: ServerContext, ports: dict[str, int]) -> str:
    """The configured node id, or ``<host name>-<first listener port>``."""
    if context.config.node_id:
        return context.config.node_id
    port = ports.get("MQTT") or next(iter(ports.values()), 0)
    return f"{socket.gethostname()}-{port}"


async def announce_node(context: ServerContext, node: str, ports: dict[str, int]) -> None:
    """Refresh this node's record every :data:`ANNOUNCE_SECONDS` (and take over what
    dead nodes left, if this node is the one to); remove the record on a clean stop."""
    broker = context.broker
    broker.cluster.node_id = node
    first = True
    try:
        while True:
            info = {
                "listeners": dict(ports),
                "host": context.config.bind,
                "connections": dict(+context.traffic.connections),
                "position": broker.end_offset,
                "shares": broker.shares.progress(),
            }
            try:
                if first:  # the pending wills this node's earlier run waited for
                    await broker.wills.load(node)
                # what dead nodes left (and, once, this node's own earlier run)
                await broker.take_over_dead_nodes(own=first)
                first = False
                await broker.cluster.announce(node, info)
                broker.shares.start(node)  # joins only once the record exists
            except StorageError as exc:
                log.warning("node %s not announced: %s", node, exc)
            await trio.sleep(ANNOUNCE_SECONDS)
    finally:
        broker.shares.leave_all()  # queued before the record goes: see engine/shares.py
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await broker.cluster.leave()
