"""The stored session format: what an MQTT session keeps in the engine's session.

A persistent MQTT session is the engine's :class:`~tidelog.engine.sessions.Session`
(stored as JSON in the log's ``sessions`` namespace). The engine owns its
``position``, ``expiry_interval`` and ``disconnected_at``; two parts of it are
this protocol's, and this module is the only one that reads or writes them:

``subscriptions[key].options`` -- one subscription's options (:class:`SubOptions`)::

    {"qos": 1, "nl": false, "rap": false, "rh": 0, "id": null}

``inflight`` -- the connection's in-flight state (:class:`Inflight`)::

    {"out": {"<offset>": [packet_id, qos]}, "rel": [packet_id, ...],
     "in": [packet_id, ...], "sent_end": offset, "rx_end": offset,
     "shared": {"$share/<group>/<filter>": [[offset, packet_id], ...]}}

* ``out``: outgoing QoS 1/2 messages of the main feed sent but not acknowledged
  (PUBLISH phase), by log offset; on resume they are sent again with DUP set and
  their original packet identifier.
* ``rel``: outgoing QoS 2 messages in the PUBREL phase; their PUBREL is resent
  right after CONNACK.
* ``in``: inbound QoS 2 packet identifiers stored whose PUBREL has not arrived,
  so a resent PUBLISH is not stored twice.
* ``sent_end``: the end of what the connection took from its feed. Events between
  ``session.position`` (the lowest offset not finished) and ``sent_end`` that
  are not in ``out`` were delivered already (QoS 0, or acknowledged) and are
  skipped on resume.
* ``rx_end`` (only while QoS 2 PUBLISHes of the client may be in the log and not
  in ``in``): the log's end when the session was stored. Inbound QoS 2 events
  carry the publisher's client id and packet identifier in their provenance, and
  are stored at or above ``rx_end`` and below ``rx_end + RX_WINDOW`` (the
  connection stores the session again before submitting one that could land
  past that). When a session left by a crash resumes, those events are read
  back from the log and their packet identifiers count as received, so the
  client's resend gets PUBREC without being stored twice. Absent: ``in`` is
  complete (nothing was submitted after the store).
* ``shared`` (only when there are some): outgoing QoS 2 messages of shared
  subscriptions sent but not PUBRECed. They were taken from the group's feed, so
  only this session may finish them ([MQTT-4.8.2-4]/[MQTT-4.8.2-5]): on resume
  they are read back from the log and sent again with DUP set and their original
  packet identifier.

The format is read by every broker version that may restart on the same data:
change it only by adding keys with defaults.
"""

from __future__ import annotations

from typing import Any, Final

RX_WINDOW: Final = 65_536
"""How far past ``rx_end`` a session's unrecorded inbound QoS 2 events may lie: the
log range read back when a session left by a crash resumes (see the module docs)."""


class SubOptions:
    """A subscription's options as the connection uses them (the engine's
    Subscription.options); stored in the session as a small dict."""

    __slots__ = ("identifier", "no_local", "qos", "retain_as_published", "retain_handling")

    def __init__(
        self,
        qos: int,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
        identifier: int | None = None,
    ) -> None:
        self.qos = qos
        self.no_local = no_local
        self.retain_as_published = retain_as_published
        self.retain_handling = retain_handling
        self.identifier = identifier

    def to_json(self) -> dict[str, Any]:
        return {
            "qos": self.qos,
            "nl": self.no_local,
            "rap": self.retain_as_published,
            "rh": self.retain_handling,
            "id": self.identifier,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SubOptions:
        return cls(data["qos"], data["nl"], data["rap"], data["rh"], data["id"])


class Inflight:
    """The ``inflight`` part of a stored session, decoded (see the module docs)."""

    __slots__ = ("inbound", "out", "rel", "rx_end", "sent_end", "shared")

    def __init__(
        self,
        out: dict[int, tuple[int, int]] | None = None,
        rel: list[int] | None = None,
        inbound: list[int] | None = None,
        sent_end: int = 0,
        shared: dict[str, list[tuple[int, int]]] | None = None,
        rx_end: int | None = None,
    ) -> None:
        self.out = out if out is not None else {}
        """Offset -> (packet identifier, QoS) of unacknowledged main-feed messages."""
        self.rel = rel if rel is not None else []
        self.inbound = inbound if inbound is not None else []
        self.sent_end = sent_end
        self.shared = shared if shared is not None else {}
        """Shared subscription -> [(offset, packet identifier)] of QoS 2 messages sent
        and not yet PUBRECed, completed with this client when it comes back
        ([MQTT-4.8.2-4])."""
        self.rx_end = rx_end
        """None, or where the client's inbound QoS 2 events not in ``inbound`` start."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Inflight:
        out = {int(offset): (pid, qos) for offset, (pid, qos) in data.get("out", {}).items()}
        rel, inbound = list(data.get("rel", ())), list(data.get("in", ()))
        shared = {
            key: [(offset, pid) for offset, pid in entries]
            for key, entries in data.get("shared", {}).items()
        }
        return cls(out, rel, inbound, data.get("sent_end", 0), shared, data.get("rx_end"))

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "out": {str(offset): [pid, qos] for offset, (pid, qos) in self.out.items()},
            "rel": self.rel,
            "in": self.inbound,
            "sent_end": self.sent_end,
        }
        if self.rx_end is not None:
            data["rx_end"] = self.rx_end
        if self.shared:
            data["shared"] = {
                key: [[offset, pid] for offset, pid in entries]
                for key, entries in self.shared.items()
            }
        return data
