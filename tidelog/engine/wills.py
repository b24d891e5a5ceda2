"""Pending wills: will messages waiting for their delay, durable across restarts.

When a client with a will goes away without a normal DISCONNECT, the protocol
layer hands the will to :meth:`WillStore.set` with the delay still to wait
(MQTT 5 Will Delay Interval, bounded by the session expiry); a client that
comes back in time cancels it (:meth:`WillStore.cancel`). A will with a delay
is a *pending will*: it is kept in the log's ``wills`` state namespace (key:
the client id; value: the will as a record of :mod:`tidelog.storage.records`
whose timestamp is the time it is due on the broker's clock, in ms), so a
broker that is stopped or killed before the delay ran out publishes it after it
restarts: at its due time, or at once if that has passed.

Time is the broker's clock (:attr:`tidelog.engine.Broker.clock`, the wall clock
unless a test gives another): a will is due when that clock reaches its due
time. A waiting will re-reads the clock at least every ``recheck`` seconds, so
a clock that jumps (a test's ``ManualClock``) is noticed that soon.

Durability: :meth:`WillStore.set` is synchronous (the protocol layer calls it
while closing a connection), so the will is stored by the state writer's next
transaction, milliseconds later; a crash inside that window loses it. Once
published, the stored entry is deleted; a crash between the publish and that
delete publishes the will again after the restart (at least once, never lost).
A clean shutdown keeps pending wills stored (they are published after the
restart); wills of clients still connected at shutdown are not pending and are
not sent (docs/mqtt.md).

On a shared log (a cluster, docs/cluster.md) a connected client's will is also
*armed*: stored in the ``wills.armed`` namespace while it is connected
(:meth:`WillStore.arm`, dropped by :meth:`WillStore.disarm` when the connection
ends on its node), so that if the node dies, the node that takes over
(:meth:`WillStore.adopt`) publishes it after its delay.

Several nodes write these namespaces, and a compacted topic has no
compare-and-set: a node's late delete must not remove a will another node has
stored meanwhile (a client taken over from node A by node B: A's disarm may
reach Kafka after B's arm). So on a shared log every stored will has a key of
its own, :func:`will_key`: ``client, owner, waiter, nonce`` joined by
:data:`SEP`, where ``owner`` is the claim token of the client's connection
(``ClusterRegistry.claim_client``: its node and a nonce),
``waiter`` the node that publishes the will when due, and the nonce makes the
key unique. A node deletes only keys it holds (its own armed wills, the
pending wills it waits for, a dead node's keys it took over), so a delete can
only ever remove the will it meant: compare-and-delete by key. Whether the
client came back meanwhile is decided when the will is due: it is published
only if its key is still stored and the client's claim (``cluster.clients``,
written by each connection) is still ``owner``. On an unshared
log the key is the client id, as it always was.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from tidelog.engine.cluster import CLIENTS, TOKEN_SEP, claim_node
from tidelog.engine.state_writer import UNREADABLE, StateWriter, report_unreadable
from tidelog.errors import TidelogError
from tidelog.storage import EventLog, NewEvent
from tidelog.storage.base import Clock, wall_clock_ms
from tidelog.storage.records import decode_record, encode_record

NAMESPACE = "wills"
ARMED = "wills.armed"
"""Shared logs: the wills of connected clients (see :meth:`WillStore.arm`)."""
SEP = "\x1f"
"""Separates the parts of a shared log's will key (:func:`will_key`)."""
log = logging.getLogger(__name__)


def will_key(client: str, owner: str, waiter: str, nonce: str | None = None) -> str:
    """A shared log's key of one stored will: unique, and naming the client's claim
    (``owner``) and the node that publishes it (``waiter``). ``nonce``: a taken-over
    will keeps its old key's, so taking it over again gives the same key."""
    return SEP.join((client, owner, waiter, nonce or uuid.uuid4().hex[:16]))


def parse_key(key: str) -> tuple[str, str | None, str | None]:
    """``(client, owner, waiter)`` of a stored will's key; a key that is a plain client
    id (an unshared log) has neither owner nor waiter."""
    parts = key.rsplit(SEP, 3)
    if len(parts) == 4:
        return parts[0], parts[1], parts[2]
    return key, None, None


class WillStore:
    """The broker's pending wills: a task per will, each stored until it is published."""

    def __init__(
        self,
        log: EventLog,
        writer: StateWriter,
        nursery: trio.Nursery,
        publish: Callable[[list[NewEvent]], Awaitable[Any]],
        clock: Clock = wall_clock_ms,
        recheck: float = 1.0,
        node: Callable[[], str | None] = lambda: None,
        claims: dict[str, str] | None = None,
    ) -> None:
        self._log = log
        self._clock = clock
        self._recheck = recheck
        self._writer = writer
        self._nursery = nursery
        self._publish = publish
        self._node = node
        """This node's id on a shared log (None until it is known)."""
        self._claims = {} if claims is None else claims
        """Client id: the token of this node's claim of it (``ClusterRegistry.claims``)."""
        self._scopes: dict[str, trio.CancelScope] = {}
        """Stored key of each will waited for here: its task."""
        self._local: dict[str, str] = {}
        """Client id: the key of its will set here (what :meth:`cancel` stops)."""
        self._armed: set[str] = set()
        """Keys of the armed wills of this run's connections."""
        self.published = 0

    def __len__(self) -> int:
        return len(self._scopes)

    def _key(self, client: str, owner: str | None = None, taken: str | None = None) -> str:
        """The key to store a new will of ``client`` under (see the module's doc);
        ``taken``: the key of the will it takes over (whose nonce it keeps)."""
        if not self._log.shared:
            return client
        node = self._node() or ""
        if owner is None:  # the client's connection here: its claim's token
            owner = self._claims.get(client, node)
        nonce = None if taken is None else taken.rsplit(SEP, 1)[-1]
        return will_key(client, owner, node, nonce)

    def _parse(self, key: str) -> tuple[str, str | None, str | None]:
        """:func:`parse_key` on a shared log; on an unshared log the key is the client id
        as it is (never parsed: a client id may contain :data:`SEP`)."""
        return parse_key(key) if self._log.shared else (key, None, None)

    async def load(self, waiter: str | None = None) -> int:
        """Schedule the wills stored by an earlier run (due ones are published at once).
        On a shared log, with ``waiter`` this node's id: those this node waited for."""
        loaded = 0
        for key, raw in (await self._log.list_state(NAMESPACE)).items():
            _, owner, waits = self._parse(key)
            # owner None on a shared log: a will stored before keys named nodes (an
            # upgrade): every node loads it; the first to publish it deletes it
            old = owner is None and self._log.shared
            if (waits == waiter or old) and key not in self._scopes:
                loaded += self._schedule_stored(key, raw, owner)
        return loaded

    async def adopt(self, dead: str, lost_at: int) -> int:
        """Shared log: take over the wills of node ``dead`` (last seen at ``lost_at``):
        the pending wills it waited for, under keys of this node's, and its armed wills
        (its clients still connected when it died) as pending wills due their delay
        after ``lost_at``. Each is published when due if its client has not connected
        to a node since (:meth:`_still_due`). Returns how many."""
        adopted = 0
        for key, raw in (await self._log.list_state(NAMESPACE)).items():
            client, owner, waiter = parse_key(key)
            if waiter != dead or owner is None or key in self._scopes:
                continue
            new = self._key(client, owner, key)
            if new in self._scopes:  # taken over already (its old key not yet deleted)
                continue
            self._writer.put_nowait(NAMESPACE, {new: raw, key: None})
            adopted += self._schedule_stored(new, raw, owner, durable=False)
        for key, raw in (await self._log.list_state(ARMED)).items():
            client, owner, waiter = parse_key(key)
            if owner is None and key not in self._armed:  # stored before keys named nodes
                owner = await self._client_owner(client)
                waiter = None if owner is None else claim_node(owner)
            if waiter != dead or owner is None or key in self._armed:
                continue
            try:
                stored = decode_record(0, raw)
            except UNREADABLE as exc:
                report_unreadable(self._log, ARMED, key, exc, "That will is not published.")
                self._writer.put_nowait(ARMED, {key: None})
                continue
            will = NewEvent(
                stored.topic, stored.payload, stored.qos, stored.retain, stored.properties
            )
            due = lost_at + stored.timestamp
            new = self._key(client, owner, key)
            if new in self._scopes:  # taken over already (its old key not yet deleted)
                continue
            record = encode_record(will, due)
            self._writer.put_nowait(NAMESPACE, {new: record})
            self._writer.put_nowait(ARMED, {key: None})  # after: the writer keeps order
            log.info(
                "will of %r (its node died) on %r due in %.1f s",
                client,
                will.topic,
                (due - self._clock()) / 1000,
            )
            self._start(new, client, will, due, record, owner)
            adopted += 1
        return adopted

    async def waiters(self) -> set[str]:
        """Shared log: the nodes the stored pending wills wait on."""
        waiters = (parse_key(key)[2] for key in await self._log.list_state(NAMESPACE))
        return {node for node in waiters if node is not None}

    def arm(self, client: str, will: NewEvent, delay: float) -> str:
        """Shared log: store a connected client's will (and its delay, in the record's
        timestamp field, ms) for the node that takes over if this one dies. Returns the
        key, for :meth:`disarm`."""
        key = self._key(client)
        self._armed.add(key)
        self._writer.put_nowait(ARMED, {key: encode_record(will, int(delay * 1000))})
        return key

    def disarm(self, key: str) -> None:
        """The connection ended on its node, which handles the will itself: drop the
        will :meth:`arm` stored under ``key`` (only that one)."""
        self._armed.discard(key)
        self._writer.put_nowait(ARMED, {key: None})

    def _schedule_stored(
        self, key: str, raw: bytes, owner: str | None, *, durable: bool = True
    ) -> bool:
        """Wait for a stored will (published at once if it is due). ``durable=False``: its
        write is queued, not yet durable (the task waits for it before the will is due:
        else the check that it is still stored could miss it)."""
        client = self._parse(key)[0]
        try:
            stored = decode_record(0, raw)
        except UNREADABLE as exc:
            report_unreadable(
                self._log, NAMESPACE, key, exc, "The will of that client is not published."
            )
            return False
        will = NewEvent(stored.topic, stored.payload, stored.qos, stored.retain, stored.properties)
        delay = max(0, stored.timestamp - self._clock()) / 1000
        log.info("pending will of %r on %r loaded, due in %.1f s", client, will.topic, delay)
        self._start(key, client, will, stored.timestamp, None if durable else raw, owner)
        return True

    def set(self, client: str, will: NewEvent, delay: float) -> None:
        """Publish ``will`` after ``delay`` seconds unless :meth:`cancel` comes first."""
        self.cancel(client)
        record = None
        due = self._clock() + int(delay * 1000)
        key = self._key(client)
        if delay > 0:
            record = encode_record(will, due)
            self._writer.put_nowait(NAMESPACE, {key: record})  # before anything can cancel it
        self._start(key, client, will, due, record, self._parse(key)[1])

    def cancel(self, client: str) -> bool:
        """Drop the pending will of ``client`` set on this node; False if there was none.
        (One waiting elsewhere is not published: its client's owner changed.)"""
        key = self._local.pop(client, None)
        if key is None:
            return False
        scope = self._scopes.pop(key, None)
        if scope is not None:
            scope.cancel()
        self._writer.put_nowait(NAMESPACE, {key: None})
        return True

    def close(self) -> None:
        """Stop every will task; the stored wills stay for the next start."""
        for scope in self._scopes.values():
            scope.cancel()
        self._scopes.clear()
        self._local.clear()

    async def _client_owner(self, client: str) -> str | None:
        """The claim of ``client``'s last connection (``cluster.clients``: a token, or a
        bare node id if stored before tokens), if known."""
        try:
            now = await self._log.get_state(CLIENTS, client)
        except TidelogError as exc:
            log.warning("owner of client %r not read: %s", client, exc)
            return None
        return None if now is None else now.decode("utf-8", "replace")

    async def _still_due(self, key: str, client: str, owner: str | None) -> bool:
        """On a shared log: whether the will is still stored under ``key`` and its client
        has not connected to another node since (``owner`` still owns it)."""
        try:
            if await self._log.get_state(NAMESPACE, key) is None:
                return False
            if owner is None:
                return True
            now = await self._log.get_state(CLIENTS, client)
        except TidelogError as exc:
            log.warning("pending will of %r not checked (%s): publishing it", client, exc)
            return True
        if now is None:
            return True
        token = now.decode("utf-8", "replace")
        # the same connection's claim (a will stored before tokens names a bare node)
        return token == owner or (TOKEN_SEP not in owner and claim_node(token) == owner)

    def _start(
        self,
        key: str,
        client: str,
        will: NewEvent,
        due: int,
        record: bytes | None,
        owner: str | None,
    ) -> None:
        scope = trio.CancelScope()
        self._scopes[key] = scope
        if owner is None or self._node() in (claim_node(owner), None) or not self._log.shared:
            self._local[client] = key  # its client connecting here again cancels it
        self._nursery.start_soon(self._run, key, client, will, due, record, owner, scope)

    async def _until(self, due: int) -> None:
        """Wait until the broker's clock reaches ``due`` (ms), re-reading it at least
        every ``recheck`` seconds."""
        while (left := due - self._clock()) > 0:
            await trio.sleep(min(left / 1000, self._recheck))

    async def _run(
        self,
        key: str,
        client: str,
        will: NewEvent,
        due: int,
        record: bytes | None,
        owner: str | None,
        scope: trio.CancelScope,
    ) -> None:
        """Wait until the will is due, publish it, forget it. ``record`` (None if the will
        has no delay or was loaded) was queued for storage by :meth:`set`: putting it
        again waits until it is durable, and logs that it is."""
        with scope:
            if record is not None:
                if scope.cancel_called:  # cancel() came first (and queued its delete)
                    return
                await self._writer.put(NAMESPACE, {key: record})
                delay = max(0, due - self._clock()) / 1000
                log.info(
                    "pending will of %r on %r stored, due in %.1f s", client, will.topic, delay
                )
            await self._until(due)
            if self._scopes.get(key) is scope:  # else a newer will of the same key
                del self._scopes[key]
                if self._local.get(client) == key:
                    del self._local[client]
            if self._log.shared and not await self._still_due(key, client, owner):
                self._writer.put_nowait(NAMESPACE, {key: None})  # our key: only this will
                return  # its client came back (on any node), or it was cancelled
            try:
                await self._publish([will])
            except TidelogError as exc:
                log.warning("will message for %s on %r not published: %s", client, will.topic, exc)
                return
            self.published += 1
            if self._log.shared or key not in self._scopes:  # not replaced by a newer will
                self._writer.put_nowait(NAMESPACE, {key: None})
