"""The ``tidelog-*`` user properties a bridge stamps on what it pushes (no I/O).

A plain MQTT broker keeps no offsets, so a message a tidelog pushes over a bridge
carries its mesh identity as MQTT 5 user properties (docs/mesh.md, "Bridges"):

=======================  ==========================================================
``tidelog-origin``       the node the event was first appended at
``tidelog-incarnation``  that node's incarnation (its offsets restart with a new one)
``tidelog-offset``       the event's offset there
``tidelog-hops``         how many links and bridges it crossed, this push included
``tidelog-digest``       :func:`digest` of the topic (at the remote) and payload
=======================  ==========================================================

A tidelog that pulls the message over a bridge stores them with it, drops it if
its origin is this node (it came back around a cycle) or if that origin's offset
was appended here already (a redelivery: :class:`~tidelog.mesh.positions.MeshPositions`),
and pushes it on with the same origin (so a cycle ends at the node that has it).
An MQTT 3.1.1 remote drops user properties: no stamps, no deduplication.

The digest binds the stamps to the message they came with: a client that
republishes a message under another topic or with another payload copying its
user properties (Node-RED keeps them) makes a new message, not a copy; a bridge
that receives stamps whose digest does not match strips them (:func:`checked`),
and the message counts as unstamped.

Any MQTT client can write these properties, so they are parsed strictly
(:func:`number`: ASCII digits, at most 19 of them; anything else makes the
message unstamped) and trusted only on an event that came in over a bridge or a
link: a local client's ``tidelog-*`` properties are ignored (replaced when the
event is pushed over a bridge). The hop count is capped at :data:`MAX_HOPS`.
"""

from __future__ import annotations

import hashlib
from typing import Final

import attrs

from tidelog.storage.records import BRIDGE_CLIENT_PREFIX, Event, NewEvent, Properties

ORIGIN: Final = "tidelog-origin"
INCARNATION: Final = "tidelog-incarnation"
OFFSET: Final = "tidelog-offset"
HOPS: Final = "tidelog-hops"
DIGEST: Final = "tidelog-digest"
KEYS: Final = frozenset((ORIGIN, INCARNATION, OFFSET, HOPS, DIGEST))

MAX_DIGITS: Final = 19
"""A stamp's number has at most this many digits (below 2**63): anything longer, or
not plain ASCII digits, makes the stamp invalid."""
MAX_HOPS: Final = 255
"""Hop counts above this are read as this (any hop limit stops the event)."""

Origin = tuple[str, str, int]
"""(origin node, its incarnation, the offset there)."""


def bridged(event: Event | NewEvent) -> bool:
    """True if a bridge pulled ``event`` from a plain MQTT broker into this log."""
    provenance = event.provenance
    return (
        provenance is not None
        and provenance.client_id is not None
        and provenance.client_id.startswith(BRIDGE_CLIENT_PREFIX)
    )


def number(value: str) -> int | None:
    """A stamp's non-negative integer, or None if ``value`` is not one: only ASCII
    digits count (``"\u00b2".isdigit()`` is true but ``int`` refuses it) and at
    most :data:`MAX_DIGITS` of them (``int`` refuses more than 4,300)."""
    if value.isascii() and value.isdigit() and len(value) <= MAX_DIGITS:
        return int(value)
    return None


def _stamps(properties: Properties | None) -> dict[str, str]:
    if properties is None:
        return {}
    return {k: v for k, v in properties.user_properties if k in KEYS}


def stamped_origin(event: Event | NewEvent) -> Origin | None:
    """The origin a bridged event's stamps name (None without valid stamps)."""
    if not bridged(event):
        return None
    stamps = _stamps(event.properties)
    origin, offset = stamps.get(ORIGIN), number(stamps.get(OFFSET, ""))
    if not origin or offset is None:
        return None
    return origin, stamps.get(INCARNATION, ""), offset


def stamped_hops(event: Event | NewEvent) -> int:
    """The bridges (and links before them) an event crossed before the last bridge
    stored it: its ``tidelog-hops`` stamp, kept in its properties when it crosses
    links afterwards (0 without a valid one, or on an event published here: a local
    client's stamp is not trusted; its hop path counts the links since). At most
    :data:`MAX_HOPS`."""
    provenance = event.provenance
    if provenance is None or provenance.local:
        return 0
    hops = number(_stamps(event.properties).get(HOPS, ""))
    return 0 if hops is None else min(hops, MAX_HOPS)


def digest(topic: str, payload: bytes) -> str:
    """The ``tidelog-digest`` of a message published as ``topic`` (the remote's name)
    with ``payload``: 16 hex digits of BLAKE2b."""
    hashed = hashlib.blake2b(topic.encode(), digest_size=8)
    hashed.update(b"\0")
    hashed.update(payload)
    return hashed.hexdigest()


def checked(properties: Properties | None, topic: str, payload: bytes) -> Properties | None:
    """``properties`` of a message received as ``topic`` with ``payload``, its
    ``tidelog-*`` stamps removed unless their digest matches the message (stamps
    copied onto another message, or without a digest, are no stamps)."""
    if properties is None:
        return None
    stamps = _stamps(properties)
    if not stamps or stamps.get(DIGEST) == digest(topic, payload):
        return properties
    users = tuple((k, v) for k, v in properties.user_properties if k not in KEYS)
    return attrs.evolve(properties, user_properties=users)


def stamp(
    properties: Properties | None, origin: Origin, hops: int, topic: str, payload: bytes
) -> tuple[tuple[str, str], ...]:
    """The user properties of a message pushed as ``topic`` with ``payload``: the
    event's own (earlier stamps replaced) and the stamps for ``origin`` after
    ``hops`` crossings."""
    own = properties.user_properties if properties is not None else ()
    node, incarnation, offset = origin
    return (
        *((k, v) for k, v in own if k not in KEYS),
        (ORIGIN, node),
        (INCARNATION, incarnation),
        (OFFSET, str(offset)),
        (HOPS, str(hops)),
        (DIGEST, digest(topic, payload)),
    )
