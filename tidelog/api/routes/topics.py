"""The log's topics: which topics hold events (``GET /v1/topics``) and the offset a
time falls at (``GET /v1/offsets``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from tidelog.api.routes.params import AccessDep, BrokerDep, FilterQuery, SecurityDep, checked_filter
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
    broker: BrokerDep, access: AccessDep, security: SecurityDep, topic_filter: FilterQuery = None
) -> JSONResponse:
    """Topics the client may read (every topic for ``sys_users`` and ``admin_users``)."""
    topics = await broker.topics(checked_filter(security, topic_filter))
    topics = [t for t in topics if access.sees_topic(t.topic)]
    return JSONResponse({"topics": [{"topic": t.topic, "count": t.count} for t in topics]})


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
