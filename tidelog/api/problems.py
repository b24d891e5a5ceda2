"""Errors as RFC 9457 problem details, one table for REST and the WebSocket protocol.

Every error tidelog raises on purpose maps to an HTTP status and a stable
``code`` (:func:`classify`). REST answers ``application/problem+json``::

    {"type": "about:blank", "title": "Bad Request", "status": 400,
     "detail": "topic filter 'a/#/b': '#' must be the whole last level",
     "code": "invalid_topic"}

and the WebSocket protocol sends the same ``code`` and ``status`` in an error
frame. Bad input never becomes a 500: request validation is a 422, tidelog's
own errors have their status below, and only a genuine server fault (a
corrupt log, a bug) is a 5xx.
"""

from __future__ import annotations

import http
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from tidelog.api.shapes import PayloadError, dumps
from tidelog.errors import (
    AckPolicyError,
    CursorExistsError,
    CursorNotFoundError,
    InvalidConsumerOptionsError,
    InvalidCursorNameError,
    InvalidPositionError,
    InvalidTopicError,
    LinkConflictError,
    LinkError,
    LinkNotFoundError,
    LogClosedError,
    OffsetOutOfRangeError,
    RecordTooLargeError,
    StorageFullError,
    StorageUnavailableError,
    TidelogError,
)
from tidelog.security.errors import (
    AuthenticationError,
    LimitExceededError,
    NotAuthorizedError,
    TooManyAttemptsError,
)
from tidelog.security.limits import NameTooLongError, QuotaExceededError
from tidelog.webhooks.service import WebhookNotFoundError
from tidelog.webhooks.spec import WebhookError

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

_TABLE: list[tuple[type[BaseException], int, str]] = [
    (AuthenticationError, 401, "unauthorized"),
    (NotAuthorizedError, 403, "forbidden"),
    (TooManyAttemptsError, 429, "too_many_attempts"),
    (LimitExceededError, 503, "limit_exceeded"),
    (QuotaExceededError, 429, "quota_exceeded"),
    (NameTooLongError, 400, "name_too_long"),
    (InvalidCursorNameError, 400, "invalid_cursor_name"),
    (InvalidConsumerOptionsError, 400, "invalid_consumer_options"),
    (AckPolicyError, 409, "ack_policy"),
    (InvalidTopicError, 400, "invalid_topic"),
    (OffsetOutOfRangeError, 400, "offset_out_of_range"),  # an InvalidPositionError too
    (InvalidPositionError, 400, "invalid_position"),
    (CursorNotFoundError, 404, "cursor_not_found"),
    (WebhookNotFoundError, 404, "webhook_not_found"),  # before WebhookError
    (WebhookError, 400, "invalid_webhook"),
    (CursorExistsError, 409, "cursor_conflict"),
    (LinkNotFoundError, 404, "link_not_found"),  # before LinkError
    (LinkConflictError, 409, "link_conflict"),
    (LinkError, 400, "invalid_link"),
    (RecordTooLargeError, 413, "payload_too_large"),
    (PayloadError, 422, "invalid_payload"),
    (LogClosedError, 503, "shutting_down"),
    (StorageFullError, 507, "storage_full"),
    (StorageUnavailableError, 503, "storage_unavailable"),
]


class ApiError(Exception):
    """An error a handler raises with its status and code (e.g. conflicting parameters)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def classify(exc: BaseException) -> tuple[int, str] | None:
    """``(status, code)`` for an error the APIs report to the client, or None."""
    if isinstance(exc, ApiError):
        return exc.status, exc.code
    for cls, status, code in _TABLE:
        if isinstance(exc, cls):
            return status, code
    return None


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    """A problem+json response."""
    try:
        title = http.HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return Response(dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers)


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def install(app: FastAPI) -> None:
    """Install the exception handlers that turn errors into problem details."""

    async def on_tidelog_error(request: Request, exc: Exception) -> Response:
        found = classify(exc)
        if found is None:
            log.error("unexpected %s on %s %s", type(exc).__name__, request.method, request.url)
            return problem(500, "internal_error", "the server failed to handle the request")
        status, code = found
        return problem(status, code, str(exc), headers=getattr(exc, "headers", None))

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error["type"]}
            for error in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"])
        return problem(422, "validation_failed", f"{where}: {first['msg']}", errors=errors)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return problem(exc.status_code, code, str(exc.detail), headers=exc.headers)

    app.add_exception_handler(TidelogError, on_tidelog_error)
    app.add_exception_handler(ApiError, on_tidelog_error)
    app.add_exception_handler(PayloadError, on_tidelog_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
