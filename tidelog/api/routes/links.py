"""``GET /v1/links`` and the links' Prometheus metrics (docs/mesh.md).

Links are the node's infrastructure, configured by its operator: they are
listed for ``admin_users`` and ``sys_users``, and for every client where
``$SYS`` is open to all (a loopback-only server allowing anonymous clients);
anyone else sees an empty list, as for resources of other users.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tidelog.api.routes.params import AccessDep
from tidelog.mesh.node import Mesh
from tidelog.security import Access

router = APIRouter()


def may_see_links(access: Access) -> bool:
    return access.sees_all or access.policy.sys_open


@router.get("/v1/links", tags=["operations"], summary="Mesh links: state, lag and counters")
async def list_links(request: Request, access: AccessDep) -> JSONResponse:
    """Every link of this node: the ones it dials (``outbound``, from ``[[link]]``) and
    the ones peers dialed (``inbound``, named ``<peer>:<link>``), each with ``name``,
    ``state`` (``connected`` or not), ``lag`` (events) and counters."""
    mesh: Mesh | None = request.app.state.context.mesh
    body: dict[str, Any] = {"node": None, "incarnation": None, "links": []}
    if mesh is not None and may_see_links(access):
        body = {
            "node": mesh.node_id,
            "incarnation": mesh.identity.incarnation,
            "links": mesh.shown(),
        }
    return JSONResponse(body)


class LinkCollector(Collector):
    """Per-link families, read from the link statuses when ``/metrics`` is scraped."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh

    def collect(self) -> Iterator[Metric]:
        labels = ["link", "direction", "peer"]
        connected = GaugeMetricFamily(
            "tidelog_link_connected", "1 while the link is connected", labels=labels
        )
        lag = GaugeMetricFamily(
            "tidelog_link_lag_events", "events of the remote's log not yet received", labels=labels
        )
        lag_ms = GaugeMetricFamily(
            "tidelog_link_lag_milliseconds", "how long the link has been behind", labels=labels
        )
        events_in = CounterMetricFamily(
            "tidelog_link_events_in", "events received and appended", labels=labels
        )
        events_out = CounterMetricFamily("tidelog_link_events_out", "events sent", labels=labels)
        gaps = CounterMetricFamily(
            "tidelog_link_gaps",
            "times events were gone (retention, a replaced data directory) before the link "
            "read them",
            labels=labels,
        )
        gap_events = CounterMetricFamily(
            "tidelog_link_gap_events", "events lost to gaps", labels=labels
        )
        duplicates = CounterMetricFamily(
            "tidelog_link_duplicates", "events received again and dropped", labels=labels
        )
        for status in self.mesh.statuses.values():
            values = [status.name, status.direction, status.peer or ""]
            connected.add_metric(values, 1.0 if status.state == "connected" else 0.0)
            lag.add_metric(values, status.lag)
            lag_ms.add_metric(values, status.lag_ms)
            events_in.add_metric(values, status.events_in)
            events_out.add_metric(values, status.events_out)
            gaps.add_metric(values, status.gaps)
            gap_events.add_metric(values, status.gap_events)
            duplicates.add_metric(values, status.duplicates)
        yield from (connected, lag, lag_ms, events_in, events_out, gaps, gap_events, duplicates)


def register_metrics(registry: CollectorRegistry, mesh: Mesh | None) -> None:
    """Add the per-link metrics of ``mesh`` (if any) to an app's registry."""
    if mesh is not None:
        registry.register(LinkCollector(mesh))
