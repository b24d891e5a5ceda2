"""The WebSocket listener (default port 8083), shared by two protocols by path:

* ``/mqtt`` — MQTT over WebSocket (subprotocol ``mqtt``), served by the MQTT
  connection handler;
* ``/v1/ws`` — tidelog's native JSON protocol.

:data:`ROUTES` maps a path to its handler ``handle(context, request)``, given the
server's :class:`~tidelog.context.ServerContext` and a
:class:`trio_websocket.WebSocketRequest` it accepts (choosing the subprotocol)
or rejects itself. Unknown paths get an HTTP 404 with a JSON body.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio
import trio_websocket

from tidelog.api import websocket as native
from tidelog.protocols.mqtt import server as mqtt
from tidelog.security.tls import server_context

if TYPE_CHECKING:
    from tidelog.context import ServerContext

log = logging.getLogger(__name__)

WebSocketHandler = Callable[["ServerContext", trio_websocket.WebSocketRequest], Awaitable[None]]

ROUTES: dict[str, WebSocketHandler] = {
    "/mqtt": mqtt.handle_websocket,
    "/v1/ws": native.handle,
}
"""Path -> its handler."""

CLOSE_GRACE_SECONDS = 3.0
"""At shutdown, how long connections have to close before the listener stops."""
MAX_MESSAGE_BYTES = 16 * 1024 * 1024 + 1024
"""Largest WebSocket message accepted (a maximum-size MQTT packet fits)."""
HANDSHAKE_TIMEOUT_SECONDS = 10.0
"""The opening handshake must complete within this long (slow senders are cut off);
after it, MQTT's connect timeout applies on ``/mqtt``."""


async def serve_websocket(
    context: ServerContext,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve WebSocket connections on ``host:port`` until cancelled.

    Shutdown is in two steps, so that connections can say goodbye: cancelling
    this listener first cancels the handlers only (the native protocol closes
    with 1001 Going Away, MQTT over WebSocket sends its DISCONNECT 0x8B) while
    trio-websocket still runs the connections, for at most
    :data:`CLOSE_GRACE_SECONDS`; then the server itself stops.
    """
    handlers: set[trio.CancelScope] = set()

    async def route(request: trio_websocket.WebSocketRequest) -> None:
        with trio.CancelScope() as scope:
            handlers.add(scope)
            try:
                handler = ROUTES.get(request.path.split("?", 1)[0])
                if handler is None:
                    body = json.dumps(
                        {
                            "title": "Not Found",
                            "status": 404,
                            "detail": f"no WebSocket at {request.path}",
                        }
                    ).encode()
                    await request.reject(
                        404, extra_headers=[(b"content-type", b"application/json")], body=body
                    )
                    return
                await handler(context, request)
            finally:
                handlers.discard(scope)

    config = context.config
    ssl_context = None
    if config.security.ws_tls:  # WSS (tidelog/security/tls.py)
        assert config.tls_cert is not None and config.tls_key is not None  # check_startup
        ssl_context = server_context(config.tls_cert, config.tls_key, config.security)
    shielded = trio.CancelScope(shield=True)

    async def run(task_status: trio.TaskStatus[trio_websocket.WebSocketServer]) -> None:
        with shielded:
            await trio_websocket.serve_websocket(
                route,
                host,
                port,
                ssl_context,
                max_message_size=MAX_MESSAGE_BYTES,
                connect_timeout=HANDSHAKE_TIMEOUT_SECONDS,
                task_status=task_status,
            )

    async with trio.open_nursery() as nursery:
        server = await nursery.start(run)
        task_status.started(server.port)
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_GRACE_SECONDS):
                for scope in list(handlers):
                    scope.cancel()
                while handlers:
                    await trio.sleep(0.01)
            shielded.cancel()
