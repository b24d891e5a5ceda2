"""The nodes serving one shared log (``kafka://``), as each announces itself.

Every node writes a small JSON record about itself into the log's ``cluster``
state namespace every few seconds (its id, listeners, connections, how far it
has routed the log, when it started and when it wrote this); on a shared log
every node reads every other node's record, so ``GET /v1/cluster`` answers the
same on all of them. A node that stops cleanly removes its record; one that
dies stops refreshing it and is reported ``alive: false`` once its record is
older than three announce intervals. On an unshared log (LMDB, SQLite, memory)
the registry lists the one node.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from tidelog.engine.state_writer import StateWriter
from tidelog.errors import StorageError
from tidelog.storage import EventLog
from tidelog.storage.base import Clock

log = logging.getLogger(__name__)
NAMESPACE = "cluster"
ANNOUNCE_SECONDS = 2.0
"""How often a node refreshes its record; after three missed refreshes it counts as gone."""


class ClusterRegistry:
    """Announces this node and lists every node of the log."""

    def __init__(self, log: EventLog, writer: StateWriter, clock: Clock) -> None:
        self._log = log
        self._writer = writer
        self._clock = clock
        self.node_id: str | None = None
        self.started_at = clock()
        self._local: dict[str, Any] | None = None

    async def announce(self, node_id: str, info: dict[str, Any]) -> None:
        """Record this node (``info`` holds listeners, connections, position); on a
        shared log, store the record for the other nodes."""
        self.node_id = node_id
        record = {**info, "id": node_id, "started_at": self.started_at, "seen_at": self._clock()}
        self._local = record
        if self._log.shared:
            await self._writer.put(NAMESPACE, {node_id: json.dumps(record).encode()})

    async def leave(self) -> None:
        """Remove this node's record (a clean shutdown)."""
        if self.node_id is not None and self._log.shared:
            try:
                await self._writer.put(NAMESPACE, {self.node_id: None})
            except StorageError as exc:
                log.warning("could not remove node %s from the cluster: %s", self.node_id, exc)

    async def nodes(self, head: int) -> list[dict[str, Any]]:
        """Every node's last record, sorted by id, with ``alive`` and ``behind`` (offsets
        between the log's head and what the node had routed when it wrote the record)."""
        now = self._clock()
        out = []
        if self._log.shared:
            stored = await self._log.list_state(NAMESPACE)
        else:
            local = self._local
            stored = {} if local is None else {local["id"]: json.dumps(local).encode()}
        for node_id, raw in stored.items():
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            record["id"] = node_id
            record["alive"] = now - int(record.get("seen_at", 0)) <= 3000 * ANNOUNCE_SECONDS
            record["behind"] = max(0, head - int(record.get("position", head)))
            out.append(record)
        return sorted(out, key=lambda r: r["id"])
