"""The nodes serving one shared log (``kafka://``), as each announces itself.

Every node writes a small JSON record about itself into the log's ``cluster``
state namespace every few seconds (its id, listeners, connections, how far it
has routed the log, when it started and when it wrote this); on a shared log
every node reads every other node's record, so ``GET /v1/cluster`` answers the
same on all of them. A node that stops cleanly removes its record; one that
dies stops refreshing it and is reported ``alive: false`` once its record is
older than three announce intervals; the live node with the lowest id then
takes over its shared groups and pending wills (:meth:`ClusterRegistry.dead_nodes`,
``Broker.take_over_dead_nodes``). On an unshared log (LMDB, SQLite, memory)
the registry lists the one node.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from tidelog.engine.state_writer import StateWriter
from tidelog.errors import StorageError
from tidelog.storage import Event, EventLog, NewEvent
from tidelog.storage.base import Clock

log = logging.getLogger(__name__)
NAMESPACE = "cluster"
ANNOUNCE_SECONDS = 2.0
"""How often a node refreshes its record; after three missed refreshes it counts as gone."""
CLIENTS = "cluster.clients"
"""State namespace: client id -> the claim of its last connection, a token
``<node>␞<nonce>`` (:func:`claim_node` reads the node; older values are a bare node)."""
TOKEN_SEP = "\x1e"
"""Separates the node and the nonce of a claim token (see :data:`CLIENTS`)."""


def claim_node(token: str) -> str:
    """The node of a claim token (a bare node id, as stored before tokens, is itself)."""
    return token.split(TOKEN_SEP, 1)[0]


CLAIMS = "$cluster/claims"
"""Log topic of takeover requests: ``{"client": id, "node": claimant, "owner": node,
"nonce": n}``; the owner node closes its connection of that client (MQTT 5 reason
0x8E), saves the session and answers on :data:`RELEASES` with the nonce."""
RELEASES = "$cluster/releases"
ClaimHandler = Callable[[str], Awaitable[None]]
"""Closes this node's connection of a client id (if any), returning once its session
is saved."""
Publish = Callable[[Sequence[NewEvent]], Awaitable[list[Event]]]


class ClusterRegistry:
    """Announces this node and lists every node of the log."""

    def __init__(self, log: EventLog, writer: StateWriter, clock: Clock, publish: Publish) -> None:
        self._log = log
        self._writer = writer
        self._clock = clock
        self._publish = publish
        self.node_id: str | None = None
        self.started_at = clock()
        self._local: dict[str, Any] | None = None
        self._claim_handler: ClaimHandler | None = None
        self._releases: dict[str, trio.Event] = {}
        self.claims: dict[str, str] = {}
        """Client id: the token this node's last claim of it wrote (its wills record it)."""
        self.takeover_timeout = 10.0
        """Seconds a claim waits for the owner node's release before going on without it."""

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

    # -- dead nodes ------------------------------------------------------------------

    async def dead_nodes(self, *, own: bool = False) -> tuple[list[dict[str, Any]], set[str]]:
        """The records of dead nodes whose shared groups and pending wills this node is
        to take over: every node not refreshed for three announce intervals and not yet
        taken over, if this node has the lowest id among the live ones (so one node
        does it); with ``own``, also this node's record from an earlier run (a restart).
        Also, if this node is the one, every node id with a record (else empty)."""
        node = self.node_id
        if not self._log.shared or node is None:
            return [], set()
        now = self._clock()
        records: dict[str, dict[str, Any]] = {}
        for node_id, raw in (await self._log.list_state(NAMESPACE)).items():
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict):
                records[node_id] = {**record, "id": node_id}
        alive = {node} | {
            node_id
            for node_id, record in records.items()
            if now - int(record.get("seen_at", 0)) <= 3000 * ANNOUNCE_SECONDS
        }
        dead = []
        for node_id, record in records.items():
            if record.get("reaped_by"):
                continue
            if node_id == node:
                if own and record.get("started_at") != self.started_at:
                    dead.append(record)
            elif node_id not in alive and min(alive) == node:
                dead.append(record)
        return dead, (set(records) | {node} if min(alive) == node else set())

    async def mark_taken_over(self, record: dict[str, Any]) -> None:
        """Record that this node took the dead node's groups and wills over (once),
        unless that node announced itself again meanwhile (a restart)."""
        raw = await self._log.get_state(NAMESPACE, str(record["id"]))
        try:
            now = json.loads(raw) if raw is not None else None
        except ValueError:
            now = None
        if not isinstance(now, dict) or now.get("seen_at") != record.get("seen_at"):
            return
        marked = {**record, "reaped_by": self.node_id}
        await self._writer.put(NAMESPACE, {str(record["id"]): json.dumps(marked).encode()})

    # -- client ids across nodes -----------------------------------------------------

    def on_claim(self, handler: ClaimHandler) -> None:
        """Register what closes a local connection when another node claims its client id."""
        self._claim_handler = handler

    async def claim_client(self, client_id: str) -> bool:
        """Make this node the client id's owner: if another live node had it, ask that
        node to close its connection and wait until it has saved the session (or
        :attr:`takeover_timeout` passed). Returns whether another node owned it (its
        pending will, if any, is to be cancelled). No-op on an unshared log."""
        node = self.node_id
        if not self._log.shared or node is None:
            return False
        raw = await self._log.get_state(CLIENTS, client_id)
        owner = claim_node(raw.decode()) if raw is not None else None
        token = self.claims[client_id] = f"{node}{TOKEN_SEP}{uuid.uuid4().hex[:16]}"
        await self._writer.put(CLIENTS, {client_id: token.encode()})
        if owner is None or owner == node:
            return False
        if not await self._alive(owner):
            return True
        nonce = uuid.uuid4().hex
        released = self._releases[nonce] = trio.Event()
        try:
            claim = {"client": client_id, "node": node, "owner": owner, "nonce": nonce}
            await self._publish([NewEvent(CLAIMS, json.dumps(claim).encode(), qos=1)])
            with trio.move_on_after(self.takeover_timeout) as waited:
                await released.wait()
            if waited.cancelled_caught:
                log.warning("node %s did not release client %r in time", owner, client_id)
        finally:
            del self._releases[nonce]
        return True

    def forget_claim(self, client_id: str) -> None:
        """The client id's last connection here has ended (its will, if any, is keyed
        with the token already): drop the token, so that the claims of a node kept
        up by many client ids over time stay bounded by its connections."""
        self.claims.pop(client_id, None)

    async def _alive(self, node: str) -> bool:
        raw = await self._log.get_state(NAMESPACE, node)
        if raw is None:
            return False
        try:
            seen = int(json.loads(raw).get("seen_at", 0))
        except (ValueError, AttributeError):
            return False
        return self._clock() - seen <= 3000 * ANNOUNCE_SECONDS

    async def run_claims(self, events: Any) -> None:
        """Serve claims and releases read from the log (``events``: a subscriber of
        ``$cluster/#``); each claim for this node runs in its own task."""
        async with trio.open_nursery() as nursery:
            async for event in events:
                try:
                    message = json.loads(event.payload)
                except ValueError:
                    continue
                if event.topic == RELEASES:
                    released = self._releases.get(message.get("nonce", ""))
                    if released is not None:
                        released.set()
                elif event.topic == CLAIMS and message.get("owner") == self.node_id:
                    nursery.start_soon(self._release, message)

    async def _release(self, claim: dict[str, Any]) -> None:
        client_id = str(claim.get("client"))
        try:
            if self._claim_handler is not None:
                await self._claim_handler(client_id)
            answer = {"client": client_id, "nonce": claim.get("nonce"), "node": self.node_id}
            await self._publish([NewEvent(RELEASES, json.dumps(answer).encode(), qos=1)])
        except StorageError as exc:
            log.warning("client %r not released to node %s: %s", client_id, claim.get("node"), exc)
