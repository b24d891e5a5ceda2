"""Link positions: where this node is in each peer's log, and per origin.

Two maps, both recovered exactly after a crash from the events themselves:

* ``senders``: peer node -> (incarnation, next offset in that peer's log). It is
  where a link resumes reading the peer (pull) or where the peer resumes
  sending (push). The last hop of every appended event names its sender and
  its offset there.
* ``origins``: origin node -> (incarnation, next origin offset), from the events
  that came over links. An event at or below it was appended already and is
  dropped (exactly once even if a sender resends after a reconnect).

and, apart from them, ``stamped``: (origin node, incarnation) ->
:class:`~tidelog.mesh.seen.SeenOffsets`, the origin offsets of the messages a
bridge pulled with valid ``tidelog-*`` stamps (:mod:`tidelog.mesh.stamps`): a
redelivered stamped message is stored once. A stamp never advances a link
position nor drops an event that came over a link (a link stays exactly once
whatever a bridge carries, or whatever any MQTT client writes into stamps); so an
event that reaches a node both over a link and over a bridge may be stored twice.

Recovery (:meth:`MeshPositions.recover`): a checkpoint (``mesh`` state
namespace: the maps and the local offset they are valid up to) is written
every few seconds; at start the log is read from that offset to the head and
the maps advanced from the provenance found. The checkpoint is only a lower
bound, so a stale one costs a longer read, never a wrong position. Without a
checkpoint the node has never run the mesh on this data directory, so no
forwarded event can be in it, and recovery starts at the head.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence

import trio

from tidelog.concurrency import held
from tidelog.engine import Broker
from tidelog.mesh.seen import SeenOffsets
from tidelog.mesh.stamps import Origin, stamped_origin
from tidelog.mesh.wire import BatchShape, Hop
from tidelog.storage.records import Event, NewEvent

NAMESPACE = "mesh"
CHECKPOINT_KEY = "positions"
SCAN_BATCH = 10_000

Position = tuple[str, int]
"""(incarnation, next offset)."""


class MeshPositions:
    """The maps above, the dedup rules and the checkpoint."""

    def __init__(self) -> None:
        self.senders: dict[str, Position] = {}
        self.origins: dict[str, Position] = {}
        self.stamped: dict[tuple[str, str], SeenOffsets] = {}
        self.scanned_to = 0
        """The local offset up to which the maps account for every event."""
        self.dirty = False
        self._appending: dict[int, int] = {}
        """Appends in progress: token -> the log's end offset when each began."""
        self._tokens = 0
        self._append_lock = trio.Lock()
        """One dedup check and its append at a time, whoever the sender: a bridge and
        a link (each under its own peer lock) may carry the same event."""

    # -- advancing -------------------------------------------------------------------

    def observe(self, events: Sequence[Event | NewEvent]) -> None:
        """Advance the maps past ``events`` (appended to the local log, in order). Only
        the last link event of each origin and of each sender counts, so the batch is
        read from its end and each hop path parsed at most once per origin; every
        stamped message a bridge pulled is recorded in ``stamped``."""
        origins_done: set[str] = set()
        senders_done: set[str] = set()
        done = "\0"  # "sender/" of the last hop that was counted (no split for its like)
        for event in reversed(events):
            provenance = event.provenance
            if provenance is None:
                continue
            origin_node = provenance.origin_node
            if origin_node is None or not provenance.hop_path:
                stamped = stamped_origin(event)  # pulled over a bridge: no sender node
                if stamped is not None:
                    self._seen(stamped).add(stamped[2])
                    self.dirty = True
                continue
            last = provenance.hop_path[-1]
            if origin_node in origins_done and last.startswith(done):
                continue  # its origin and its sender counted already
            sender_node = last.split("/", 1)[0]
            done = f"{sender_node}/"
            if origin_node not in origins_done:
                origins_done.add(origin_node)
                origin = Hop.parse(provenance.hop_path[0])
                offset = (provenance.origin_offset or 0) + 1
                self._advance(self.origins, origin_node, origin.incarnation, offset)
                self.dirty = True
            if sender_node not in senders_done:
                senders_done.add(sender_node)
                sender = Hop.parse(last)
                self._advance(self.senders, sender.node, sender.incarnation, sender.offset + 1)
                self.dirty = True

    def _seen(self, origin: Origin) -> SeenOffsets:
        key = origin[0], origin[1]
        seen = self.stamped.get(key)
        if seen is None:
            seen = self.stamped[key] = SeenOffsets()
        return seen

    def advance_sender(self, node: str, incarnation: str, next_offset: int) -> None:
        """The sender read its log up to ``next_offset`` (events past the last matching
        one need not be read again)."""
        if self._advance(self.senders, node, incarnation, next_offset):
            self.dirty = True

    @staticmethod
    def _advance(table: dict[str, Position], node: str, incarnation: str, offset: int) -> bool:
        old = table.get(node)
        if old is None or old[0] != incarnation or old[1] < offset:
            table[node] = (incarnation, offset)
            return True
        return False

    def fresh(self, events: Sequence[NewEvent]) -> list[NewEvent]:
        """The events not appended yet, in order: a link event above its origin's next
        offset, a stamped bridge message whose origin offset is not in ``stamped``;
        an event without an origin (a bridge's message without stamps) is fresh.

        A link receiver's hot path (every event of a catch-up): a link event's origin
        is read as :func:`_linked_origin` reads it, inline, and the incarnation in its
        first hop (``node/incarnation/offset``) is split out only when the hop does not
        start as the one before it did (a batch is mostly one origin's)."""
        out: list[NewEvent] = []
        append = out.append
        seen: dict[str, Position] = {}
        origins = self.origins
        batch: set[Origin] = set()
        prefix: str | None = None  # the first hop's "node/incarnation/" (None: split it)
        incarnation = ""
        for event in events:
            provenance = event.provenance
            if (
                provenance is not None
                and (node := provenance.origin_node) is not None
                and provenance.hop_path
            ):
                first = provenance.hop_path[0]
                if prefix is None or not first.startswith(prefix):
                    parts = first.split("/", 2)
                    incarnation = parts[1]
                    prefix = f"{parts[0]}/{incarnation}/" if len(parts) == 3 else None
                offset = provenance.origin_offset or 0
                known = seen.get(node) or origins.get(node)
                if known is not None and known[0] == incarnation and offset < known[1]:
                    continue
                seen[node] = (incarnation, offset + 1)
            else:
                stamped = stamped_origin(event)
                if stamped is not None:
                    known_offsets = self.stamped.get((stamped[0], stamped[1]))
                    if stamped in batch or (
                        known_offsets is not None and stamped[2] in known_offsets
                    ):
                        continue
                    batch.add(stamped)
            append(event)
        return out

    def fresh_shaped(self, events: Sequence[NewEvent], shape: BatchShape) -> list[NewEvent]:
        """:meth:`fresh` of a batch of that ``shape`` (one origin and incarnation, its
        offsets rising): the events from the first at or past the origin's next offset,
        found by bisection instead of a look at every event."""
        known = self.origins.get(shape.origin)
        if known is None or known[0] != shape.incarnation or shape.first >= known[1]:
            return list(events)
        if shape.last < known[1]:
            return []
        start = bisect.bisect_left(events, known[1], key=_origin_offset)
        return list(events[start:])

    async def append_fresh(
        self, broker: Broker, events: Sequence[NewEvent], shape: BatchShape | None = None
    ) -> list[NewEvent]:
        """Append the :meth:`fresh` ``events`` in one durable write and advance the maps
        past them; returns them. The dedup check and its append are one step under
        one lock per node (a bridge and a link sink hold different peer locks and may
        carry the same event). Shielded: an append cancelled half-way
        (the link cut) may still commit, and the maps must then advance with it.

        ``shape`` (a link's batches, :func:`~tidelog.mesh.wire.decode_shaped`): the
        events' :class:`~tidelog.mesh.wire.BatchShape`; the check and the advance
        then cost the same for a batch of any size (only the last event of one
        origin and sender moves the maps)."""
        async with held(self._append_lock):
            fresh = self.fresh(events) if shape is None else self.fresh_shaped(events, shape)
            if fresh:
                token = self.begin_append(broker.end_offset)
                try:
                    with trio.CancelScope(shield=True):
                        await broker.publish_many(fresh)
                        self.observe(fresh if shape is None else fresh[-1:])
                finally:
                    self.end_append(token)
        return fresh

    def begin_append(self, end_offset: int) -> int:
        """An append of forwarded events starts (its offsets will be >= ``end_offset``);
        the checkpoint stays below it until :meth:`end_append`."""
        self._tokens += 1
        self._appending[self._tokens] = end_offset
        return self._tokens

    def end_append(self, token: int) -> None:
        self._appending.pop(token, None)

    def safe_offset(self, end_offset: int) -> int:
        """The local offset a checkpoint taken now may claim: below every append still
        in progress (whose events are not observed yet)."""
        return min([end_offset, *self._appending.values()])

    def sender(self, node: str) -> Position | None:
        return self.senders.get(node)

    # -- durability ------------------------------------------------------------------

    def checkpoint(self, scanned_to: int) -> bytes:
        self.scanned_to = scanned_to
        self.dirty = False
        return json.dumps(
            {
                "scanned_to": scanned_to,
                "senders": {k: list(v) for k, v in self.senders.items()},
                "origins": {k: list(v) for k, v in self.origins.items()},
                "stamped": [[*k, v.dump()] for k, v in self.stamped.items()],
            }
        ).encode()

    def restore(self, raw: bytes) -> None:
        data = json.loads(raw)
        self.scanned_to = int(data["scanned_to"])
        self.senders = {k: (str(v[0]), int(v[1])) for k, v in data["senders"].items()}
        self.origins = {k: (str(v[0]), int(v[1])) for k, v in data["origins"].items()}
        self.stamped = {
            (str(node), str(incarnation)): SeenOffsets.load(seen)
            for node, incarnation, seen in data.get("stamped", [])
        }

    async def recover(self, broker: Broker) -> int:
        """Load the checkpoint and read the log from it to the head; returns how many
        events were read. Stores a checkpoint at the head."""
        stored = (await broker.load_state(NAMESPACE)).get(CHECKPOINT_KEY)
        head = broker.end_offset
        read = 0
        if stored is None:
            self.scanned_to = head
        else:
            self.restore(stored)
            position = max(self.scanned_to, (await broker.log_state()).first_offset)
            while position < head:
                result = await broker.read(position, None, limit=SCAN_BATCH, end=head)
                self.observe(result.events)
                read += len(result.events)
                if result.next_offset <= position:
                    break
                position = result.next_offset
        await broker.save_state(NAMESPACE, {CHECKPOINT_KEY: self.checkpoint(head)})
        return read


def _origin_offset(event: NewEvent) -> int:
    provenance = event.provenance
    assert provenance is not None and provenance.origin_offset is not None  # a shaped batch
    return provenance.origin_offset


def origin_of(event: Event | NewEvent) -> Origin | None:
    """(origin node, incarnation, offset there) of a forwarded event: from its hop
    path (a link) or its stamps (a bridge); None for an event published here."""
    return _linked_origin(event) or stamped_origin(event)


def _linked_origin(event: Event | NewEvent) -> Origin | None:
    """(origin node, incarnation, offset there) from the hop path of an event that
    came over a link; None for any other."""
    provenance = event.provenance
    if provenance is None or provenance.origin_node is None or not provenance.hop_path:
        return None
    incarnation = provenance.hop_path[0].split("/", 2)[1]
    return provenance.origin_node, incarnation, provenance.origin_offset or 0
