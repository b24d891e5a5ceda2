"""The MQTT server's listeners: TCP, TLS and WebSocket, one connection handler for all.

Every transport ends up as a :class:`trio.abc.Stream` handed to
:class:`~tidelog.protocols.mqtt.connection.MQTTConnection`: a TCP socket stream, a
:class:`trio.SSLStream` (handshake under the connect timeout), or
:class:`WebSocketStream`, which turns binary WebSocket messages into a byte
stream (MQTT packets may span messages, and one message may hold several).

One :class:`MQTTServer` per server holds what the connections share: the
broker, the security, the settings, the traffic counters, the authentication
hook and the connections by client id (for session takeover). The server's
:class:`~tidelog.context.ServerContext` holds it; the listeners here get it
from there.

Resource handling: each accepted stream is owned by its connection, which
closes it. Error handling: a connection never raises into the listener;
``trio.serve_listeners`` backs off on EMFILE.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import trio
import trio_websocket

from tidelog.engine import Broker
from tidelog.protocols.mqtt.connection import MQTTConnection
from tidelog.protocols.mqtt.decoder import Decoder
from tidelog.protocols.mqtt.packets import Connect, Packet
from tidelog.protocols.mqtt.settings import Authenticator, MQTTSettings, allow_all
from tidelog.security import Access, Principal, Security
from tidelog.security.http import (
    authenticate_websocket,
    websocket_access_token,
    websocket_certificate_user,
    websocket_peer,
)
from tidelog.security.tls import server_context
from tidelog.traffic import TrafficCounters

if TYPE_CHECKING:
    from tidelog.context import ServerContext

log = logging.getLogger(__name__)

WEBSOCKET_SUBPROTOCOLS = ("mqtt", "mqttv3.1")
"""Accepted Sec-WebSocket-Protocol values (``mqtt`` is the standard one)."""


LinkAcceptor = Callable[[trio.abc.Stream, Decoder, Connect, Access, list[Packet]], Awaitable[None]]
"""``accept(stream, decoder, connect, access, early_packets)``: serves an admitted
link connection (sends the CONNACK itself) until it ends."""


class MQTTServer:
    """What every MQTT connection of one server shares. ``security`` is required (no
    open default); ``traffic``: the server's counters (new ones if not given)."""

    def __init__(
        self,
        broker: Broker,
        security: Security,
        settings: MQTTSettings | None = None,
        traffic: TrafficCounters | None = None,
    ) -> None:
        self.broker = broker
        self.security = security
        """Authentication, ACLs and limits (:mod:`tidelog.security`)."""
        self.settings = settings or MQTTSettings()
        self.authenticate: Authenticator = allow_all
        self.connections: dict[str, MQTTConnection] = {}
        """Connected clients by client id."""
        self.open_streams = 0
        """Streams being served (connected, or not yet past CONNECT)."""
        self.sys_messages: dict[str, bytes] = {}
        """The latest ``$SYS`` values (see :mod:`tidelog.sys_topics`)."""
        self.traffic = traffic if traffic is not None else TrafficCounters()
        broker.cluster.on_claim(self._claimed_elsewhere)
        self.link_acceptor: LinkAcceptor | None = None
        """Serves connections whose CONNECT asks to be a mesh link (``tidelog.mesh``;
        None: such connections are ordinary MQTT clients)."""

    async def handle(
        self,
        stream: trio.abc.Stream,
        transport: str,
        peer: str = "",
        principal: Principal | None = None,
    ) -> None:
        """Serve one client on ``stream`` until it disconnects; closes the stream.
        ``peer``: the client's address (default: the socket's peer address).
        ``principal``: who the transport already authenticated (a WebSocket handshake).
        Connection limits are the security layer's (``[security] max_connections``)."""
        self.open_streams += 1
        self.traffic.opened("mqtt")
        try:
            await MQTTConnection(self, stream, transport, peer or _peer(stream), principal).run()
        finally:
            self.open_streams -= 1
            self.traffic.closed("mqtt")

    async def claim(self, client_id: str, connection: MQTTConnection) -> None:
        """Make ``connection`` the one of ``client_id``: an older connection with the
        same client id is taken over (it closes and saves its session first), and a
        will waiting for its delay is not sent (the client is back in time)."""
        broker = self.broker
        broker.cancel_will(client_id)
        while (old := self.connections.get(client_id)) is not None and old is not connection:
            await old.take_over()
            if self.connections.get(client_id) is old:
                del self.connections[client_id]
            broker.cancel_will(client_id)  # one the older connection left with a delay
        self.connections[client_id] = connection
        if await broker.cluster.claim_client(client_id):  # another node had it (kafka://)
            broker.cancel_will(client_id)
        await broker.sessions.refresh(client_id)  # the session that node saved

    async def _claimed_elsewhere(self, client_id: str) -> None:
        """Another node of a shared log took ``client_id`` over: close ours (0x8E)
        and return once its session is saved."""
        old = self.connections.get(client_id)
        if old is not None:
            await old.take_over()
            if self.connections.get(client_id) is old:
                del self.connections[client_id]
        self.broker.cancel_will(client_id)  # the client is back, on the other node

    def clients(self, owner: str | None = None) -> list[dict[str, Any]]:
        """The connected clients (``owner``'s only, if given), by client id."""
        return [
            connection.describe()
            for client_id, connection in sorted(self.connections.items())
            if owner is None or connection.owner == owner
        ]

    async def disconnect(self, client_id: str) -> bool:
        """Close ``client_id``'s connection (administrative action); False if it is not
        connected. Returns once the connection has saved its session."""
        connection = self.connections.get(client_id)
        if connection is None:
            return False
        await connection.disconnect()
        return True

    def release(self, client_id: str, connection: MQTTConnection) -> None:
        """``connection`` has closed (its session saved, its will handed over)."""
        if self.connections.get(client_id) is connection:
            del self.connections[client_id]
            self.broker.cluster.forget_claim(client_id)

    def publish_sys(self, messages: dict[str, bytes]) -> None:
        """Send ``$SYS`` values (QoS 0) to connected clients subscribed to them, and keep
        them for clients that subscribe later (delivered like retained messages)."""
        self.sys_messages.update(messages)
        for connection in list(self.connections.values()):
            connection.send_sys(messages, retain=False)

    def statistics(self) -> dict[str, int]:
        return {"connections": len(self.connections)}


def _peer(stream: trio.abc.Stream) -> str:
    socket_stream = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    if isinstance(socket_stream, trio.SocketStream):
        try:
            host, port, *_ = socket_stream.socket.getpeername()
            return f"{host}:{port}"
        except OSError:
            return "?"
    return "?"


async def _serve(
    listeners: list[Any],
    server: MQTTServer,
    transport: str,
    task_status: trio.TaskStatus[int],
) -> None:
    # server.handle itself (no wrapper coroutine): one frame less per idle connection
    handler = partial(server.handle, transport=transport)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, listeners)
        first = listeners[0]
        socket_listener = first.transport_listener if isinstance(first, trio.SSLListener) else first
        assert isinstance(socket_listener, trio.SocketListener)
        task_status.started(socket_listener.socket.getsockname()[1])


async def serve_tcp(
    context: ServerContext,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """MQTT over TCP on ``host:port`` until cancelled; reports the bound port."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    await _serve(list(listeners), context.mqtt, "tcp", task_status)


async def serve_tls(
    context: ServerContext,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """MQTT over TLS (the configuration's ``tls_cert``/``tls_key``) on ``host:port``."""
    config = context.config
    assert config.tls_cert is not None and config.tls_key is not None
    ssl_context = server_context(config.tls_cert, config.tls_key, config.security)
    listeners = [
        trio.SSLListener(listener, ssl_context, https_compatible=False)
        for listener in await trio.open_tcp_listeners(port, host=host)
    ]
    await _serve(listeners, context.mqtt, "tls", task_status)


class WebSocketStream(trio.abc.Stream):
    """A WebSocket connection seen as a byte stream: binary messages in, one binary
    message per ``send_all`` out. A text message breaks the stream (MQTT over
    WebSocket is binary only, [MQTT-6.0.0-1])."""

    def __init__(self, websocket: trio_websocket.WebSocketConnection) -> None:
        self.websocket = websocket

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self.websocket.send_message(bytes(data))
        except trio_websocket.ConnectionClosed as exc:
            raise trio.BrokenResourceError("the WebSocket is closed") from exc

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            message = await self.websocket.get_message()
        except trio_websocket.ConnectionClosed:
            return b""
        if isinstance(message, str):
            await self.websocket.aclose(code=1003, reason="MQTT over WebSocket is binary")
            raise trio.BrokenResourceError("a text WebSocket message")
        return message

    async def aclose(self) -> None:
        await self.websocket.aclose()


async def handle_websocket(
    context: ServerContext, request: trio_websocket.WebSocketRequest
) -> None:
    """The ``/mqtt`` route of the WebSocket listener."""
    subprotocol = next(
        (p for p in request.proposed_subprotocols if p in WEBSOCKET_SUBPROTOCOLS), None
    )
    if subprotocol is None:
        await request.reject(400, body=b"MQTT over WebSocket needs the subprotocol 'mqtt'")
        return
    # HTTP credentials or a client certificate on the handshake identify the client
    # when CONNECT carries no user name (docs/security.md); else CONNECT decides
    security = context.security
    principal = None
    has_credentials = any(name.lower() == b"authorization" for name, _ in request.headers)
    if has_credentials or websocket_access_token(request.path):
        access = await authenticate_websocket(security, request, "mqtt-websocket")
        if access is None:
            return
        principal = access.principal
    else:
        cert_user = websocket_certificate_user(security, request)
        principal = Principal(cert_user) if cert_user is not None else None
    websocket = await request.accept(subprotocol=subprotocol)
    peer = websocket_peer(websocket)
    await context.mqtt.handle(WebSocketStream(websocket), "websocket", peer, principal)
