"""Webhooks: create or replace, list, show (with delivery status), delete.

Creating a webhook needs ``security.admin_users`` (CONTRACTS, "Rights and
secrets"): a webhook pushes events to any URL. A webhook belongs to its creator
(``?owner=`` lets an admin name another user) and delivers only what that user
may read; the ``secret`` is write-only. Everyone else gets 404 for it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi import Path as PathParam
from fastapi.responses import Response

from tidelog.api.routes.params import AccessDep, OwnerQuery, SecurityDep
from tidelog.api.routes.responses import JSONResponse, errors
from tidelog.errors import LogClosedError
from tidelog.security import Access, Name, NotAuthorizedError, Right
from tidelog.security.http import EventFilter
from tidelog.webhooks import WebhookService, WebhookSpec
from tidelog.webhooks.delivery import WebhookStatus
from tidelog.webhooks.service import WebhookNotFoundError

router = APIRouter()

WebhookName = Annotated[
    str, PathParam(min_length=1, max_length=200, description="1 to 200 of A-Z a-z 0-9 _ . -")
]


def _service(request: Request) -> WebhookService:
    service: WebhookService | None = request.app.state.context.webhooks
    if service is None:
        raise LogClosedError("webhooks are not running on this server")
    return service


def _owner(access: Access, owner: str | None) -> str:
    if owner is None or owner == access.owner:
        return access.owner
    if not access.admin:
        raise WebhookNotFoundError("no such webhook")
    return owner


async def _out(service: WebhookService, spec: WebhookSpec, status: WebhookStatus) -> dict[str, Any]:
    return {**spec.public(), "status": {**status.to_dict(), "lag": await service.lag(spec)}}


@router.put(
    "/v1/webhooks/{name}",
    responses={201: {"description": "created"}, **errors(403)},
    tags=["webhooks"],
    summary="Create or replace a webhook (security.admin_users only)",
)
async def put_webhook(
    request: Request,
    access: AccessDep,
    security: SecurityDep,
    name: WebhookName,
    body: Annotated[dict[str, Any], Body(description="url, filter, start, secret, batch, ...")],
    owner: OwnerQuery = None,
) -> JSONResponse:
    """Keys: ``url``, ``filter``, ``start``, ``secret`` (``whsec_...``, never shown),
    ``batch``, ``headers``, ``timeout``, ``concurrency``, ``retries``,
    ``retry_backoff`` (docs/consumers.md). 201 when created, 200 when replaced."""
    if not access.admin:
        raise NotAuthorizedError("creating webhooks needs security.admin_users")
    service = _service(request)
    spec = WebhookSpec.from_dict(name, _owner(access, owner), body)
    if spec.filter is not None:
        security.limits.check_name(Name.FILTER, spec.filter)
    EventFilter(access, Right.READ, spec.filter)  # 403 unless the creator may read it
    created = await service.put(spec)
    spec, status = service.get(spec.owner, name)
    return JSONResponse(await _out(service, spec, status), status_code=201 if created else 200)


@router.get("/v1/webhooks", tags=["webhooks"], summary="List the webhooks")
async def list_webhooks(request: Request, access: AccessDep) -> JSONResponse:
    """The caller's webhooks; every webhook for ``admin_users``."""
    service = _service(request)
    found = service.list(None if access.admin else access.owner)
    return JSONResponse({"webhooks": [await _out(service, s, st) for s, st in found]})


@router.get(
    "/v1/webhooks/{name}",
    responses=errors(404),
    tags=["webhooks"],
    summary="Show a webhook and its delivery status (last success, last error, attempts, lag)",
)
async def get_webhook(
    request: Request, access: AccessDep, name: WebhookName, owner: OwnerQuery = None
) -> JSONResponse:
    service = _service(request)
    spec, status = service.get(_owner(access, owner), name)
    return JSONResponse(await _out(service, spec, status))


@router.delete(
    "/v1/webhooks/{name}",
    status_code=204,
    responses=errors(404),
    response_class=Response,
    tags=["webhooks"],
    summary="Delete a webhook (and its cursor)",
)
async def delete_webhook(
    request: Request, access: AccessDep, name: WebhookName, owner: OwnerQuery = None
) -> Response:
    await _service(request).delete(_owner(access, owner), name)
    return Response(status_code=204)
