"""What a link reports: its state and counters (``GET /v1/links``, ``tidelog links``,
``/metrics``, ``$SYS/broker/links/<name>/...``)."""

from __future__ import annotations

import time
from typing import Any

import attrs


@attrs.define
class LinkStatus:
    """One link's state and counters; the link's tasks update it."""

    name: str
    direction: str
    """``outbound`` (configured here, this node dials) or ``inbound`` (a peer dialed)."""
    url: str = ""
    mode: str = "local"
    pull: tuple[str, ...] = ()
    push: tuple[str, ...] = ()
    peer: str | None = None
    """The remote node's id, once known."""
    state: str = "connecting"
    """``connected``, ``connecting``, ``disconnected`` or ``refused``."""
    events_in: int = 0
    events_out: int = 0
    batches_in: int = 0
    batches_out: int = 0
    duplicates: int = 0
    """Events received again and dropped (a resend after a reconnect)."""
    gaps: int = 0
    gap_events: int = 0
    """Events the origin's retention (or a replaced data directory) removed before the
    link read them."""
    refused: int = 0
    """Messages a bridge's remote sent outside the ``pull`` filters (or ``$`` topics):
    acknowledged and dropped."""
    connects: int = 0
    remote_head: int | None = None
    position: int | None = None
    """This node's position in the remote's log (what it has received up to)."""
    sent_to: int | None = None
    """The remote's report of where it has read its log up to (heartbeats)."""
    interest: list[str] | None = None
    """Live interest for the pull: the filters advertised (outbound) or received
    (inbound); None: the static filters."""
    push_interest: list[str] | None = None
    """Live interest for the push: the filters the remote advertised (outbound) or
    this node advertised to the dialer (inbound); None: the static filters."""
    caught_up_at: float | None = None
    last_error: str | None = None
    owner: str | None = None
    """The user who created the link over REST (None: the configuration file, or a
    link a peer dialed)."""
    local_prefix: str = ""
    remote_prefix: str = ""
    bridge: str | None = None
    """``mqtt5``/``mqtt311`` for a bridge to a plain MQTT broker."""
    sends_from: str | None = None
    """Where this node's source for the link takes events at the head: ``memory`` (a
    live tail of its commits), ``log`` (the topic index: a narrow link that matches
    little of what this node commits, see :mod:`tidelog.mesh.tail`); None: it sends
    nothing over this link."""

    @property
    def lag(self) -> int:
        """Events of the remote's log not yet received (pull), from its heartbeats."""
        if self.remote_head is None:
            return 0
        done = max(self.position or 0, self.sent_to or 0)
        return max(0, self.remote_head - done)

    @property
    def lag_ms(self) -> int:
        """How long the link has been behind (0 when caught up)."""
        if self.lag == 0 or self.caught_up_at is None:
            return 0
        return int((time.monotonic() - self.caught_up_at) * 1000)

    def heard(self, head: int, sent: int | None) -> None:
        self.remote_head = head
        self.sent_to = sent
        if self.lag == 0:
            self.caught_up_at = time.monotonic()

    def shown(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "direction": self.direction,
            "state": self.state,
            "peer": self.peer,
            "url": self.url,
            "mode": self.mode,
            "pull": list(self.pull),
            "push": list(self.push),
            "lag": self.lag,
            "lag_ms": self.lag_ms,
            "events_in": self.events_in,
            "events_out": self.events_out,
            "batches_in": self.batches_in,
            "batches_out": self.batches_out,
            "duplicates": self.duplicates,
            "gaps": self.gaps,
            "gap_events": self.gap_events,
            "refused": self.refused,
            "connects": self.connects,
            "interest": self.interest,
            "push_interest": self.push_interest,
            "last_error": self.last_error,
            "local_prefix": self.local_prefix,
            "remote_prefix": self.remote_prefix,
            "owner": self.owner,
            "bridge": self.bridge,
            "sends_from": self.sends_from,
        }
