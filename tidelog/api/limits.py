"""Request body limit: an ASGI middleware answering 413 before a large body is read.

A declared ``Content-Length`` over the limit is refused without reading the
body; a chunked body is counted as it arrives and refused as soon as it
passes the limit, so the server never holds more than the limit per request.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidelog.api.shapes import dumps

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024 + 64 * 1024
"""A maximum-size record (16 MiB) plus room for headers of a JSON wrapper."""


class BodyTooLarge(Exception):
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

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

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
