"""The log's topics: which topics hold events (``GET /v1/topics``) and the offset a
time falls at (``GET /v1/offsets``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from tidelog.api.event_json import event_out
from tidelog.api.routes.params import (
    AccessDep,
    BrokerDep,
    EncodingQuery,
    FilterQuery,
    SecurityDep,
    checked_filter,
)
from tidelog.api.routes.responses import JSONResponse, errors
from tidelog.api.shapes import OffsetOut, TopicsOut
from tidelog.engine.positions import parse_time
from tidelog.security import Right

router = APIRouter()


@router.get(
    "/v1/topics",
    response_model=TopicsOut,
    responses=errors(),
    tags=["log"],
    summary="Topics with stored events and their counts",
)
async def list_topics(
    broker: BrokerDep,
    access: AccessDep,
    security: SecurityDep,
    topic_filter: FilterQuery = None,
    last: Annotated[
        bool, Query(description="also return each topic's newest event as last_event")
    ] = False,
    encoding: EncodingQuery = "base64",
) -> JSONResponse:
    """Topics the client may read (every topic for ``sys_users`` and ``admin_users``),
    with their event count and newest offset; ``last=true`` adds that newest event
    (one single-event read per topic, at the offset the listing already knows)."""
    topics = await broker.topics(checked_filter(security, topic_filter))
    out: list[dict[str, Any]] = []
    for t in topics:
        if not access.sees_topic(t.topic):
            continue
        item: dict[str, Any] = {"topic": t.topic, "count": t.count, "last_offset": t.last_offset}
        if last:
            page = await broker.read(t.last_offset, t.topic, limit=1, end=t.last_offset + 1)
            item["last_event"] = event_out(page.events[0], encoding) if page.events else None
        out.append(item)
    return JSONResponse({"topics": out})


@router.get(
    "/v1/offsets",
    response_model=OffsetOut,
    responses=errors(403),
    tags=["log"],
    summary="The first offset at or after a time",
)
async def offset_for_time(
    broker: BrokerDep,
    access: AccessDep,
    security: SecurityDep,
    time: Annotated[str, Query(description="RFC 3339 or epoch ms")],
    topic_filter: Annotated[
        str,
        Query(
            alias="filter",
            description="the filter the caller means to read from there: it needs the read "
            "right on it (403)",
            max_length=65535,
        ),
    ] = "#",
) -> JSONResponse:
    topic_filter = checked_filter(security, topic_filter) or "#"
    access.check_filter(Right.READ, topic_filter)
    moment = parse_time(time)
    return JSONResponse({"time": moment, "offset": await broker.offset_for_time(moment)})
