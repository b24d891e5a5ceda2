"""``GET /v1/cluster``: the nodes serving this log (docs/cluster.md, docs/rest.md).

On a shared log (``kafka://``) every node lists every node; otherwise the one
node. Each entry: ``id``, ``listeners`` (name: port), ``host``, ``connections``
(open now, by protocol), ``position`` (what the node had routed), ``behind``
(offsets between the log head and that position), ``alive`` (announced within
the last three announce intervals), ``started_at`` and ``seen_at`` (epoch ms),
``shares`` (``[group, filter, offset, durable]``: the first offset of each shared
group a member of the node has not finished, and whether a persistent session is a member;
only the groups whose filter the caller may subscribe to, every group for
``sys_users`` and ``admin_users``, as ``/v1/stats`` shows only readable topics)
and, for a dead node whose groups and wills another took over, ``reaped_by``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from tidelog.api.routes.params import AccessDep, BrokerDep
from tidelog.api.routes.responses import JSONResponse
from tidelog.security import Access, Grant, Right

router = APIRouter()


@router.get("/v1/cluster", tags=["operations"], summary="The nodes serving this log")
async def cluster(broker: BrokerDep, access: AccessDep) -> JSONResponse:
    head = (await broker.log_state()).next_offset
    nodes = await broker.cluster.nodes(head)
    if not access.sees_all:
        nodes = [_visible_shares(node, access) for node in nodes]
    return JSONResponse(
        {"shared": broker.shared, "node": broker.cluster.node_id, "head": head, "nodes": nodes}
    )


def _visible_shares(node: dict[str, Any], access: Access) -> dict[str, Any]:
    """``node`` with only the shared groups whose filter ``access`` may subscribe to
    (group names and filters are metadata of the topics they read)."""
    shares = node.get("shares")
    if not isinstance(shares, list):
        return node
    kept = [
        entry
        for entry in shares
        if isinstance(entry, list)
        and len(entry) > 1
        and isinstance(entry[1], str)
        and _may_read(access, entry[1])
    ]
    return {**node, "shares": kept}


def _may_read(access: Access, topic_filter: str) -> bool:
    try:
        return access.grant(Right.READ, topic_filter) is not Grant.DENIED
    except ValueError:  # not a valid filter: shown to no one but sees_all
        return False
