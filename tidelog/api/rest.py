"""The REST API: a FastAPI app over one :class:`~tidelog.engine.Broker`, and its listener.

:func:`create_app` builds the app over the server's
:class:`~tidelog.context.ServerContext` (every route reaches the broker, the
security and the counters through ``app.state``); :func:`serve_http` serves it
with Hypercorn's trio worker in the broker's own trio process, as one of the
listeners of :mod:`tidelog.server`. The endpoints, shapes and errors are documented in
``docs/rest.md`` and in the app's own ``/openapi.json``.

Every request is bounded: bodies by :class:`~tidelog.api.limits.BodyLimitMiddleware`
(413), reads by ``limit`` and ``max_bytes`` caps, long-polls by a ``wait_ms`` cap.
A publish answers only once its event is durable (the engine's group commit).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import attrs
import hypercorn.config
import hypercorn.trio
import trio
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html, swagger_ui_default_parameters
from fastapi.openapi.utils import get_openapi
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError

import tidelog
from tidelog.api import cluster as cluster_routes
from tidelog.api import metrics, problems
from tidelog.api.limits import DEFAULT_MAX_BODY_BYTES, BodyLimitMiddleware, Utf8PathMiddleware
from tidelog.api.problems import ApiError
from tidelog.api.shapes import (
    DEFAULT_READ_BYTES,
    DEFAULT_READ_LIMIT,
    MAX_READ_BYTES,
    MAX_READ_LIMIT,
    MAX_WAIT_MS,
    BatchIn,
    BatchStored,
    CommitIn,
    CursorIn,
    CursorOut,
    CursorPage,
    CursorsOut,
    Encoding,
    EventsPage,
    Health,
    OffsetOut,
    Problem,
    Stored,
    TopicsOut,
    dumps,
    encode_events,
)
from tidelog.api.sse import EventStream
from tidelog.concurrency import background_nursery
from tidelog.engine import Broker, Cursor, Position, parse_position
from tidelog.engine.positions import EARLIEST, MAX_INTEGER, parse_time
from tidelog.errors import CursorNotFoundError
from tidelog.security import (
    Access,
    Grant,
    Name,
    Principal,
    Quota,
    Right,
    Security,
)
from tidelog.security.http import AuthMiddleware, EventFilter
from tidelog.security.tls import server_context
from tidelog.storage import NewEvent, Properties, ReadResult
from tidelog.topics import parse_shared, validate_topic_filter

if TYPE_CHECKING:
    from tidelog.context import ServerContext

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
SWAGGER_UI_DIR = STATIC_DIR / "swagger-ui"
GRACEFUL_SHUTDOWN_SECONDS = 2.0
READ_TIMEOUT_SECONDS = 30.0
"""A connection that sends nothing for this long while a request is in progress is
closed (with the body deadline of :mod:`tidelog.api.limits`: slow senders)."""
KEEP_ALIVE_SECONDS = 75.0
"""An idle connection, or one whose request headers have not arrived, is closed after
this long (Hypercorn counts header time as idle)."""

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {"application/problem+json": {}}} for status in (400, 422)
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    out = dict(ERRORS)
    for status in statuses:
        out[status] = {"model": Problem, "content": {"application/problem+json": {}}}
    return out


class JSONResponse(Response):
    """JSON with the API's own compact serializer (no response-model validation)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


# -- dependencies --------------------------------------------------------------------


def get_broker(request: Request) -> Broker:
    broker: Broker = request.app.state.broker
    return broker


BrokerDep = Annotated[Broker, Depends(get_broker)]


def get_access(request: Request) -> Access:
    """The client's ACL view, left by :class:`~tidelog.security.http.AuthMiddleware`."""
    access = getattr(request.state, "access", None)
    if access is None:  # only routes outside the middleware (none today)
        access = request.app.state.context.security.access(Principal())
    assert isinstance(access, Access)
    return access


AccessDep = Annotated[Access, Depends(get_access)]


def get_security(request: Request) -> Security:
    """The server's security (from its context)."""
    security: Security = request.app.state.context.security
    return security


SecurityDep = Annotated[Security, Depends(get_security)]

FilterQuery = Annotated[
    str | None,
    Query(
        alias="filter",
        description="MQTT topic filter (+ and # wildcards); default: every topic; at most "
        "security.max_filter_bytes",
        max_length=65535,
    ),
]
OwnerQuery = Annotated[
    str | None,
    Query(
        description="admin_users: the user whose cursor this is (default: the caller)",
        max_length=65535,
    ),
]
LimitQuery = Annotated[
    int,
    Query(ge=1, le=MAX_READ_LIMIT, description=f"at most this many events (<= {MAX_READ_LIMIT})"),
]
MaxBytesQuery = Annotated[
    int,
    Query(
        ge=1,
        le=MAX_READ_BYTES,
        description="stop before this many payload bytes (one event at least)",
    ),
]
WaitQuery = Annotated[
    int,
    Query(
        ge=0,
        le=MAX_WAIT_MS,
        description="long-poll: wait up to this many ms for a first event when none is there",
    ),
]
EncodingQuery = Annotated[
    Encoding,
    Query(description="text: payloads as UTF-8 text where they are valid UTF-8, else base64"),
]
CursorName = Annotated[
    str,
    PathParam(min_length=1, max_length=65535, description="at most security.max_cursor_name_bytes"),
]


def _filter(security: Security, value: str | None) -> str | None:
    """A filter from a request: within its maximum (400) and valid (400)."""
    if value is None:
        return None
    security.limits.check_name(Name.FILTER, value)
    return validate_topic_filter(value)


def _app_closing(request: Request) -> trio.Event:
    closing: trio.Event = request.app.state.closing
    return closing


# -- reading: the one read path ---------------------------------------------------------


async def _read_page(
    request: Request,
    read: Callable[[], Awaitable[ReadResult]],
    start: int,
    visible: EventFilter,
    encoding: Encoding,
    extra: Callable[[], dict[str, int]] | None = None,
) -> Response:
    """Every page of events the API returns comes from here: ``read()`` one page (a
    long-poll is cut short with an empty page from ``start`` when the app shuts down,
    so it never holds up shutdown), keep the events the client may read, encode them
    with ``next_offset`` (and the fields ``extra()`` gives once the read is done)."""
    result = ReadResult([], start)
    closing = _app_closing(request)
    async with background_nursery() as nursery:

        async def stop_on_close() -> None:
            await closing.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(stop_on_close)
        result = await read()
        nursery.cancel_scope.cancel()
    events = encode_events(visible.keep(result.events), encoding)
    fields = "".join(f',"{name}":{value}' for name, value in (extra() if extra else {}).items())
    body = f'{{"events":{events},"next_offset":{result.next_offset}{fields}}}'
    return Response(body.encode("utf-8"), media_type="application/json")


async def _cursor_out(cursor: Cursor) -> dict[str, Any]:
    return {
        "name": cursor.name,
        "owner": cursor.owner,
        "filter": cursor.topic_filter,
        "position": cursor.position,
        "lag": cursor.lag,
        "pending": await cursor.pending(),
    }


def _one_of(first: Any, second: Any, names: str) -> None:
    if first is not None and second is not None:
        raise ApiError(400, "invalid_parameters", f"give {names}, not both")


# -- routes --------------------------------------------------------------------------

router = APIRouter()


@router.post(
    "/v1/topics/{topic:path}",
    status_code=201,
    response_model=Stored,
    responses=_errors(413),
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
    responses=_errors(413),
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
    responses=_errors(),
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
    _one_of(from_offset, from_time, "from_offset or from_time")
    _one_of(to_offset, to_time, "to_offset or to_time")
    topic_filter = _filter(security, topic_filter)
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
    return await _read_page(
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
        **_errors(),
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
        _app_closing(request),
        request.app.state.context.traffic,
        keep=visible.keep,
        counted=functools.partial(security.quotas.counted, Quota.SUBSCRIPTIONS, owner),
    )


@router.put(
    "/v1/cursors/{name}",
    response_model=CursorOut,
    responses={201: {"model": CursorOut, "description": "created"}, **_errors(409, 429)},
    tags=["cursors"],
    summary="Create a durable cursor (or confirm an existing one with the same filter)",
)
async def put_cursor(
    broker: BrokerDep,
    access: AccessDep,
    security: SecurityDep,
    name: CursorName,
    spec: CursorIn,
    owner: OwnerQuery = None,
) -> JSONResponse:
    """201 when created at ``start``; 200 when it exists with the same filter (its
    position untouched); 409 when it exists with another filter. The cursor belongs
    to the caller (each user has their own cursor names); 429 past
    ``security.max_cursors_per_user``."""
    security.limits.check_name(Name.CURSOR, name)
    owner = _owner(access, owner)
    # every check comes before any state is created
    EventFilter(access, Right.READ, _filter(security, spec.filter))  # 403 unless readable
    start = parse_position(spec.start)
    try:
        await broker.cursor(name, owner=owner)
        existed = True
    except CursorNotFoundError:
        existed = False
        security.quotas.check(Quota.CURSORS, owner, len(await broker.cursors(owner=owner)))
    cursor = await broker.create_cursor(name, spec.filter, start=start, owner=owner)
    return JSONResponse(await _cursor_out(cursor), status_code=200 if existed else 201)


@router.get(
    "/v1/cursors",
    response_model=CursorsOut,
    tags=["cursors"],
    summary="List the cursors",
)
async def list_cursors(broker: BrokerDep, access: AccessDep) -> JSONResponse:
    """The caller's cursors whose filter it may read; every cursor for ``admin_users``."""
    if access.admin:
        cursors = await broker.cursors()
    else:
        cursors = [c for c in await broker.cursors(owner=access.owner) if _readable(access, c)]
    return JSONResponse({"cursors": [await _cursor_out(c) for c in cursors]})


def _readable(access: Access, cursor: Cursor) -> bool:
    return access.grant(Right.READ, cursor.topic_filter or "#") is not Grant.DENIED


def _owner(access: Access, owner: str | None) -> str:
    """The namespace a request addresses: the caller's, or (``admin_users`` only) the
    one ``?owner=`` names. Anyone else naming another owner finds nothing (404)."""
    if owner is None or owner == access.owner:
        return access.owner
    if not access.admin:
        raise CursorNotFoundError("no such cursor")
    return owner


async def owned_cursor(
    broker: BrokerDep,
    access: AccessDep,
    security: SecurityDep,
    name: CursorName,
    owner: OwnerQuery = None,
) -> Cursor:
    """The cursor a ``/v1/cursors/{name}`` route names, if the caller may manage it:
    404 (as for a name that does not exist) for another user's, 400 for a name past
    its maximum."""
    security.limits.check_name(Name.CURSOR, name)
    return await broker.cursor(name, owner=_owner(access, owner))


OwnedCursor = Annotated[Cursor, Depends(owned_cursor)]


@router.get(
    "/v1/cursors/{name}",
    response_model=CursorOut,
    responses=_errors(404),
    tags=["cursors"],
    summary="Show a cursor: filter, position, lag",
)
async def get_cursor(cursor: OwnedCursor) -> JSONResponse:
    return JSONResponse(await _cursor_out(cursor))


@router.post(
    "/v1/cursors/{name}/fetch",
    response_model=CursorPage,
    responses=_errors(403, 404),
    tags=["cursors"],
    summary="The next events at the cursor, without moving it",
)
async def fetch_cursor(
    request: Request,
    access: AccessDep,
    cursor: OwnedCursor,
    limit: LimitQuery = DEFAULT_READ_LIMIT,
    max_bytes: MaxBytesQuery = DEFAULT_READ_BYTES,
    wait_ms: WaitQuery = 0,
    encoding: EncodingQuery = "base64",
) -> Response:
    """Commit ``next_offset`` once the events are processed. ``skipped`` counts the
    offsets retention removed before the cursor reached them. The caller needs the
    read right on the cursor's filter (403)."""
    visible = EventFilter(access, Right.READ, cursor.topic_filter)
    return await _read_page(
        request,
        functools.partial(cursor.fetch, limit, wait_ms / 1000, max_bytes=max_bytes),
        cursor.position,
        visible,
        encoding,
        lambda: {"skipped": cursor.skipped},
    )


@router.post(
    "/v1/cursors/{name}/commit",
    response_model=CursorOut,
    responses=_errors(404),
    tags=["cursors"],
    summary="Move the cursor to an offset (the next event to process); durable on return",
)
async def commit_cursor(cursor: OwnedCursor, commit: CommitIn) -> JSONResponse:
    await cursor.commit(commit.offset)
    return JSONResponse(await _cursor_out(cursor))


@router.delete(
    "/v1/cursors/{name}",
    status_code=204,
    responses=_errors(404),
    response_class=Response,
    tags=["cursors"],
    summary="Delete a cursor",
)
async def delete_cursor(broker: BrokerDep, cursor: OwnedCursor) -> Response:
    if not await broker.delete_cursor(cursor.name, owner=cursor.owner):
        raise CursorNotFoundError(f"no cursor named {cursor.name!r}")
    return Response(status_code=204)


@router.get(
    "/v1/topics",
    response_model=TopicsOut,
    responses=_errors(),
    tags=["log"],
    summary="Topics with stored events and their counts",
)
async def list_topics(
    broker: BrokerDep, access: AccessDep, security: SecurityDep, topic_filter: FilterQuery = None
) -> JSONResponse:
    """Topics the client may read (every topic for ``sys_users`` and ``admin_users``)."""
    topics = await broker.topics(_filter(security, topic_filter))
    topics = [t for t in topics if access.sees_topic(t.topic)]
    return JSONResponse({"topics": [{"topic": t.topic, "count": t.count} for t in topics]})


@router.get(
    "/v1/offsets",
    response_model=OffsetOut,
    responses=_errors(403),
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
    topic_filter = _filter(security, topic_filter) or "#"
    access.check_filter(Right.READ, topic_filter)
    moment = parse_time(time)
    return JSONResponse({"time": moment, "offset": await broker.offset_for_time(moment)})


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
    """Broker-wide counters; per-cursor series only with ``http.metrics_cursor_labels``,
    and then only the caller's cursors (every cursor for ``sys_users`` and
    ``admin_users``), as ``/v1/stats`` shows only readable topics."""
    collector: metrics.BrokerCollector = request.app.state.collector
    cursors = await broker.cursors(owner=None if access.sees_all else access.owner)
    labelled = request.app.state.metrics_cursor_labels
    counted = [(c, await c.pending() if labelled else 0) for c in cursors]
    collector.snapshot(counted, labelled=labelled)
    return Response(metrics.render(request.app.state.registry), media_type=metrics.CONTENT_TYPE)


@router.get("/", include_in_schema=False)
async def index() -> JSONResponse:
    return JSONResponse(
        {
            "name": "tidelog",
            "version": tidelog.__version__,
            "docs": "/docs",
            "openapi": "/openapi.json",
            "ui": "/ui/",
        }
    )


@router.get("/docs", include_in_schema=False)
async def swagger_ui() -> Response:
    """Swagger UI for /openapi.json, its assets from the package (no CDN: it works
    offline; tidelog/api/static/swagger-ui/README.md says where they come from)."""
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="tidelog API",
        swagger_js_url="/docs/assets/swagger-ui-bundle.js",
        swagger_css_url="/docs/assets/swagger-ui.css",
        swagger_favicon_url="/docs/assets/favicon-32x32.png",
        # no badge from the public validator service either
        swagger_ui_parameters={**swagger_ui_default_parameters, "validatorUrl": None},
    )


@router.get("/ui", include_in_schema=False)
async def ui_redirect() -> RedirectResponse:
    return RedirectResponse("/ui/")


@router.get("/ui/config.json", include_in_schema=False)
async def ui_config(request: Request) -> JSONResponse:
    """Where the example page finds the WebSocket listener."""
    return JSONResponse({"ws_port": request.app.state.ws_port, "ws_path": "/v1/ws"})


# -- the app and its listener --------------------------------------------------------


def create_app(
    context: ServerContext,
    *,
    ws_port: int | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    metrics_cursor_labels: bool = False,
) -> FastAPI:
    """The REST app over the server's context (its broker, security and traffic
    counters). ``ws_port`` tells the example page where /v1/ws is."""
    broker = context.broker
    app = FastAPI(
        docs_url=None,  # served below from the package's own copy of Swagger UI
        redoc_url=None,
        title="tidelog",
        version=tidelog.__version__,
        description="Publish, replay, stream and consume with durable cursors. "
        "Errors are RFC 9457 problem details. See docs/rest.md.",
    )
    app.openapi = functools.partial(_openapi, app)  # type: ignore[method-assign]
    app.state.context = context
    app.state.broker = broker
    app.state.ws_port = ws_port
    app.state.metrics_cursor_labels = metrics_cursor_labels
    app.state.closing = trio.Event()
    app.state.registry, app.state.collector = metrics.make_registry(broker, context.traffic)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    app.add_middleware(Utf8PathMiddleware)
    app.add_middleware(AuthMiddleware, security=context.security)  # runs first (docs/security.md)
    problems.install(app)
    app.include_router(router)
    app.include_router(cluster_routes.router)
    app.mount("/docs/assets", StaticFiles(directory=SWAGGER_UI_DIR), name="swagger-ui")
    app.mount("/ui", StaticFiles(directory=STATIC_DIR, html=True), name="ui")
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, plus the schemas of bodies a route parses itself."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        batch = BatchIn.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(batch.pop("$defs", {}))
        components["BatchIn"] = batch
        app.openapi_schema = schema
    return app.openapi_schema


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve_http(
    context: ServerContext,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the REST API on ``host:port`` until cancelled; reports the bound port.

    Hypercorn runs shielded so that cancelling this listener shuts it down
    gracefully: it stops accepting, streams and long-polls end (the app's
    ``closing`` event), and requests in flight get
    :data:`GRACEFUL_SHUTDOWN_SECONDS` to finish.
    """
    config = context.config
    http_options = config.http_options
    app = create_app(
        context,
        ws_port=config.ws_port,
        max_body_bytes=http_options.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES),
        metrics_cursor_labels=http_options.get("metrics_cursor_labels", False),
    )
    hc = hypercorn.config.Config()
    hc.bind = [_bind(host, port)]
    hc.graceful_timeout = GRACEFUL_SHUTDOWN_SECONDS
    hc.accesslog = logging.getLogger("tidelog.access") if http_options.get("access_log") else None
    hc.access_log_format = (
        '%(h)s "%(r)s" %(s)s %(b)s %(L)ss'  # remote, request, status, bytes, time
    )
    hc.errorlog = logging.getLogger("tidelog.api.http")
    hc.keep_alive_timeout = KEEP_ALIVE_SECONDS
    hc.read_timeout = READ_TIMEOUT_SECONDS  # type: ignore[assignment]
    if config.security.http_tls:  # HTTPS (tidelog/security/tls.py)
        assert config.tls_cert is not None and config.tls_key is not None  # check_startup
        ssl_context = server_context(
            config.tls_cert, config.tls_key, config.security, record_peer=True
        )
        hc.certfile, hc.keyfile = config.tls_cert, config.tls_key  # marks the bind secure
        hc.create_ssl_context = lambda: ssl_context  # type: ignore[method-assign]
    shutdown = trio.Event()
    shielded = trio.CancelScope(shield=True)

    async def run(task_status: trio.TaskStatus[list[str]]) -> None:
        with shielded:
            await hypercorn.trio.serve(
                app,  # type: ignore[arg-type]
                hc,
                shutdown_trigger=shutdown.wait,
                task_status=task_status,
            )

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(run)
        bound = int(binds[0].rsplit(":", 1)[1])
        task_status.started(bound)
        try:
            await trio.sleep_forever()
        finally:
            app.state.closing.set()
            shutdown.set()
            # the shield ignores our cancellation; this bounds the graceful part
            shielded.deadline = trio.current_time() + GRACEFUL_SHUTDOWN_SECONDS + 3
