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
  own them under the new membership (at least once: ``F`` is the first offset a
  member took and has not acknowledged, :attr:`Feed.unfinished_from`, so what
  the leaver had sent but not had acknowledged is delivered again).
* A group a persistent session is a member of is *durable*: the node's leave
  says so (``"durable": true``), and from then on every node counts the group
  as one that keeps its events. When its last member node leaves, the events
  from that leave's ``F`` on wait in the log; the node whose join ends this
  vacancy owns all of them (:meth:`ClusterShares.owner`) and hands them to its
  members a page at a time, as on one node the group's cursor would.
* A node that dies cannot append its leave: a running node does it on its
  behalf (:meth:`ClusterShares.leave_for`, called by the broker's reaper, see
  :mod:`tidelog.engine.cluster`), with ``F`` the progress that node last
  announced (:meth:`ClusterShares.progress`, in its node record every 2 s and
  whenever it moved, at most every 0.25 s: ``tidelog/node.py``).
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
        self._durable: set[Key] = set()
        """Local groups a persistent session is a member of (durable groups)."""
        self._kept: set[Key] = set()
        """Durable groups (a leave said a persistent session was a member), read from the
        log: they keep the events that come while no node has a member."""
        self._vacant: dict[Key, int] = {}
        """Durable groups whose last member node left: the first offset not finished."""
        self._orphans: dict[Key, list[tuple[int, int, str]]] = {}
        """Per durable group: ``(start, end, node)``, ascending: the events from ``start``
        up to ``end`` (the join that ended a vacancy) are that joining node's."""
        self._handing: dict[Key, dict[object, int]] = {}
        """Local groups being handed events back: the offset each hand-back reads next."""
        self._owed: dict[Key, int] = {}
        """Local durable groups whose vacancy this node ended, until their hand-back runs:
        where it starts."""

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
        if not before and after and key in self._vacant:  # a durable group's vacancy ends
            orphans = self._orphans.setdefault(key, [])
            orphans.append((self._vacant.pop(key), event.offset, node))
            del orphans[:-HISTORY]
            if node == self.node_id and not replay and key in self._local:
                self._owed[key] = orphans[-1][0]  # in the progress until the task runs
                self._nursery.start_soon(self._hand_back, key, None, orphans[-1][0], event.offset)
        if change.get("op") != "leave" or node not in before:
            return
        if change.get("durable"):
            self._kept.add(key)
        if not after and key in self._kept:  # the last member node left: keep what comes
            self._vacant[key] = min(start, self._vacant.get(key, start))
        if replay:
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
        """The node that delivers the group's event at ``offset`` (None: no member): the
        node that ended a durable group's vacancy for the events it kept, else by the
        membership at ``offset``."""
        orphans = self._orphans.get(key)
        if orphans and offset < orphans[-1][1]:
            index = bisect.bisect_right(orphans, offset, key=lambda entry: entry[0]) - 1
            if index >= 0 and offset < orphans[index][1]:
                return orphans[index][2]
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

    def joined(self, key: Key, feed: Feed, *, durable: bool = False) -> None:
        """A local member of a group joined (the first one: the feed accepts this node's
        events from now on). ``durable``: a persistent session; while the group has
        one, the events that come when no node has a member are kept for the next."""
        if durable:
            self._durable.add(key)
        if self._local.get(key) is feed:
            return
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
        durable = key in self._durable
        self._durable.discard(key)
        if self.node_id is not None:
            self._send("leave", key, start=self._progress(key, feed), durable=durable)

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
            [group, inner, self._progress((group, inner), feed), (group, inner) in self._durable]
            for (group, inner), feed in self._local.items()
        ]

    def _progress(self, key: Key, feed: Feed) -> int:
        """The first offset of the group not finished here: what its members hold, a
        hand-back under way or owed, and a vacancy this node's join (not read back
        yet) is to end (the events kept in it would be this node's)."""
        owed = [self._owed[key]] if key in self._owed else []
        vacant = [self._vacant[key]] if key in self._vacant else []
        handing = self._handing.get(key, {}).values()
        return min([feed.unfinished_from, *handing, *owed, *vacant])

    def leave_for(self, node: str, progress: Any, since: int | None = None) -> int:
        """Leave every group ``node`` (gone) is a member of, handing back from the
        ``progress`` in its last record, else from ``since``, else from when it joined.
        Returns how many groups."""
        known: dict[Key, int] = {}
        durable: set[Key] = set()
        for entry in progress if isinstance(progress, list) else ():
            try:
                known[(str(entry[0]), str(entry[1]))] = int(entry[2])
            except (TypeError, ValueError, IndexError):
                continue
            if len(entry) > 3 and entry[3] is True:
                durable.add((str(entry[0]), str(entry[1])))
        count = 0
        for key, history in self._history.items():
            if history and node in history[-1][1]:
                start = known.get(key, since if since is not None else self._joined_at(key, node))
                self._send("leave", key, node=node, start=start, durable=key in durable)
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
        self,
        op: str,
        key: Key,
        *,
        node: str | None = None,
        start: int | None = None,
        durable: bool = False,
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
        if durable:
            change["durable"] = True

        def done(result: list[Event] | BaseException) -> None:
            if isinstance(result, BaseException):
                log.warning("shared group %s: %s not recorded: %s", key, op, result)

        try:
            self._submit([NewEvent(TOPIC, json.dumps(change).encode(), qos=1)], done)
        except TidelogError as exc:
            log.warning("shared group %s: %s not recorded: %s", key, op, exc)

    async def _hand_back(self, key: Key, leaver: str | None, start: int, end: int) -> None:
        """Deliver the events from ``start`` to ``end`` that were ``leaver``'s and are
        this node's under the membership after it left; with no ``leaver``, those a
        durable group kept while it had no member (this node ended the vacancy). A
        page at a time, as the members take them (memory stays bounded); the group's
        progress stays at the hand-back's position until it is done."""
        if leaver is None:
            self._owed.pop(key, None)  # the hand-back's position stands for it now
        after = self.members(key, end + 1)
        if not after:
            return
        position = start
        handing = self._handing.setdefault(key, {})
        token = object()
        handing[token] = position
        try:
            while position < end:
                feed = self._local.get(key)
                if feed is None:
                    return
                while feed.pending >= HANDBACK_PAGE and self._local.get(key) is feed:
                    await trio.sleep(0.05)  # the members take what was handed back so far
                page = await self._log.read(position, key[1], limit=HANDBACK_PAGE, end=end)
                if self._local.get(key) is not feed:
                    return  # its last member left meanwhile (the leave's F covers the rest)
                subs = tuple(feed.subscriptions.values())
                mine = [
                    (event, subs)
                    for event in page.events
                    if (
                        self.owner(key, event.offset) == self.node_id
                        if leaver is None
                        else self.owner(key, event.offset) == leaver
                        and after[_mix(event.offset) % len(after)] == self.node_id
                    )
                ]
                feed.requeue(mine)
                self.handed_back += len(mine)
                if page.next_offset <= position:
                    break
                position = handing[token] = page.next_offset
        except TidelogError as exc:
            log.warning("shared group %s: events of %s not handed back: %s", key, leaver, exc)
        finally:
            del handing[token]
            if not handing and self._handing.get(key) is handing:
                del self._handing[key]
