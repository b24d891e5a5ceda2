"""``GET /v1/cluster``: the nodes serving this log (docs/cluster.md, docs/rest.md).

On a shared log (``kafka://``) every node lists every node; otherwise the one
node. Each entry: ``id``, ``listeners`` (name: port), ``host``, ``connections``
(open now, by protocol), ``position`` (what the node had routed), ``behind``
(offsets between the log head and that position), ``alive`` (announced within
the last three announce intervals), ``started_at`` and ``seen_at`` (epoch ms),
``shares`` (``[group, filter, offset]``: how far it delivered each shared group)
and, for a dead node whose groups and wills another took over, ``reaped_by``.
"""

from __future__ import annotations

from fastapi import APIRouter

from tidelog.api.routes.params import BrokerDep
from tidelog.api.routes.responses import JSONResponse

router = APIRouter()


@router.get("/v1/cluster", tags=["operations"], summary="The nodes serving this log")
async def cluster(broker: BrokerDep) -> JSONResponse:
    head = (await broker.log_state()).next_offset
    nodes = await broker.cluster.nodes(head)
    return JSONResponse(
        {"shared": broker.shared, "node": broker.cluster.node_id, "head": head, "nodes": nodes}
    )
