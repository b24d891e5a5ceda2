"""``/v1/clients``: the MQTT clients connected now and the sessions stored for later,
and the administrators' disconnect.

Everyone sees their own user's clients and sessions; ``security.admin_users``
see every user's and may disconnect any client (CONTRACTS, "Rights and
secrets"). Shapes in ``docs/rest.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import Response

from tidelog.api.problems import ApiError
from tidelog.api.routes.responses import JSONResponse
from tidelog.security import Access, Name

if TYPE_CHECKING:
    from tidelog.context import ServerContext

router = APIRouter()


def _session_out(session: Any) -> dict[str, Any]:
    return {
        "client_id": session.client_id,
        "owner": session.owner,
        "expiry_interval": session.expiry_interval,
        "disconnected_at": session.disconnected_at,
        "expires_at": session.expires_at(),
        "position": session.position,
        "subscriptions": sorted(session.subscriptions),
    }


@router.get("/v1/clients", tags=["clients"], summary="Connected MQTT clients and stored sessions")
async def list_clients(request: Request) -> Response:
    """``clients``: the connected MQTT clients; ``sessions``: persistent sessions whose
    client is away; ``connections``: open connections by protocol (every user's).
    The caller's own (every user's for ``admin_users``)."""
    context: ServerContext = request.app.state.context
    access: Access = request.state.access
    owner = None if access.admin else access.owner
    sessions = [
        _session_out(session)
        for session in context.broker.sessions.all()
        if session.disconnected_at is not None and (owner is None or session.owner == owner)
    ]
    sessions.sort(key=lambda s: s["client_id"])
    body = {
        "clients": context.mqtt.clients(owner),
        "sessions": sessions,
        "connections": {p: n for p, n in context.traffic.connections.items() if n},
        "may_disconnect": access.admin,
    }
    return JSONResponse(body)


@router.delete(
    "/v1/clients/{client_id}",
    status_code=204,
    response_class=Response,
    tags=["clients"],
    summary="Disconnect an MQTT client (admin_users only)",
)
async def disconnect_client(
    request: Request,
    client_id: Annotated[str, PathParam(min_length=1, max_length=65535)],
) -> Response:
    """204 once the client is disconnected (MQTT 5 clients get DISCONNECT 0x98) and its
    session saved; 403 unless the caller is in ``security.admin_users``; 404 if no
    client with that id is connected."""
    context: ServerContext = request.app.state.context
    access: Access = request.state.access
    if not access.admin:
        raise ApiError(403, "forbidden", "disconnecting clients needs security.admin_users")
    context.security.limits.check_name(Name.CLIENT_ID, client_id)
    if not await context.mqtt.disconnect(client_id):
        raise ApiError(404, "client_not_found", f"no connected client {client_id!r}")
    return Response(status_code=204)
