"""Operations: statistics (``/v1/stats``), liveness (``/healthz``) and Prometheus
metrics (``/metrics``)."""

from __future__ import annotations

import math
from typing import Any

import attrs
from fastapi import APIRouter, Request
from fastapi.responses import Response

from tidelog.api import metrics, problems
from tidelog.api.routes.params import AccessDep, BrokerDep
from tidelog.api.routes.responses import JSONResponse
from tidelog.api.shapes import Health, Problem

router = APIRouter()


@router.get("/v1/stats", tags=["operations"], summary="Broker statistics")
async def stats(broker: BrokerDep, access: AccessDep) -> JSONResponse:
    """Counters of the whole broker; ``topic_counts`` lists only the topics the client
    may read (every topic for ``sys_users`` and ``admin_users``)."""
    snapshot = attrs.asdict(broker.statistics())
    if not access.sees_all:
        counts = snapshot["topic_counts"]
        snapshot["topic_counts"] = {t: n for t, n in counts.items() if access.sees_topic(t)}
    state = await broker.log_state()
    snapshot["state"] = attrs.asdict(state)
    return JSONResponse(_finite(snapshot))


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


@router.get(
    "/healthz",
    response_model=Health,
    responses={503: {"model": Problem}},
    tags=["operations"],
    summary="Liveness: 200 while the broker takes requests",
)
async def healthz(broker: BrokerDep) -> Response:
    if broker.closed:
        return problems.problem(503, "shutting_down", "the broker is shutting down")
    return JSONResponse({"status": "ok"})


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    tags=["operations"],
    summary="Prometheus metrics",
)
async def metrics_endpoint(request: Request, broker: BrokerDep, access: AccessDep) -> Response:
    """Broker-wide counters and the cluster's nodes (alive, log lag); per-cursor
    series only with ``http.metrics_cursor_labels``, and then only the caller's
    cursors (every cursor for ``sys_users`` and ``admin_users``), as ``/v1/stats``
    shows only readable topics."""
    collector: metrics.BrokerCollector = request.app.state.collector
    cursors = await broker.cursors(owner=None if access.sees_all else access.owner)
    labelled = request.app.state.metrics_cursor_labels
    counted = [(c, await c.pending() if labelled else 0) for c in cursors]
    nodes = await broker.cluster.nodes((await broker.log_state()).next_offset)
    # No await from here to the render: the collector is shared by every scrape, and
    # another (an admin's) could otherwise swap its snapshot in before this one renders.
    collector.snapshot(counted, labelled=labelled)
    collector.cluster_snapshot(nodes)
    return Response(metrics.render(request.app.state.registry), media_type=metrics.CONTENT_TYPE)
