"""Events: publish one (``POST /v1/topics/{topic}``) or a batch (``POST /v1/events``),
read or replay a page (``GET /v1/events``, through :mod:`.reading`), and the live
tail as Server-Sent Events (``GET /v1/events/stream``)."""

from __future__ import annotations

import functools
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError

from tidelog.api.problems import ApiError
from tidelog.api.routes.params import (
    AccessDep,
    BrokerDep,
    EncodingQuery,
    FilterQuery,
    LimitQuery,
    MaxBytesQuery,
    SecurityDep,
    WaitQuery,
    checked_filter,
    get_security,
    one_of,
)
from tidelog.api.routes.reading import app_closing, read_page
from tidelog.api.routes.responses import JSONResponse, errors
from tidelog.api.shapes import (
    DEFAULT_READ_BYTES,
    DEFAULT_READ_LIMIT,
    BatchIn,
    BatchStored,
    EventsPage,
    Stored,
)
from tidelog.api.sse import EventStream
from tidelog.engine import Position, parse_position
from tidelog.engine.positions import EARLIEST, MAX_INTEGER, parse_time
from tidelog.security import Name, Quota, Right
from tidelog.security.http import EventFilter
from tidelog.storage import NewEvent, Properties
from tidelog.topics import parse_shared

router = APIRouter()


@router.post(
    "/v1/topics/{topic:path}",
    status_code=201,
    response_model=Stored,
    responses=errors(413),
    tags=["publish"],
    summary="Publish one event (the raw body is the payload)",
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "text/plain": {"schema": {"type": "string"}},
            },
        }
    },
)
async def publish_one(
    request: Request,
    broker: BrokerDep,
    access: AccessDep,
    topic: str,
    qos: Annotated[int | None, Query(ge=0, le=2, description="default 0")] = None,
    retain: Annotated[bool | None, Query(description="default false")] = None,
    qos_header: Annotated[int | None, Header(alias="x-tidelog-qos", ge=0, le=2)] = None,
    retain_header: Annotated[bool | None, Header(alias="x-tidelog-retain")] = None,
) -> JSONResponse:
    """Publish the request body as the payload of one event on ``topic``.

    Answers 201 with the event's offset and timestamp once it is durable.
    ``qos`` and ``retain`` come from the query or the ``X-Tidelog-QoS`` /
    ``X-Tidelog-Retain`` headers (the query wins); the request's
    ``Content-Type`` is stored as the event's content type.
    """
    security = get_security(request)
    security.limits.check_topic(topic)
    access.check_topic(Right.PUBLISH, topic)  # both before the body is read
    payload = await request.body()
    content_type = request.headers.get("content-type")
    properties = None
    if content_type:
        properties = Properties(content_type=content_type[:1024])
    new = NewEvent(
        topic,
        payload,
        qos if qos is not None else (qos_header or 0),
        retain if retain is not None else bool(retain_header),
        properties,
    )
    security.quotas.retain(access.owner, [new])
    (event,) = await broker.publish_many([new])
    return JSONResponse({"offset": event.offset, "timestamp": event.timestamp}, status_code=201)


@router.post(
    "/v1/events",
    status_code=201,
    response_model=BatchStored,
    responses=errors(413),
    tags=["publish"],
    summary="Publish a batch of events, all or nothing, in one durable commit",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchIn"}}},
        }
    },
)
async def publish_batch(request: Request, broker: BrokerDep, access: AccessDep) -> JSONResponse:
    """``{"events": [{"topic", "payload", "encoding"?, "qos"?, "retain"?, "properties"?}]}``;
    payloads are base64 unless an event says ``"encoding": "text"``."""
    # parsed and validated in one pass by pydantic-core (the body is the hot path of
    # batch publishing); the schema is BatchIn, added to the OpenAPI document by create_app
    try:
        batch = BatchIn.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        ) from None
    security = get_security(request)
    events = [event.to_new_event() for event in batch.events]
    security.limits.check_events(events)
    for event in events:
        access.check_topic(Right.PUBLISH, event.topic)
    security.quotas.retain(access.owner, events)
    stored = await broker.publish_many(events)
    return JSONResponse(
        {"events": [{"offset": e.offset, "timestamp": e.timestamp} for e in stored]},
        status_code=201,
    )


@router.get(
    "/v1/events",
    response_model=EventsPage,
    responses=errors(),
    tags=["read"],
    summary="Read or replay events from an offset or a time, optionally long-polling",
)
async def get_events(
    request: Request,
    broker: BrokerDep,
    access: AccessDep,
    security: SecurityDep,
    topic_filter: FilterQuery = None,
    from_offset: Annotated[
        int | None, Query(ge=0, le=MAX_INTEGER, description="default: the first offset")
    ] = None,
    from_time: Annotated[str | None, Query(description="RFC 3339 or epoch ms")] = None,
    to_offset: Annotated[int | None, Query(ge=0, le=MAX_INTEGER, description="exclusive")] = None,
    to_time: Annotated[str | None, Query(description="exclusive; RFC 3339 or epoch ms")] = None,
    limit: LimitQuery = DEFAULT_READ_LIMIT,
    max_bytes: MaxBytesQuery = DEFAULT_READ_BYTES,
    wait_ms: WaitQuery = 0,
    encoding: EncodingQuery = "base64",
) -> Response:
    """Events in offset order and where to continue (``next_offset``).

    With ``wait_ms`` and nothing to return yet, waits up to that long for a
    matching event (long-poll); poll again from ``next_offset``.
    """
    one_of(from_offset, from_time, "from_offset or from_time")
    one_of(to_offset, to_time, "to_offset or to_time")
    topic_filter = checked_filter(security, topic_filter)
    visible = EventFilter(access, Right.READ, topic_filter)
    position = EARLIEST
    if from_offset is not None:
        position = Position("offset", from_offset)
    elif from_time is not None:
        position = Position("time", parse_time(from_time))
    start = await broker.resolve(position)
    end = to_offset
    if to_time is not None:
        end = await broker.offset_for_time(parse_time(to_time))
    return await read_page(
        request,
        functools.partial(
            broker.read,
            start,
            topic_filter,
            limit=limit,
            max_bytes=max_bytes,
            end=end,
            wait=wait_ms / 1000,
        ),
        start,
        visible,
        encoding,
    )


@router.get(
    "/v1/events/stream",
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "an endless SSE stream"},
        **errors(),
    },
    response_class=Response,
    tags=["read"],
    summary="Live tail as Server-Sent Events (id = offset; Last-Event-ID resumes)",
)
async def stream_events(
    request: Request,
    broker: BrokerDep,
    access: AccessDep,
    topic_filter: Annotated[
        str, Query(alias="filter", description="MQTT topic filter", max_length=65535)
    ] = "#",
    start: Annotated[
        str,
        Query(
            alias="from",
            description="earliest, latest, offset:<N> or time:<T>; Last-Event-ID wins",
        ),
    ] = "latest",
    encoding: EncodingQuery = "base64",
    last_event_id: Annotated[str | None, Header(alias="last-event-id")] = None,
) -> Response:
    security = get_security(request)
    security.limits.check_name(Name.FILTER, topic_filter)
    group, inner = parse_shared(topic_filter)
    if group is not None:
        raise ApiError(400, "invalid_topic", "a stream cannot join a shared subscription")
    position: Position
    if last_event_id is not None and last_event_id.strip():
        text = last_event_id.strip()
        if not text.isdigit():
            raise ApiError(400, "invalid_position", f"Last-Event-ID {text!r} is not an offset")
        position = parse_position(int(text) + 1)
    else:
        position = parse_position(start)
    if position.kind in ("offset", "time"):  # refused before the stream starts
        position = Position("offset", await broker.resolve(position))
    # the live tail needs subscribe; starting in the past needs read as well
    rights = Right.SUBSCRIBE if position.kind == "latest" else Right.SUBSCRIBE | Right.READ
    visible = EventFilter(access, rights, inner)
    owner = access.owner
    security.quotas.check(Quota.SUBSCRIPTIONS, owner)  # 429 while it can still be answered
    return EventStream(
        broker,
        inner,
        position,
        encoding,
        app_closing(request),
        request.app.state.context.traffic,
        keep=visible.keep,
        counted=functools.partial(security.quotas.counted, Quota.SUBSCRIPTIONS, owner),
    )
