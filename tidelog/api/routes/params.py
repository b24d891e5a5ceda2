"""What routes are given: the server's parts (dependencies) and the query
parameters several resources share, each with its bounds and its documentation."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi import Path as PathParam

from tidelog.api.problems import ApiError
from tidelog.api.shapes import MAX_READ_BYTES, MAX_READ_LIMIT, MAX_WAIT_MS, Encoding
from tidelog.engine import Broker
from tidelog.security import Access, Name, Principal, Security
from tidelog.topics import validate_topic_filter


def get_broker(request: Request) -> Broker:
    """The server's broker (from its context)."""
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
OwnerQuery = Annotated[
    str | None,
    Query(
        description="admin_users: the user whose cursor this is (default: the caller)",
        max_length=65535,
    ),
]
CursorName = Annotated[
    str,
    PathParam(min_length=1, max_length=65535, description="at most security.max_cursor_name_bytes"),
]


def checked_filter(security: Security, value: str | None) -> str | None:
    """A filter from a request: within its maximum (400) and valid (400)."""
    if value is None:
        return None
    security.limits.check_name(Name.FILTER, value)
    return validate_topic_filter(value)


def one_of(first: Any, second: Any, names: str) -> None:
    """400 when a request gives both of two parameters that exclude each other."""
    if first is not None and second is not None:
        raise ApiError(400, "invalid_parameters", f"give {names}, not both")
