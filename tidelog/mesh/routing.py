"""What may cross a link (no I/O): filters, modes, hop paths, cycles.

Loop prevention has three layers (docs/mesh.md):

* ``local`` mode forwards only events that were published on the sending node
  (not those that came over a link or a bridge), so any topology of ``local``
  links (a full mesh of a few sites) delivers each event once, straight from
  its origin.
* ``transit`` mode forwards events that came over other links too, but never
  to a node already on the event's hop path (so never back over the link it
  came from), and when a transit link starts the two sides exchange the nodes
  reachable behind them: a link whose sides already reach a common node would
  close a cycle and is refused. Changes are sent on (``$link/nodes``) so every
  node of a tree knows the tree.
* A hop limit per link stops an event that has passed through too many nodes
  (the links of its hop path, and the bridges its ``tidelog-hops`` stamp counts).

Bridges (plain MQTT brokers in between) keep no hop path; their stamps
(:mod:`tidelog.mesh.stamps`) carry the origin and the hop count instead: a
bridged event never goes over a link to the node it originated on, and a
bridge drops what comes back to its origin.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs

from tidelog.mesh.stamps import stamped_hops, stamped_origin
from tidelog.storage.records import Event
from tidelog.topics import compile_filter

MATCH_CACHE_TOPICS = 10_000


@attrs.frozen
class Route:
    """The sending side of one link direction: which of this node's events go to ``peer``."""

    peer: str
    """The receiving node's id."""
    filters: tuple[str, ...]
    mode: str
    hop_limit: int
    _matched: dict[str, bool] = attrs.field(factory=dict, init=False, eq=False, repr=False)
    """Topic -> whether a filter matches it (a log repeats few topics; bounded)."""

    def single_filter(self) -> str | None:
        """The one filter, for reads the log can filter itself; None for several."""
        return self.filters[0] if len(self.filters) == 1 else None

    def matches(self, topic: str) -> bool:
        """True if a filter of this link matches ``topic`` (cached per topic)."""
        matched = self._matched.get(topic)
        if matched is None:
            matched = any(compile_filter(f)(topic) for f in self.filters)
            if len(self._matched) < MATCH_CACHE_TOPICS:
                self._matched[topic] = matched
        return matched

    def admits(self, event: Event) -> bool:
        """True if ``event`` crosses this link."""
        if not self.matches(event.topic):
            return False
        provenance = event.provenance
        if provenance is None or provenance.local:
            return True  # originated here
        if self.mode == "local":
            return False  # came over a link or a bridge
        if provenance.origin_node is None:
            # a bridge appended it here: this node is its origin among the links,
            # the node its stamps name (if any) the one that need not get it back
            stamped = stamped_origin(event)
            return stamped_hops(event) < self.hop_limit and (
                stamped is None or stamped[0] != self.peer
            )
        path = provenance.hop_path
        bridges = 0 if event.properties is None else stamped_hops(event)
        if len(path) + bridges >= self.hop_limit:
            return False
        # a hop is node/incarnation/offset and a node id has no "/": the peer's own hops
        # start with its id and a slash (per event, so no Hop objects: the transit hot path)
        peer = self.peer + "/"
        return not any(hop.startswith(peer) for hop in path)


def closes_cycle(ours: Iterable[str], theirs: Iterable[str]) -> set[str]:
    """The nodes both sides of a new transit link already reach (a cycle if any)."""
    return set(ours) & set(theirs)


def reachable(node: str, behind_links: Sequence[Iterable[str]]) -> list[str]:
    """This node plus every node reachable behind the given transit links."""
    out = {node}
    for nodes in behind_links:
        out.update(nodes)
    return sorted(out)
