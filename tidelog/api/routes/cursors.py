"""Durable cursors: create, list, show, fetch (through :mod:`.reading`), commit and
delete, each in its owner's namespace (``admin_users`` may name another owner)."""

from __future__ import annotations

import functools
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
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
)
from tidelog.engine import Cursor, parse_position
from tidelog.errors import CursorNotFoundError
from tidelog.security import Access, Grant, Name, Quota, Right
from tidelog.security.http import EventFilter

router = APIRouter()


async def _cursor_out(cursor: Cursor) -> dict[str, Any]:
    return {
        "name": cursor.name,
        "owner": cursor.owner,
        "filter": cursor.topic_filter,
        "position": cursor.position,
        "lag": cursor.lag,
        "pending": await cursor.pending(),
    }


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
    position untouched); 409 when it exists with another filter. The cursor belongs
    to the caller (each user has their own cursor names); 429 past
    ``security.max_cursors_per_user``."""
    security.limits.check_name(Name.CURSOR, name)
    owner = _owner(access, owner)
    # every check comes before any state is created
    EventFilter(access, Right.READ, checked_filter(security, spec.filter))  # 403 unless readable
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
    responses=errors(404),
    tags=["cursors"],
    summary="Show a cursor: filter, position, lag",
)
async def get_cursor(cursor: OwnedCursor) -> JSONResponse:
    return JSONResponse(await _cursor_out(cursor))


@router.post(
    "/v1/cursors/{name}/fetch",
    response_model=CursorPage,
    responses=errors(403, 404),
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
    return await read_page(
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
    responses=errors(404),
    tags=["cursors"],
    summary="Move the cursor to an offset (the next event to process); durable on return",
)
async def commit_cursor(cursor: OwnedCursor, commit: CommitIn) -> JSONResponse:
    await cursor.commit(commit.offset)
    return JSONResponse(await _cursor_out(cursor))


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
