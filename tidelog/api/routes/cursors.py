"""Durable cursors: create, list, show, fetch (through :mod:`.reading`), commit and
delete, each in its owner's namespace (``admin_users`` may name another owner)."""

from __future__ import annotations

import functools
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from tidelog.api.routes.params import (
    AccessDep,
    BrokerDep,
    CursorName,
    EncodingQuery,
    LimitQuery,
    MaxBytesQuery,
    OwnerQuery,
    SecurityDep,
    WaitQuery,
    checked_filter,
)
from tidelog.api.routes.reading import read_page
from tidelog.api.routes.responses import JSONResponse, errors
from tidelog.api.shapes import (
    DEFAULT_READ_BYTES,
    DEFAULT_READ_LIMIT,
    CommitIn,
    CursorIn,
    CursorOut,
    CursorPage,
    CursorsOut,
    OffsetsIn,
    SettledOut,
)
from tidelog.engine import Cursor, parse_position
from tidelog.engine.consumers import ConsumerOptions
from tidelog.errors import CursorNotFoundError
from tidelog.security import Access, Grant, Name, Quota, Right
from tidelog.security.http import EventFilter

router = APIRouter()
MemberQuery = Annotated[
    str | None,
    Query(
        max_length=200,
        description="explicit: the member the events are leased to (default: rest:<user>)",
    ),
]


async def cursor_out(cursor: Cursor) -> dict[str, Any]:
    """A cursor's JSON: position, lag and pending, its consumer options and (explicit
    cursors) its leases, redeliveries and dead letters."""
    pending = await cursor.pending()  # loads an explicit cursor's group: position after
    out = {
        "name": cursor.name,
        "owner": cursor.owner,
        "filter": cursor.topic_filter,
        "position": cursor.position,
        "lag": cursor.lag,
        "pending": pending,
        "ack_policy": cursor.options.ack_policy,
    }
    stats = await cursor.statistics()
    if stats is not None:  # explicit: the group's options and counters
        out.update(cursor.options.to_dict())
        out["dead_letter_topic"] = cursor.options.dead_letters_to(cursor.name)
        out.update(
            leased=stats.leased, redelivered=stats.redelivered, dead_lettered=stats.dead_lettered
        )
    return out


@router.put(
    "/v1/cursors/{name}",
    response_model=CursorOut,
    responses={201: {"model": CursorOut, "description": "created"}, **errors(409, 429)},
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
    position untouched; consumer options given replace its options); 409 when it exists
    with another filter. Consumer options (``ack_policy``, ``ack_wait``, ``backoff``,
    ``max_deliver``, ``dead_letter_topic``, ``max_leased``, ``max_leased_per_member``) are
    in docs/consumers.md.
    The cursor belongs to the caller (each user has their own cursor names); 429 past
    ``security.max_cursors_per_user``."""
    security.limits.check_name(Name.CURSOR, name)
    owner = _owner(access, owner)
    # every check comes before any state is created
    EventFilter(access, Right.READ, checked_filter(security, spec.filter))  # 403 unless readable
    start = parse_position(spec.start)
    given = spec.consumer_options()
    options = None if given is None else ConsumerOptions.from_dict(given)
    try:
        await broker.cursor(name, owner=owner)
        existed = True
    except CursorNotFoundError:
        existed = False
        security.quotas.check(Quota.CURSORS, owner, len(await broker.cursors(owner=owner)))
    cursor = await broker.create_cursor(
        name, spec.filter, start=start, owner=owner, options=options
    )
    return JSONResponse(await cursor_out(cursor), status_code=200 if existed else 201)


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
    return JSONResponse({"cursors": [await cursor_out(c) for c in cursors]})


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
    responses=errors(404),
    tags=["cursors"],
    summary="Show a cursor: filter, position, lag",
)
async def get_cursor(cursor: OwnedCursor) -> JSONResponse:
    return JSONResponse(await cursor_out(cursor))


@router.post(
    "/v1/cursors/{name}/fetch",
    response_model=CursorPage,
    responses=errors(403, 404),
    tags=["cursors"],
    summary="The next events at the cursor (leased to the caller under explicit acks)",
)
async def fetch_cursor(
    request: Request,
    access: AccessDep,
    cursor: OwnedCursor,
    limit: LimitQuery = DEFAULT_READ_LIMIT,
    max_bytes: MaxBytesQuery = DEFAULT_READ_BYTES,
    wait_ms: WaitQuery = 0,
    encoding: EncodingQuery = "base64",
    member: MemberQuery = None,
) -> Response:
    """``cumulative``: commit ``next_offset`` once the events are processed.
    ``explicit``: the events are leased to ``member`` (default: the caller's user
    name); settle each with ``/ack``, ``/nak`` or ``/progress``. ``none``: the cursor
    has moved past them. ``skipped`` counts the offsets retention removed before the
    cursor reached them. The caller needs the read right on the cursor's filter (403)."""
    visible = EventFilter(access, Right.READ, cursor.topic_filter)
    return await read_page(
        request,
        functools.partial(
            cursor.fetch,
            limit,
            wait_ms / 1000,
            max_bytes=max_bytes,
            member=member or f"rest:{access.owner}",
        ),
        cursor.position,
        visible,
        encoding,
        lambda: {"skipped": cursor.skipped},
    )


@router.post(
    "/v1/cursors/{name}/commit",
    response_model=CursorOut,
    responses=errors(404),
    tags=["cursors"],
    summary="Move the cursor to an offset (the next event to process); durable on return",
)
async def commit_cursor(cursor: OwnedCursor, commit: CommitIn) -> JSONResponse:
    await cursor.commit(commit.offset)
    return JSONResponse(await cursor_out(cursor))


@router.post(
    "/v1/cursors/{name}/ack",
    response_model=SettledOut,
    responses=errors(404, 409),
    tags=["cursors"],
    summary="Acknowledge events of an explicit cursor; durable on return",
)
async def ack_cursor(cursor: OwnedCursor, body: OffsetsIn) -> JSONResponse:
    """Acknowledged events are never delivered again; the position moves up over
    them. 409 ``ack_policy`` unless the cursor's policy is ``explicit``."""
    settled = await cursor.ack(body.offsets)
    return await _settled(cursor, settled)


@router.post(
    "/v1/cursors/{name}/nak",
    response_model=SettledOut,
    responses=errors(404, 409),
    tags=["cursors"],
    summary="Give events back for redelivery (after delay seconds, default the backoff)",
)
async def nak_cursor(cursor: OwnedCursor, body: OffsetsIn) -> JSONResponse:
    settled = await cursor.nak(body.offsets, body.delay)
    return await _settled(cursor, settled)


@router.post(
    "/v1/cursors/{name}/progress",
    response_model=SettledOut,
    responses=errors(404, 409),
    tags=["cursors"],
    summary="Still working on these events: extend their leases by ack_wait",
)
async def progress_cursor(cursor: OwnedCursor, body: OffsetsIn) -> JSONResponse:
    settled = await cursor.progress(body.offsets)
    return await _settled(cursor, settled)


async def _settled(cursor: Cursor, settled: int) -> JSONResponse:
    pending = await cursor.pending()
    return JSONResponse({"settled": settled, "position": cursor.position, "pending": pending})


@router.delete(
    "/v1/cursors/{name}",
    status_code=204,
    responses=errors(404),
    response_class=Response,
    tags=["cursors"],
    summary="Delete a cursor",
)
async def delete_cursor(broker: BrokerDep, cursor: OwnedCursor) -> Response:
    if not await broker.delete_cursor(cursor.name, owner=cursor.owner):
        raise CursorNotFoundError(f"no cursor named {cursor.name!r}")
    return Response(status_code=204)
