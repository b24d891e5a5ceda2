"""``/v1/overview``: what an operator asks first (is it healthy, what flows, how big).

One document built from counters that already exist (the engine's statistics,
the log's state, the traffic counters, the configuration); nothing is counted per
message for it. ``/v1/overview/stream`` sends it as Server-Sent Events every
``interval_ms`` with the rates since the previous tick, which is what the
console's live charts draw. Shapes in ``docs/rest.md``.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
import urllib.parse
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

import tidelog
from tidelog.api.routes.responses import JSONResponse
from tidelog.api.sse import SnapshotStream
from tidelog.engine.group_commit import COMMIT_SECONDS_BUCKETS
from tidelog.security import Access

if TYPE_CHECKING:
    from tidelog.context import ServerContext

router = APIRouter()

MIN_INTERVAL_MS = 250
MAX_INTERVAL_MS = 60_000


def _quantile(histogram: list[int], q: float) -> float | None:
    """The upper bound of the bucket holding the ``q`` quantile of a commit histogram
    (None without commits; the last bucket's lower bound for the overflow bucket)."""
    total = sum(histogram)
    if not total:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(histogram):
        seen += count
        if seen >= rank:
            return COMMIT_SECONDS_BUCKETS[min(index, len(COMMIT_SECONDS_BUCKETS) - 1)]
    return COMMIT_SECONDS_BUCKETS[-1]


def _data_path(url: str) -> str | None:
    """The file or directory a storage URL names (None for ``memory://``)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "memory":
        return None
    return urllib.parse.unquote(parts.netloc + parts.path) or None


def _disk(path: str | None) -> dict[str, int] | None:
    """Total and free bytes of the file system holding ``path``."""
    while path and not os.path.exists(path):
        parent = os.path.dirname(path.rstrip("/"))
        if parent == path:
            return None
        path = parent
    if not path:
        return None
    usage = shutil.disk_usage(path)
    return {"total": usage.total, "free": usage.free}


def _retention(context: ServerContext) -> dict[str, int | None]:
    config = context.config
    storage = {**config.sections.get("storage", {}), **config.storage_options}
    return {
        "retention_ms": storage.get("retention_ms"),
        "retention_bytes": storage.get("retention_bytes"),
    }


class Overview:
    """Builds overview documents for one reader; keeps the previous totals, so each
    document also carries the rates since the one before."""

    def __init__(self, context: ServerContext, access: Access) -> None:
        self.context = context
        self.access = access
        self._last: tuple[float, int, int, int, list[int]] | None = None

    async def snapshot(self) -> dict[str, Any]:
        context = self.context
        broker = context.broker
        stats = broker.statistics()
        state = await broker.log_state()
        writer, log_stats = stats.writer, stats.log
        now = time.monotonic()
        histogram = list(writer.commit_seconds_histogram)
        rates: dict[str, float | None] = {"published": None, "deliveries": None,
                                          "delivered_bytes": None}  # fmt: skip
        interval_histogram = histogram
        if self._last is not None:
            then, published, deliveries, delivered, previous = self._last
            elapsed = max(now - then, 1e-6)
            rates = {
                "published": (stats.published - published) / elapsed,
                "deliveries": (stats.deliveries - deliveries) / elapsed,
                "delivered_bytes": (stats.delivered_bytes - delivered) / elapsed,
            }
            interval_histogram = [a - b for a, b in zip(histogram, previous, strict=True)]
        self._last = (now, stats.published, stats.deliveries, stats.delivered_bytes, histogram)
        config = context.config
        traffic = context.traffic
        storage_url = config.storage
        data_path = _data_path(storage_url)
        return {
            "time": int(time.time() * 1000),
            "node": {
                "id": context.mesh.identity.node_id if context.mesh else config.node_id,
                "host": socket.gethostname(),
                "version": tidelog.__version__,
                "started_at": int(traffic.started_at * 1000),
                "uptime_seconds": round(time.time() - traffic.started_at, 3),
            },
            "storage": {
                "backend": log_stats.backend,
                # the path is configuration: for sys_users and admin_users only
                "url": storage_url if self.access.sees_all else None,
                "bytes": state.bytes,
                "segments": log_stats.segments,
                "first_offset": state.first_offset,
                "next_offset": state.next_offset,
                "first_timestamp": state.first_timestamp,
                "last_timestamp": state.last_timestamp,
                "durable_offset": log_stats.durable_offset,
                "disk": _disk(data_path),
                **_retention(context),
            },
            "listeners": dict(context.ports),
            "connections": {p: n for p, n in traffic.connections.items() if n},
            "totals": {
                "published": stats.published,
                "deliveries": stats.deliveries,
                "delivered_bytes": stats.delivered_bytes,
                "commit_batches": writer.batches,
            },
            "rates": rates,
            "commit": {
                "last_seconds": writer.last_commit_seconds,
                "max_seconds": writer.max_commit_seconds,
                "mean_seconds": (
                    writer.commit_seconds_total / writer.batches if writer.batches else None
                ),
                "p50_seconds": _quantile(interval_histogram, 0.5),
                "p99_seconds": _quantile(interval_histogram, 0.99),
                "pending_events": writer.pending_events,
            },
            "feeds": stats.feeds,
            "feeds_catching_up": stats.feeds_catching_up,
            "subscriptions": stats.subscriptions,
            "sessions": stats.sessions,
            "retained": stats.retained,
            "topics": len(stats.topic_counts),
        }


def _overview(request: Request) -> Overview:
    return Overview(request.app.state.context, request.state.access)


@router.get("/v1/overview", tags=["operations"], summary="Node, storage, traffic and rates")
async def overview(request: Request) -> Response:
    """The console's overview document (``docs/rest.md``, "Overview")."""
    return JSONResponse(await _overview(request).snapshot())


@router.get(
    "/v1/overview/stream",
    response_class=Response,
    responses={200: {"content": {"text/event-stream": {}}, "description": "an endless SSE stream"}},
    tags=["operations"],
    summary="The overview as Server-Sent Events, with rates, every interval_ms",
)
async def overview_stream(
    request: Request,
    interval_ms: Annotated[
        int,
        Query(ge=MIN_INTERVAL_MS, le=MAX_INTERVAL_MS, description="ms between documents"),
    ] = 1000,
) -> Response:
    """One ``event: overview`` message now and then every ``interval_ms``; ``rates``
    are per second since the previous message (null in the first)."""
    return SnapshotStream(
        _overview(request).snapshot,
        "overview",
        interval_ms / 1000,
        request.app.state.closing,
        request.app.state.context.traffic,
    )
