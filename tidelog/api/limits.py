"""Request body limits: an ASGI middleware answering 413 before a large body is read,
and 408 when a body does not arrive in time.

A declared ``Content-Length`` over the limit is refused without reading the
body; a chunked body is counted as it arrives and refused as soon as it
passes the limit, so the server never holds more than the limit per request.
A body must arrive whole within :data:`BODY_TIMEOUT_SECONDS` of the request's
headers (slow-body "slowloris" senders; gaps between reads are bounded by the
server's read timeout, the headers by its keep-alive timeout).
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import trio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidelog.api.settings import DEFAULT_MAX_BODY_BYTES as DEFAULT_MAX_BODY_BYTES
from tidelog.api.shapes import dumps

BODY_TIMEOUT_SECONDS = 60.0
"""A request body must arrive whole within this long after the headers (else 408)."""


class BodyTooLarge(Exception):
    pass


class BodyTimeout(Exception):
    pass


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0:
                    await _refuse(send, 400, "bad_request", "invalid Content-Length")
                    return
                if declared > self.max_bytes:
                    await _refuse_too_large(send, self.max_bytes)
                    return
        received = 0
        started = False
        body_done = False
        deadline = trio.current_time() + BODY_TIMEOUT_SECONDS

        async def counting_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # e.g. a streaming response waiting for http.disconnect
                return await receive()
            with trio.move_on_at(deadline):
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.max_bytes:
                        raise BodyTooLarge
                    body_done = not message.get("more_body", False)
                else:
                    body_done = True
                return message
            raise BodyTimeout

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await _refuse_too_large(send, self.max_bytes)
        except BodyTimeout:
            if started:
                raise
            await _refuse(
                send,
                408,
                "request_timeout",
                f"the request body did not arrive within {BODY_TIMEOUT_SECONDS:g} s",
                title="Request Timeout",
            )


class Utf8PathMiddleware:
    """Refuse (400) a request whose path does not percent-decode to valid UTF-8.

    ASGI servers decode the path with replacement characters, so without this
    ``POST /v1/topics/a%FF`` would publish to a topic the client never named.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_path = scope.get("raw_path") if scope["type"] == "http" else None
        if raw_path is not None:
            try:
                urllib.parse.unquote_to_bytes(raw_path).decode("utf-8")
            except UnicodeDecodeError:
                await _refuse(
                    send, 400, "invalid_path", "the request path is not valid UTF-8 once decoded"
                )
                return
        await self.app(scope, receive, send)


async def _refuse_too_large(send: Send, max_bytes: int) -> None:
    await _refuse(
        send,
        413,
        "payload_too_large",
        f"the request body is larger than {max_bytes} bytes",
        title="Content Too Large",
    )


async def _refuse(send: Send, status: int, code: str, detail: str, title: str = "") -> None:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or "Bad Request",
        "status": status,
        "detail": detail,
        "code": code,
    }
    raw = dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(raw)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": raw})
