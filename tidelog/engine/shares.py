"""Shared subscriptions across the nodes of a shared log (``kafka://``).

On one node a ``$share/<group>/<filter>`` group is one feed its members take
from, so each event goes to one member. With several nodes over one log, each
node has such a feed for its own members; this module makes the nodes split
the group's events so that each event goes to exactly one node (and there to
one member). The nodes never talk to each other: the membership is in the log.

* A node whose first local member joins a group appends
  ``{"op": "join", "group", "filter", "node"}`` to :data:`TOPIC`; when its last
  local member leaves, ``{"op": "leave", ..., "from": F}``, where ``F`` is the
  first offset its feed had not handed to a member.
* Every node reads these events in log order while routing, *before* the
  batch that holds them is fanned out (:meth:`ClusterShares.observe`), so every
  node knows the same member nodes at every offset. An event at offset ``o``
  belongs to ``members(o)[mix(o) % len(members(o))]``; each node's feed accepts
  only its own (:meth:`ClusterShares.owns`, the feed's ``accept``). While the
  member nodes are stable, each event goes to exactly one node.
* Nothing is lost when a node leaves: the events from ``F`` up to the leave
  event that belonged to the leaver are re-read from the log by the nodes that
  own them under the new membership (at least once: what the leaver had sent
  but not had acknowledged is delivered again).
* A node that dies cannot append its leave: a running node does it on its
  behalf (:meth:`ClusterShares.leave_for`, called by the broker's reaper, see
  :mod:`tidelog.engine.cluster`), with ``F`` the progress that node last
  announced (:meth:`ClusterShares.progress`, in its node record every 2 s).
  A node that reads a leave of itself while it still has members (a node
  taken for dead, or one that restarted) joins again.

The membership history kept per group is bounded (:data:`HISTORY` changes): a
node catching up further back than that assigns old events by the oldest
membership it kept.
"""

from __future__ import annotations

import bisect
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import trio

from tidelog.engine.fanout import Feed
from tidelog.engine.group_commit import Callback
from tidelog.errors import TidelogError
from tidelog.storage import Event, EventLog, NewEvent

log = logging.getLogger(__name__)
TOPIC = "$cluster/shares"
"""Log topic of membership changes of shared groups (one JSON object per event)."""
HISTORY = 256
"""Membership changes kept per group (to assign events read back from the log)."""
HANDBACK_PAGE = 1000
Key = tuple[str, str]
"""A shared group: (group name, inner topic filter)."""
Submit = Callable[[Sequence[NewEvent], Callback], None]
"""Queue events for the log (``Broker.publish_nowait``)."""


def _mix(offset: int) -> int:
    """Spread offsets over member nodes (consecutive matching events are not evenly
    spaced: a plain modulo could give one node all of them)."""
    return ((offset * 0x9E3779B1) & 0xFFFFFFFF) >> 7


class ClusterShares:
    """Which node delivers each event of each shared group; hands back a leaver's events."""

    def __init__(self, log: EventLog, nursery: trio.Nursery, submit: Submit) -> None:
        self._log = log
        self._nursery = nursery
        self._submit = submit
        self.node_id: str | None = None
        self._history: dict[Key, list[tuple[int, tuple[str, ...]]]] = {}
        """Per group: (first offset it applies to, member nodes sorted), ascending."""
        self._local: dict[Key, Feed] = {}
        self._joined: dict[Key, int] = {}
        """Offset of this node's join event as read back: it owns events above it."""
        self.handed_back = 0
        """Events this node took over from a node that left (metrics, tests)."""

    # -- the membership, from the log --------------------------------------------------

    async def load(self, end: int) -> None:
        """Read the membership changes stored before ``end`` (a node starting)."""
        position = (await self._log.state()).first_offset
        while position < end:
            page = await self._log.read(position, TOPIC, limit=HANDBACK_PAGE, end=end)
            self.observe(page.events, replay=True)
            if page.next_offset <= position:
                break
            position = page.next_offset

    def observe(self, events: list[Event], *, replay: bool = False) -> None:
        """Apply the membership changes among ``events`` (called in log order, before the
        batch is fanned out). ``replay``: from before this node started (no hand-back)."""
        for event in events:
            if event.topic == TOPIC:
                self._apply(event, replay)

    def _apply(self, event: Event, replay: bool) -> None:
        try:
            change = json.loads(event.payload)
            key = (str(change["group"]), str(change["filter"]))
            node = str(change["node"])
            start = int(change.get("from", event.offset))
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable shared-group change at offset %d", event.offset)
            return
        history = self._history.setdefault(key, [])
        before = history[-1][1] if history else ()
        if change.get("op") == "join":
            after = tuple(sorted({*before, node}))
            if node == self.node_id and not replay and key in self._local:
                self._joined.setdefault(key, event.offset)
        else:
            after = tuple(n for n in before if n != node)
        if after != before:
            history.append((event.offset + 1, after))
            del history[:-HISTORY]
        if replay or change.get("op") != "leave" or node not in before:
            return
        if self.node_id in after and key in self._local and start < event.offset:
            self._nursery.start_soon(self._hand_back, key, node, start, event.offset)
        if node == self.node_id and key in self._local:  # left for us (taken for dead?)
            log.warning(
                "node %s was left from %s by %s: joining again", node, key, change.get("by")
            )
            self._send("join", key)

    def members(self, key: Key, offset: int) -> tuple[str, ...]:
        """The member nodes of a group for the event at ``offset``."""
        history = self._history.get(key)
        if not history:
            return ()
        index = bisect.bisect_right(history, offset, key=lambda entry: entry[0]) - 1
        return history[index][1] if index >= 0 else ()

    def owner(self, key: Key, offset: int) -> str | None:
        """The node that delivers the group's event at ``offset`` (None: no member)."""
        members = self.members(key, offset)
        return members[_mix(offset) % len(members)] if members else None

    def owns(self, key: Key, offset: int) -> bool:
        """Whether this node delivers the group's event at ``offset``."""
        joined = self._joined.get(key)
        return joined is not None and offset > joined and self.owner(key, offset) == self.node_id

    # -- this node's members -----------------------------------------------------------

    def start(self, node_id: str) -> None:
        """This node's id is known: announce the groups it already has members of."""
        if self.node_id is not None:
            return
        self.node_id = node_id
        for key in self._local:
            self._send("join", key)

    def joined(self, key: Key, feed: Feed) -> None:
        """The first local member of a group joined (its feed accepts this node's events)."""
        self._local[key] = feed
        feed.accept = lambda offset: self.owns(key, offset)
        if self.node_id is not None:
            self._send("join", key)

    def left(self, key: Key, feed: Feed) -> None:
        """The last local member left: hand what the feed had not delivered back."""
        if self._local.get(key) is not feed:
            return  # left already (a clean shutdown leaves every group first)
        del self._local[key]
        self._joined.pop(key, None)
        if self.node_id is not None:
            self._send("leave", key, start=feed.unfinished_from)

    def leave_all(self) -> None:
        """A clean shutdown: leave every group this node has members of (their feeds
        are closed next), handing back what they had not delivered."""
        for key, feed in list(self._local.items()):
            self.left(key, feed)

    def member_nodes(self) -> set[str]:
        """Every node that is a member of some group now."""
        return {node for history in self._history.values() if history for node in history[-1][1]}

    def progress(self) -> list[list[Any]]:
        """``[group, filter, first offset not yet finished by a member]`` per local group
        (below it, every event of the node's share was acknowledged): in this node's
        record, for whoever leaves the groups for it if it dies."""
        return [
            [group, inner, feed.unfinished_from] for (group, inner), feed in self._local.items()
        ]

    def leave_for(self, node: str, progress: Any, since: int | None = None) -> int:
        """Leave every group ``node`` (gone) is a member of, handing back from the
        ``progress`` in its last record, else from ``since``, else from when it joined.
        Returns how many groups."""
        known: dict[Key, int] = {}
        for entry in progress if isinstance(progress, list) else ():
            try:
                known[(str(entry[0]), str(entry[1]))] = int(entry[2])
            except (TypeError, ValueError, IndexError):
                continue
        count = 0
        for key, history in self._history.items():
            if history and node in history[-1][1]:
                start = known.get(key, since if since is not None else self._joined_at(key, node))
                self._send("leave", key, node=node, start=start)
                count += 1
        return count

    def _joined_at(self, key: Key, node: str) -> int:
        """Where ``node``'s current membership of the group began."""
        history = self._history[key]
        since = history[-1][0]
        for first, members in reversed(history):
            if node not in members:
                break
            since = first
        return since

    def _send(
        self, op: str, key: Key, *, node: str | None = None, start: int | None = None
    ) -> None:
        change: dict[str, Any] = {
            "op": op,
            "group": key[0],
            "filter": key[1],
            "node": node or self.node_id,
            "by": self.node_id,
        }
        if start is not None:
            change["from"] = start

        def done(result: list[Event] | BaseException) -> None:
            if isinstance(result, BaseException):
                log.warning("shared group %s: %s not recorded: %s", key, op, result)

        try:
            self._submit([NewEvent(TOPIC, json.dumps(change).encode(), qos=1)], done)
        except TidelogError as exc:
            log.warning("shared group %s: %s not recorded: %s", key, op, exc)

    async def _hand_back(self, key: Key, leaver: str, start: int, end: int) -> None:
        """Deliver the events from ``start`` to ``end`` that were ``leaver``'s and are
        this node's under the membership after it left."""
        after = self.members(key, end + 1)
        if not after:
            return
        position = start
        try:
            while position < end:
                page = await self._log.read(position, key[1], limit=HANDBACK_PAGE, end=end)
                feed = self._local.get(key)
                if feed is None:
                    return
                subs = tuple(feed.subscriptions.values())
                mine = [
                    (event, subs)
                    for event in page.events
                    if self.owner(key, event.offset) == leaver
                    and after[_mix(event.offset) % len(after)] == self.node_id
                ]
                feed.requeue(mine)
                self.handed_back += len(mine)
                if page.next_offset <= position:
                    break
                position = page.next_offset
        except TidelogError as exc:
            log.warning("shared group %s: events of %s not handed back: %s", key, leaver, exc)
