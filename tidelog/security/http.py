"""HTTP side of security: the ASGI middleware of the REST app, and event filtering.

:class:`AuthMiddleware` runs before every route except ``/healthz`` and the console's
files (:func:`_public`): it takes a connection slot (503 past ``max_connections`` /
``max_connections_per_address``,
counting requests in progress, long-polls and SSE streams included),
authenticates the request (HTTP Basic, ``Authorization: Bearer``, a verified
client certificate, or anonymous; 401 with ``WWW-Authenticate`` or 429 with
``Retry-After``) and leaves the client's :class:`~tidelog.security.acl.Access`
in ``request.state.access`` for the routes' ACL checks. SSE streams also take a
bearer token as ``?access_token=`` (:func:`stream_access_token`). ``X-Tidelog-Client-Id``
names the client id ``%c`` stands for.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Sequence
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from tidelog.security.acl import Access, Grant, Right
from tidelog.security.auth import Security, common_name
from tidelog.security.errors import AuthenticationError, LimitExceededError, TooManyAttemptsError
from tidelog.security.limits import Name, NameTooLongError
from tidelog.security.tls import peer_certificate
from tidelog.storage import Event

PUBLIC_PATHS = frozenset({"/healthz"})
PUBLIC_PREFIXES = ("/console/",)
"""The console's scripts and styles: the login form must load before credentials."""
CLIENT_ID_HEADER = "x-tidelog-client-id"


def _public(scope: Scope) -> bool:
    """Paths served without authentication: ``/healthz``, the console's files, and
    ``/`` asked for as HTML (the console's page, which then logs in)."""
    path = scope["path"]
    if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
        return True
    if path == "/" and scope["method"] in ("GET", "HEAD"):
        accept = _header(scope["headers"], b"accept") or ""
        return "text/html" in accept
    return False


SCRIPT_HEADER = b"x-requested-with"


def _challenge(scope: Scope, exc: AuthenticationError) -> dict[str, str]:
    """The 401's headers. A request a script marks with ``X-Requested-With`` (the
    console does) is challenged with ``Bearer`` only: a ``Basic`` challenge makes
    browsers open their own login prompt over the page's own login form."""
    if _header(scope["headers"], SCRIPT_HEADER) is None:
        return exc.headers
    return {**exc.headers, "WWW-Authenticate": 'Bearer realm="tidelog"'}


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _problem_json(problem: dict[str, Any]) -> bytes:
    """A refusal's problem+json body (security stays below the API layer: it does not
    use the API's serializer)."""
    return json.dumps(problem, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class AuthMiddleware:
    def __init__(self, app: ASGIApp, security: Security) -> None:
        self.app = app
        self.security = security

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _public(scope):
            await self.app(scope, receive, send)
            return
        security = self.security
        client = scope.get("client") or ("?", 0)
        address = str(client[0])
        refusal = security.connections.acquire(address)
        if refusal is not None:
            await _refuse(send, 503, "limit_exceeded", refusal, LimitExceededError(refusal).headers)
            return
        try:
            try:
                access = await authenticate_request(
                    security,
                    scope["headers"],
                    f"{address}:{client[1]}",
                    "http",
                    access_token=stream_access_token(scope),
                )
            except AuthenticationError as exc:
                await _refuse(send, 401, "unauthorized", str(exc), _challenge(scope, exc))
                return
            except TooManyAttemptsError as exc:
                await _refuse(send, 429, "too_many_attempts", str(exc), exc.headers)
                return
            except NameTooLongError as exc:
                await _refuse(send, 400, "name_too_long", str(exc), {})
                return
            scope.setdefault("state", {})["access"] = access
            await self.app(scope, receive, send)
        finally:
            security.connections.release(address)


def stream_access_token(scope: Scope) -> str | None:
    """``?access_token=`` of an SSE request (a path ending in ``/stream``): a browser's
    ``EventSource`` cannot set ``Authorization``. Other requests use the header only,
    so tokens stay out of URLs (and access logs) wherever a header can be sent."""
    if not scope["path"].endswith("/stream"):
        return None
    query = scope.get("query_string", b"").decode("latin-1")
    tokens = urllib.parse.parse_qs(query).get("access_token")
    return tokens[0] if tokens else None


async def authenticate_request(
    security: Security,
    headers: Sequence[tuple[bytes, bytes]],
    peer: str,
    transport: str,
    *,
    access_token: str | None = None,
    certificate_user: str | None = None,
) -> Access:
    """Authenticate an HTTP request or WebSocket handshake into the client's Access;
    :class:`NameTooLongError` for a client id header past ``max_client_id_bytes``."""
    client_id = _header(headers, CLIENT_ID_HEADER.encode())
    if client_id is not None:
        security.limits.check_name(Name.CLIENT_ID, client_id)
    if certificate_user is None and security.config.tls_cert_username:
        certificate_user = common_name(peer_certificate.get())
    principal = await security.authenticate_http(
        _header(headers, b"authorization"),
        peer,
        transport,
        access_token=access_token,
        certificate_user=certificate_user,
        client_id=client_id,
    )
    return security.access(principal)


async def _refuse(send: Send, status: int, code: str, detail: str, headers: dict[str, str]) -> None:
    titles = {400: "Bad Request", 401: "Unauthorized", 429: "Too Many Requests",
              503: "Service Unavailable"}  # fmt: skip
    body = _problem_json(
        {"type": "about:blank", "title": titles[status], "status": status, "detail": detail,
         "code": code}
    )  # fmt: skip
    raw_headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in headers.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


class EventFilter:
    """Checks a read or subscription and then drops events the client may not see.

    ``rights`` must all allow a topic. A filter granted in full needs no per-event
    check, except ``None`` (every topic), whose ``$``-topics are checked one by one.
    """

    def __init__(self, access: Access, rights: Right, topic_filter: str | None) -> None:
        self.access = access
        self.rights = [right for right in Right if right in rights]
        grants = [access.check_filter(right, topic_filter or "#") for right in self.rights]
        self.per_topic = Grant.PER_TOPIC in grants
        self.dollar_topics = topic_filter is None and not self.per_topic
        """Every topic but ``$``-topics (which ``#`` does not match) is granted in full."""

    def allows(self, topic: str) -> bool:
        return all(self.access.allows(right, topic) for right in self.rights)

    def keep(self, events: list[Event]) -> list[Event]:
        if self.per_topic:
            return [event for event in events if self.allows(event.topic)]
        if self.dollar_topics:
            allows = self.allows
            return [e for e in events if not e.topic.startswith("$") or allows(e.topic)]
        return events


# -- WebSocket handshakes ------------------------------------------------------------


def websocket_peer(request: Any) -> str:
    remote = request.remote
    return remote if isinstance(remote, str) else f"{remote.address}:{remote.port}"


def websocket_certificate_user(security: Security, request: Any) -> str | None:
    """The client certificate's CN on a WSS handshake (``tls_cert_username``)."""
    connection = getattr(request, "_connection", None)  # trio_websocket keeps the stream
    return security.certificate_user(getattr(connection, "_stream", None))


def websocket_access_token(path: str) -> str | None:
    """``?access_token=`` of a WebSocket URL (browsers cannot set Authorization)."""
    query = urllib.parse.urlsplit(path).query
    tokens = urllib.parse.parse_qs(query).get("access_token")
    return tokens[0] if tokens else None


async def reject_websocket(request: Any, status: int, code: str, exc: Exception) -> None:
    headers = getattr(exc, "headers", {}) or {}
    titles = {401: "Unauthorized", 429: "Too Many Requests", 503: "Service Unavailable"}
    body = _problem_json(
        {"title": titles.get(status, "Error"), "status": status, "detail": str(exc), "code": code}
    )
    await request.reject(
        status,
        extra_headers=[
            (b"content-type", b"application/problem+json"),
            *((k.lower().encode(), v.encode()) for k, v in headers.items()),
        ],
        body=body,
    )


async def authenticate_websocket(security: Security, request: Any, transport: str) -> Access | None:
    """Authenticate a WebSocket handshake; None after rejecting it (401 / 429)."""
    try:
        return await authenticate_request(
            security,
            request.headers,
            websocket_peer(request),
            transport,
            access_token=websocket_access_token(request.path),
            certificate_user=websocket_certificate_user(security, request),
        )
    except AuthenticationError as exc:
        await reject_websocket(request, 401, "unauthorized", exc)
    except TooManyAttemptsError as exc:
        await reject_websocket(request, 429, "too_many_attempts", exc)
    except NameTooLongError as exc:
        await reject_websocket(request, 400, "name_too_long", exc)
    return None
