"""Mesh links: list, show, create or replace, delete; and their Prometheus metrics
(docs/mesh.md).

Links are the node's infrastructure, configured by its operator: they are
listed for ``admin_users`` and ``sys_users``, and for every client where
``$SYS`` is open to all (a loopback-only server allowing anonymous clients);
anyone else sees an empty list, as for resources of other users. Creating,
replacing and deleting a link at run time (``PUT``/``DELETE /v1/links/{name}``)
needs ``security.admin_users`` (CONTRACTS, "Rights and secrets"); such links are
persisted in the log and dialed again after a restart. Links of the
configuration file cannot be changed over REST (409).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tidelog.api.routes.params import AccessDep
from tidelog.api.routes.responses import errors
from tidelog.errors import LinkError, LinkNotFoundError, LogClosedError
from tidelog.mesh.config import parse_link
from tidelog.mesh.node import Mesh
from tidelog.security import Access, NotAuthorizedError

router = APIRouter()

LinkName = Annotated[
    str, PathParam(min_length=1, max_length=64, description="1 to 64 of A-Z a-z 0-9 _ . -")
]


def _mesh(request: Request) -> Mesh:
    mesh: Mesh | None = request.app.state.context.mesh
    if mesh is None:
        raise LogClosedError("the mesh is not running on this server")
    return mesh


def _admin(access: Access, what: str) -> None:
    if not access.admin:
        raise NotAuthorizedError(f"{what} a link needs security.admin_users")


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


@router.get(
    "/v1/links/{name}",
    responses=errors(404),
    tags=["operations"],
    summary="One outbound mesh link: its settings, state, lag and counters",
)
async def get_link(request: Request, access: AccessDep, name: LinkName) -> JSONResponse:
    """The link's entry of ``GET /v1/links``; 404 for a name that is not a link this
    node dials (and for callers who may not see links)."""
    mesh = _mesh(request)
    status = mesh.statuses.get(name)
    if status is None or status.direction != "outbound" or not may_see_links(access):
        raise LinkNotFoundError(f"no link named {name!r}")
    return JSONResponse(status.shown())


@router.put(
    "/v1/links/{name}",
    responses={201: {"description": "created"}, **errors(400, 403, 409)},
    tags=["operations"],
    summary="Create or replace a mesh link at run time (security.admin_users only)",
)
async def put_link(
    request: Request,
    access: AccessDep,
    name: LinkName,
    body: Annotated[
        dict[str, Any], Body(description="the keys of a [[link]] table: url, pull, push, mode, ...")
    ],
) -> JSONResponse:
    """The body holds the keys of a ``[[link]]`` table (docs/mesh.md) without ``name``
    (or with the same name): ``url``, ``pull``, ``push``, ``mode``, ``local_prefix``,
    ``remote_prefix``, credentials, TLS, tuning. The link is persisted and dialed at
    once; a replaced link is redialed. 201 when created, 200 when replaced."""
    _admin(access, "creating")
    if "name" in body and body["name"] != name:
        raise LinkError(f"the body names link {body['name']!r}, the path {name!r}")
    try:
        link = parse_link({**body, "name": name}, f"link {name!r}")
    except ValueError as exc:
        raise LinkError(str(exc)) from None
    mesh = _mesh(request)
    created = await mesh.put_link(link, access.owner)
    return JSONResponse(mesh.statuses[name].shown(), status_code=201 if created else 200)


@router.delete(
    "/v1/links/{name}",
    status_code=204,
    responses=errors(403, 404, 409),
    response_class=Response,
    tags=["operations"],
    summary="Delete a mesh link created at run time (security.admin_users only)",
)
async def delete_link(request: Request, access: AccessDep, name: LinkName) -> Response:
    """Stops the link and forgets it. Its positions stay: a link to the same peer
    created later resumes where this one stopped."""
    _admin(access, "deleting")
    await _mesh(request).delete_link(name)
    return Response(status_code=204)


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
