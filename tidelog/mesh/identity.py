"""A node's identity in the mesh: its id and its log's incarnation.

The origin of an event in the mesh is the node id plus the incarnation of the
log it was first appended to. The incarnation is a random token created with
the data directory (stored in its ``node`` state namespace, which ``tidelog
dump`` does not carry): a data directory that is replaced, or rebuilt with
``tidelog load``, gets a new one, and links report the change as a gap instead
of resuming at offsets that now mean something else. Without a configured
``node.id`` the node's id is generated once and stored the same way.
"""

from __future__ import annotations

import secrets

import attrs

from tidelog.engine import Broker

NAMESPACE = "node"


@attrs.frozen
class NodeIdentity:
    node_id: str
    incarnation: str
    """8 hex digits, new for every new data directory."""


async def load_identity(broker: Broker, configured_id: str | None) -> NodeIdentity:
    """The node's id (configured, or the stored/generated default) and incarnation,
    created and stored on first use."""
    stored = await broker.load_state(NAMESPACE)
    changes: dict[str, bytes | None] = {}
    incarnation = stored.get("incarnation", b"").decode("ascii", "replace")
    if not incarnation:
        incarnation = secrets.token_hex(4)
        changes["incarnation"] = incarnation.encode("ascii")
    default_id = stored.get("default_id", b"").decode("ascii", "replace")
    if not default_id:
        default_id = f"node-{secrets.token_hex(4)}"
        changes["default_id"] = default_id.encode("ascii")
    if changes:
        await broker.save_state(NAMESPACE, changes)
    return NodeIdentity(configured_id or default_id, incarnation)
