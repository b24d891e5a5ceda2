"""This server as a node of a cluster: its name, and the task that announces it.

Every ``tidelog serve`` is a node; on a shared log (``kafka://``) several nodes
serve one log, and each one's record in the broker's cluster registry
(:mod:`tidelog.engine.cluster`) is what ``GET /v1/cluster`` and
``tidelog cluster`` list: id, listeners, connections, how far behind the log
head it is. See docs/cluster.md.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from typing import Any

import trio

from tidelog.context import ServerConfig, ServerContext
from tidelog.engine import Broker
from tidelog.engine.cluster import ANNOUNCE_SECONDS
from tidelog.errors import StorageError

log = logging.getLogger(__name__)


PROGRESS_SECONDS = 0.25
"""Between announces, how often a node re-announces when its shared groups' progress
moved: what the members of a node that dies acknowledged since its last record is
handed to the other nodes again (at least once), so this bounds those duplicates."""


def node_id(config: ServerConfig, shared: bool) -> str | None:
    """This node's one id: the configured ``[node] id`` / ``--node-id``; else, on a
    shared log (whose state every node shares), ``<host name>-<MQTT port>`` (the
    process id when that port is chosen at start); else None: the mesh's id stored
    in the data directory (:func:`tidelog.mesh.identity.load_identity`)."""
    if config.node_id:
        return config.node_id
    if not shared:
        return None
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:40] or "node"
    return f"{host}-{config.mqtt_port or os.getpid()}"


def _info(context: ServerContext, ports: dict[str, int]) -> dict[str, Any]:
    """What this node's record says of it (besides its id and times)."""
    broker = context.broker
    return {
        "listeners": dict(ports),
        "host": context.config.bind,
        "connections": dict(+context.traffic.connections),
        "position": broker.end_offset,
        "shares": broker.shares.progress(),
    }


class NodeStart:
    """What a node on a shared log does once at start, before its listeners accept (so
    a client reconnecting at once cannot get its earlier connection's will published
    while it is connected): load the pending wills this node's earlier run waited
    for, then take over that run's armed wills and groups (and what dead nodes left).
    Each step is done once; a step that failed (Kafka unreachable) is retried by
    :func:`announce_node`."""

    def __init__(self, broker: Broker, node: str) -> None:
        self._broker = broker
        self._node = node
        self.loaded = not broker.log.shared
        self.taken_over = not broker.log.shared

    @property
    def done(self) -> bool:
        return self.loaded and self.taken_over

    async def run(self) -> None:
        """Do the steps not yet done; raises StorageError if one fails."""
        self._broker.cluster.node_id = self._node
        if not self.loaded:
            await self._broker.wills.load(self._node)
            self.loaded = True
        if not self.taken_over:
            await self._broker.take_over_dead_nodes(own=True)
            self.taken_over = True

    async def try_run(self) -> None:
        """:meth:`run`, logging a failure (the announce loop retries)."""
        try:
            await self.run()
        except StorageError as exc:
            log.warning("node %s: its earlier run's wills not yet taken up: %s", self._node, exc)


async def announce_node(
    context: ServerContext, node: str, ports: dict[str, int], start: NodeStart | None = None
) -> None:
    """Refresh this node's record every :data:`ANNOUNCE_SECONDS` (and take over what
    dead nodes left, if this node is the one to), and in between whenever its shared
    groups' progress moved (:data:`PROGRESS_SECONDS`); remove the record on a clean
    stop. ``start``: the node's start steps (done before the listeners, normally);
    those not done yet are done first."""
    broker = context.broker
    broker.cluster.node_id = node
    start = start or NodeStart(broker, node)
    try:
        while True:
            try:
                if start.done:  # what dead nodes left
                    await broker.take_over_dead_nodes()
                else:
                    await start.run()
                await broker.cluster.announce(node, _info(context, ports))
                broker.shares.start(node)  # joins only once the record exists
            except StorageError as exc:
                log.warning("node %s not announced: %s", node, exc)
            await _announce_progress(context, node, ports)
    finally:
        broker.shares.leave_all()  # queued before the record goes: see engine/shares.py
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await broker.cluster.leave()


async def _announce_progress(context: ServerContext, node: str, ports: dict[str, int]) -> None:
    """Wait :data:`ANNOUNCE_SECONDS`, re-announcing every :data:`PROGRESS_SECONDS` if the
    shared groups' progress moved meanwhile."""
    shares = context.broker.shares
    announced = shares.progress()
    deadline = trio.current_time() + ANNOUNCE_SECONDS
    while (left := deadline - trio.current_time()) > 0:
        await trio.sleep(min(PROGRESS_SECONDS, left))
        progress = shares.progress()
        if progress == announced or trio.current_time() >= deadline:
            continue
        try:
            await context.broker.cluster.announce(node, _info(context, ports))
        except StorageError:
            continue  # the next full announce says so
        announced = progress
