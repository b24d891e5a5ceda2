"""Which stamped origin offsets a bridge pull appended already (no I/O).

A plain MQTT broker between two tidelogs may deliver a stamped message
(:mod:`tidelog.mesh.stamps`) twice, late or out of order: a redelivery after a
reconnect, or a message the remote refused once and the pusher sent again after
later ones were accepted. :class:`SeenOffsets` answers "was this offset appended
here?" exactly, per (origin node, incarnation): every offset below ``low`` (the
contiguous run received), plus a set of the offsets received above it.

Bounded: at most :data:`MAX_ABOVE` offsets are kept above the run; when there are
more, the lowest are evicted and the run moves past them, so an offset below an
evicted one counts as received (a message that arrives later than 10,000 newer
ones from its origin is dropped as a duplicate). This state is separate from the
link positions (:mod:`tidelog.mesh.positions`): a stamp never moves a link's
position nor drops an event that came over a link.
"""

from __future__ import annotations

import heapq
from typing import Final

MAX_ABOVE: Final = 10_000
"""Offsets kept above the contiguous run, per origin and incarnation."""


class SeenOffsets:
    """The stamped offsets of one origin incarnation appended here."""

    __slots__ = ("_heap", "above", "low")

    def __init__(self, low: int = 0, above: tuple[int, ...] | list[int] = ()) -> None:
        self.low = low
        """Every offset below this was received (or evicted: counts as received)."""
        self.above: set[int] = {o for o in above if o >= low}
        self._heap = sorted(self.above)

    def __contains__(self, offset: int) -> bool:
        return offset < self.low or offset in self.above

    def add(self, offset: int) -> None:
        """Record ``offset`` as appended."""
        if offset in self:
            return
        self.above.add(offset)
        heapq.heappush(self._heap, offset)
        while len(self.above) > MAX_ABOVE:
            self.low = heapq.heappop(self._heap) + 1
            self.above.discard(self.low - 1)
        while self.low in self.above:  # the run grows over what is contiguous
            self.above.discard(self.low)
            heapq.heappop(self._heap)
            self.low += 1

    def dump(self) -> list[int | list[int]]:
        return [self.low, sorted(self.above)]

    @classmethod
    def load(cls, raw: list[int | list[int]]) -> SeenOffsets:
        low, above = raw
        assert isinstance(low, int) and isinstance(above, list)
        return cls(low, [int(o) for o in above])
