"""What every route answers with: the API's JSON response and the error entries of
its OpenAPI operations."""

from __future__ import annotations

from typing import Any

from fastapi.responses import Response

from tidelog.api.shapes import Problem, dumps

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {"application/problem+json": {}}} for status in (400, 422)
}
"""The problem responses every route can give (a bad parameter, a bad body)."""


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """An operation's ``responses``: :data:`ERRORS` and these statuses, each a
    problem detail (RFC 9457)."""
    out = dict(ERRORS)
    for status in statuses:
        out[status] = {"model": Problem, "content": {"application/problem+json": {}}}
    return out


class JSONResponse(Response):
    """JSON with the API's own compact serializer (no response-model validation)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)
