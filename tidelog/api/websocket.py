"""The native WebSocket protocol at ``/v1/ws``: JSON text frames over one connection.

Client to server (every request may carry an ``id``, echoed in its reply)::

    publish      {"type": "publish", "id": 1, "topic": "a/b", "payload": "aGk=",
                  "encoding"?: "base64"|"text", "qos"?, "retain"?, "properties"?}
                 -> {"type": "ack", "id": 1, "offset": 7, "timestamp": ...} once durable
    publish_batch {"type": "publish_batch", "id": 6, "events": [{"topic", "payload", ...}]}
                 -> {"type": "ack", "id": 6, "events": [{"offset", "timestamp"}...]}
                    (all or nothing, one commit)
    subscribe    {"type": "subscribe", "id": 2, "sub"?: "s1", "filter"?: "a/#",
                  "start"?: "latest", "cursor"?: "name", "credit"?: 1000,
                  "encoding"?: "base64", "retained"?: false}
                 -> {"type": "subscribed", "id": 2, "sub": "s1", "position": 7, ...}
    credit       {"type": "credit", "sub": "s1", "events": 500}   (no reply)
    commit / ack {"type": "commit", "id": 3, "sub": "s1" | "cursor": "name", "offset": 8}
                 -> {"type": "committed", "id": 3, "cursor": "name", "offset": 8}
    unsubscribe  {"type": "unsubscribe", "id": 4, "sub": "s1"}
                 -> {"type": "unsubscribed", "id": 4, "sub": "s1"}
    ping         {"type": "ping", "id": 5} -> {"type": "pong", "id": 5, "end_offset": 8}

Server to client, besides replies::

    events       {"type": "events", "sub": "s1", "events": [<event>...], "next_offset": 8}
    error        {"type": "error", "id"?: 3, "code": "invalid_topic", "status": 400,
                  "detail": "..."}

Theory of operation
-------------------
One task reads frames and handles them in order. Each subscription is a task
(a *pump*) owning one engine feed; it sends at most as many events as the
client has granted in credit, then stops taking from its feed. The feed is
bounded: when it fills, the engine drops it to catch-up mode and it later
reads from the log. So a client that grants no credit, or reads its socket
slowly (sends block), costs a bounded buffer and a position, never unbounded
memory.

Publishes are queued to the group commit without a task each
(:meth:`Broker.publish_nowait`); the commit's callback queues the ack.
At most :data:`MAX_IN_FLIGHT` publishes per connection wait for durability;
past that the reader stops reading frames (back-pressure on the socket).

Error handling: a request that cannot be served (bad topic, unknown cursor,
bad base64, invalid fields) gets an error frame and the connection goes on.
Frames that break the protocol close the connection: a binary frame with
1003, text that is not JSON with 1007, JSON that is not a message object
with a string ``type`` with 1002; a frame over the listener's message size
limit is closed with 1009 by the WebSocket layer. Only that connection is
affected.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import TYPE_CHECKING, Annotated, Any, Literal

import trio
import trio_websocket
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from tidelog.api.problems import ApiError, classify
from tidelog.api.shapes import MAX_BATCH_EVENTS, Encoding, EventIn, dumps, encode_events
from tidelog.engine import Broker, Cursor, CursorNotFoundError, Subscriber, parse_position
from tidelog.errors import LogClosedError
from tidelog.logging_setup import set_connection_context
from tidelog.security import (
    Access,
    LimitExceededError,
    Name,
    Quota,
    Right,
    Security,
)
from tidelog.security.http import (
    EventFilter,
    authenticate_websocket,
    reject_websocket,
    websocket_peer,
)
from tidelog.storage import Event, NewEvent

if TYPE_CHECKING:
    from tidelog.context import ServerContext

log = logging.getLogger(__name__)

SUBPROTOCOL = "tidelog.v1"
"""Offered by the server when the client proposes it (optional)."""
MAX_SUBSCRIPTIONS = 64
"""Subscriptions one connection may hold at once."""
MAX_IN_FLIGHT = 1000
"""Publish requests (single or batch) one connection may have waiting for durability."""
MAX_PUSH_EVENTS = 500
"""The most events in one ``events`` frame."""
DEFAULT_CREDIT = 1000
MAX_CREDIT = 1_000_000
GROUP_WAIT_SECONDS = 30.0
"""How long one fetch of a consumer-group member waits for events before it asks again."""
"""Credit one subscription may hold (grants beyond it are clamped)."""

CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_INTERNAL_ERROR = 1011

RequestId = str | int | None


# -- messages ------------------------------------------------------------------------


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, Field(max_length=256)] | int | None = None


class PublishMessage(_Message, EventIn):
    type: Literal["publish"]


class PublishBatchMessage(_Message):
    type: Literal["publish_batch"]
    events: Annotated[list[EventIn], Field(min_length=1, max_length=MAX_BATCH_EVENTS)]


class SubscribeMessage(_Message):
    type: Literal["subscribe"]
    sub: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    filter: str | None = None
    start: str | int = "latest"
    cursor: Annotated[str, Field(min_length=1, max_length=65535)] | None = None
    credit: Annotated[int, Field(ge=0, le=MAX_CREDIT)] = DEFAULT_CREDIT
    encoding: Encoding = "base64"
    retained: bool = False


class CreditMessage(_Message):
    type: Literal["credit"]
    sub: str
    events: Annotated[int, Field(ge=1, le=MAX_CREDIT)]


class CommitMessage(_Message):
    type: Literal["commit", "ack", "nak", "progress"]
    sub: str | None = None
    cursor: str | None = None
    offset: Annotated[int, Field(ge=0, le=2**63 - 1)] | None = None
    """Cumulative: everything below it is acknowledged (``commit``, ``ack``)."""
    offsets: (
        Annotated[list[Annotated[int, Field(ge=0, le=2**63 - 1)]], Field(max_length=10_000)] | None
    ) = None
    """Per event (explicit cursors): ``ack``, ``nak``, ``progress``."""
    delay: Annotated[float, Field(ge=0, le=365 * 86400)] | None = None


class UnsubscribeMessage(_Message):
    type: Literal["unsubscribe"]
    sub: str


class PingMessage(_Message):
    type: Literal["ping"]


ClientMessage = Annotated[
    PublishMessage
    | PublishBatchMessage
    | SubscribeMessage
    | CreditMessage
    | CommitMessage
    | UnsubscribeMessage
    | PingMessage,
    Field(discriminator="type"),
]
_parse: TypeAdapter[ClientMessage] = TypeAdapter(ClientMessage)
MESSAGE_TYPES = frozenset(
    {
        "publish",
        "publish_batch",
        "subscribe",
        "credit",
        "commit",
        "ack",
        "nak",
        "progress",
        "unsubscribe",
        "ping",
    }
)


class ProtocolViolation(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def parse_frame(frame: str | bytes) -> dict[str, Any]:
    """A frame as a message object; :class:`ProtocolViolation` if it is not one."""
    if isinstance(frame, bytes):
        raise ProtocolViolation(CLOSE_UNSUPPORTED_DATA, "binary frames are not supported")
    try:
        data = json.loads(frame)
    except ValueError:
        raise ProtocolViolation(CLOSE_INVALID_PAYLOAD, "a frame must be JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ProtocolViolation(
            CLOSE_PROTOCOL_ERROR, "a frame must be a JSON object with a string 'type'"
        )
    return data


def is_unicode(frame: str, data: dict[str, Any]) -> bool:
    """False if a string of the parsed frame holds a lone surrogate (JSON can escape
    one, ``"\\ud800"``; no topic, name or text payload may hold one)."""
    if "\\u" not in frame:  # only escapes can smuggle one in
        return True
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- the connection ------------------------------------------------------------------


class WsApiSubscription:
    """One subscription of a ``/v1/ws`` client: its id, encoding, the credit the
    client granted, and the cursor it commits (not the engine's feed subscription,
    :class:`tidelog.engine.FeedSubscription`)."""

    def __init__(self, sub_id: str, encoding: Encoding, credit: int) -> None:
        self.id = sub_id
        self.encoding: Encoding = encoding
        self.credit = credit
        self.cursor: Cursor | None = None
        self.closing = False
        self.done = trio.Event()
        self._waiting: trio.CancelScope | None = None
        self._credit_changed = trio.Event()

    def grant(self, events: int) -> None:
        self.credit = min(MAX_CREDIT, self.credit + events)
        self._credit_changed.set()

    def close(self) -> None:
        """Stop the pump at its next wait (never in the middle of sending a frame)."""
        self.closing = True
        if self._waiting is not None:
            self._waiting.cancel()

    async def next_leased(self, cursor: Cursor, member: str) -> list[Event]:
        """Like :meth:`next_batch` for a consumer-group member: events leased from an
        explicit cursor (waiting for credit, then for events); [] once closed."""
        batch: list[Event] = []
        with trio.CancelScope() as self._waiting:
            if self.closing:
                return []
            while self.credit <= 0:
                self._credit_changed = trio.Event()
                await self._credit_changed.wait()
            while not batch:
                limit = min(self.credit, MAX_PUSH_EVENTS)
                batch = (await cursor.fetch(limit, GROUP_WAIT_SECONDS, member=member)).events
        self._waiting = None
        if self.closing:
            if batch:  # fetched but not sent: give them back at once
                await cursor.nak([e.offset for e in batch], 0)
            return []
        self.credit -= len(batch)
        return batch

    async def next_batch(self, subscriber: Subscriber) -> list[Event]:
        """Wait for credit and events; [] once :meth:`close` was called."""
        batch: list[Event] = []
        with trio.CancelScope() as self._waiting:
            if self.closing:
                return []
            while self.credit <= 0:
                self._credit_changed = trio.Event()
                await self._credit_changed.wait()
            batch = await subscriber.receive_batch(min(self.credit, MAX_PUSH_EVENTS))
        self._waiting = None
        if self.closing:
            return []
        self.credit -= len(batch)
        return batch


class WsApiConnection:
    """One ``/v1/ws`` client connection of the native protocol (see the module
    docstring); MQTT's are :class:`~tidelog.protocols.mqtt.connection.MQTTConnection`."""

    def __init__(
        self,
        broker: Broker,
        ws: trio_websocket.WebSocketConnection,
        access: Access,
        security: Security,
    ) -> None:
        self.broker = broker
        self.ws = ws
        self.security = security
        self.access = access
        self.subscriptions: dict[str, WsApiSubscription] = {}
        self._next_sub = 0
        self._in_flight = 0
        self._in_flight_changed = trio.Event()
        self._acks_in, self._acks_out = trio.open_memory_channel[bytes](MAX_IN_FLIGHT + 1)
        self._closed = False

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._send_acks)
                try:
                    await self._read_frames()
                finally:
                    self._closed = True
                    nursery.cancel_scope.cancel()
        except* trio_websocket.ConnectionClosed:
            pass

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_message(dumps(message).decode("utf-8"))

    async def _read_frames(self) -> None:
        while True:
            try:
                frame = await self.ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            try:
                data = parse_frame(frame)
            except ProtocolViolation as violation:
                await self.ws.aclose(violation.code, violation.reason)
                return
            if not is_unicode(frame, data):  # type: ignore[arg-type]
                request_id = data.get("id")
                await self.error(
                    request_id if isinstance(request_id, int) else None,
                    400,
                    "invalid_unicode",
                    "a string in the request holds a lone surrogate (not Unicode text)",
                )
                continue
            await self._handle(data)

    async def _handle(self, data: dict[str, Any]) -> None:
        request_id = data.get("id")
        if not isinstance(request_id, str | int) or isinstance(request_id, bool):
            request_id = None
        if data["type"] not in MESSAGE_TYPES:
            await self.error(
                request_id,
                400,
                "unknown_type",
                f"unknown message type {data['type']!r}; expected one of "
                + ", ".join(sorted(MESSAGE_TYPES)),
            )
            return
        try:
            message = _parse.validate_python(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"][1:])
            await self.error(request_id, 422, "validation_failed", f"{where}: {first['msg']}")
            return
        try:
            match message:
                case PublishMessage():
                    await self._publish(message.id, [message.to_new_event()], single=True)
                case PublishBatchMessage():
                    events = [event.to_new_event() for event in message.events]
                    await self._publish(message.id, events, single=False)
                case SubscribeMessage():
                    await self._subscribe(message)
                case CreditMessage():
                    self._subscription(message.sub).grant(message.events)
                case CommitMessage():
                    await self._commit(message)
                case UnsubscribeMessage():
                    sub = self._subscription(message.sub)
                    sub.close()
                    await sub.done.wait()  # no events frame of it follows the reply
                    del self.subscriptions[message.sub]
                    await self.send({"type": "unsubscribed", "id": message.id, "sub": message.sub})
                case PingMessage():
                    await self.send(
                        {"type": "pong", "id": message.id, "end_offset": self.broker.end_offset}
                    )
        except Exception as exc:
            found = classify(exc)
            if found is None:
                raise
            await self.error(request_id, found[0], found[1], str(exc))

    async def error(self, request_id: RequestId, status: int, code: str, detail: str) -> None:
        frame: dict[str, Any] = {"type": "error", "code": code, "status": status, "detail": detail}
        if request_id is not None:
            frame["id"] = request_id
        await self.send(frame)

    def _subscription(self, sub_id: str) -> WsApiSubscription:
        sub = self.subscriptions.get(sub_id)
        if sub is None:
            raise ApiError(404, "unknown_subscription", f"no subscription {sub_id!r}")
        return sub

    # -- publishing ------------------------------------------------------------------

    async def _publish(
        self, request_id: RequestId, events: list[NewEvent], *, single: bool
    ) -> None:
        """Queue for commit; the ack (or error) goes out from the commit's callback."""
        self.security.limits.check_events(events)
        for event in events:
            self.access.check_topic(Right.PUBLISH, event.topic)
        self.security.quotas.retain(self.access.owner, events)
        while self._in_flight >= MAX_IN_FLIGHT:
            self._in_flight_changed = trio.Event()
            await self._in_flight_changed.wait()
        await self.broker.wait_writable()

        def done(result: list[Event] | BaseException) -> None:
            self._in_flight -= 1
            self._in_flight_changed.set()
            if self._closed:
                return
            reply: dict[str, Any]
            if isinstance(result, BaseException):
                status, code = classify(result) or (500, "internal_error")
                reply = {
                    "type": "error",
                    "code": code,
                    "status": status,
                    "detail": str(result) if status < 500 else "the publish failed",
                }
                if request_id is not None:
                    reply["id"] = request_id
            elif single:
                stored = result[0]
                reply = {
                    "type": "ack",
                    "id": request_id,
                    "offset": stored.offset,
                    "timestamp": stored.timestamp,
                }
            else:
                reply = {
                    "type": "ack",
                    "id": request_id,
                    "events": [{"offset": e.offset, "timestamp": e.timestamp} for e in result],
                }
            self._acks_in.send_nowait(dumps(reply))

        self.broker.publish_nowait(events, done)
        self._in_flight += 1

    async def _send_acks(self) -> None:
        async for reply in self._acks_out:
            await self.ws.send_message(reply.decode("utf-8"))

    # -- subscriptions -----------------------------------------------------------------

    async def _subscribe(self, message: SubscribeMessage) -> None:
        if message.sub is None:
            self._next_sub += 1
            sub_id = str(self._next_sub)
            while sub_id in self.subscriptions:
                self._next_sub += 1
                sub_id = str(self._next_sub)
        else:
            sub_id = message.sub
        if sub_id in self.subscriptions:
            raise ApiError(409, "subscription_exists", f"subscription {sub_id!r} exists")
        if len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
            raise ApiError(
                429, "too_many_subscriptions", f"at most {MAX_SUBSCRIPTIONS} per connection"
            )
        sub = WsApiSubscription(sub_id, message.encoding, message.credit)
        await self._check_subscribe(message)
        await self._nursery.start(self._pump, sub, message)
        self.subscriptions[sub_id] = sub

    async def _check_subscribe(self, message: SubscribeMessage) -> None:
        """Every check of a subscribe before any state exists: name maxima, the ACL on
        the filter, the cursor's owner, the quotas (so a refusal creates nothing)."""
        limits = self.security.limits
        owner = self.access.owner
        if message.filter is not None:
            limits.check_name(Name.FILTER, message.filter)
        self.security.quotas.check(Quota.SUBSCRIPTIONS, owner)
        topic_filter = message.filter
        if message.cursor is not None:
            limits.check_name(Name.CURSOR, message.cursor)
            if topic_filter is None:
                topic_filter = (await self.broker.cursor(message.cursor, owner=owner)).topic_filter
            else:
                try:
                    await self.broker.cursor(message.cursor, owner=owner)
                except CursorNotFoundError:
                    held = len(await self.broker.cursors(owner=owner))
                    self.security.quotas.check(Quota.CURSORS, owner, held)
        live = parse_position(message.start).kind == "latest" and message.cursor is None
        EventFilter(
            self.access,
            Right.SUBSCRIBE if live else Right.SUBSCRIBE | Right.READ,
            topic_filter or "#",
        )

    async def _pump(
        self,
        sub: WsApiSubscription,
        message: SubscribeMessage,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Subscribe, confirm, then push events while the client has credit."""
        start = parse_position(message.start)
        topic_filter = message.filter
        owner = self.access.owner
        if message.cursor is not None:
            if topic_filter is not None:
                cursor = await self.broker.create_cursor(
                    message.cursor, topic_filter, start=start, owner=owner
                )
            else:
                cursor = await self.broker.cursor(message.cursor, owner=owner)
            sub.cursor = cursor
            start = parse_position(cursor.position)
            topic_filter = cursor.topic_filter
        if sub.cursor is not None and sub.cursor.explicit:
            await self._pump_group(sub, sub.cursor, message, task_status)
            return
        if topic_filter is None:
            topic_filter = "#"
        # the live tail needs subscribe; history (a start in the past, a cursor) read too
        live = start.kind == "latest" and sub.cursor is None
        visible = EventFilter(
            self.access, Right.SUBSCRIBE if live else Right.SUBSCRIBE | Right.READ, topic_filter
        )
        try:
            with self.security.quotas.hold(Quota.SUBSCRIPTIONS, owner):
                async with self.broker.subscribe(
                    topic_filter, start=start, retained=message.retained
                ) as subscriber:
                    reply: dict[str, Any] = {
                        "type": "subscribed",
                        "id": message.id,
                        "sub": sub.id,
                        "filter": topic_filter,
                        "position": subscriber.feed.fence,
                        "credit": sub.credit,
                    }
                    if sub.cursor is not None:
                        reply["cursor"] = sub.cursor.name
                    await self.send(reply)
                    task_status.started()
                    sub_json = json.dumps(sub.id)
                    while batch := await sub.next_batch(subscriber):
                        kept = visible.keep(batch)
                        if len(kept) != len(batch):
                            sub.grant(len(batch) - len(kept))  # hidden events cost no credit
                            if not kept:
                                continue
                            batch = kept
                        await self.ws.send_message(
                            f'{{"type":"events","sub":{sub_json},'
                            f'"events":{encode_events(batch, sub.encoding)},'
                            f'"next_offset":{batch[-1].offset + 1}}}'
                        )
        except LogClosedError:
            return  # the broker is closing
        finally:
            sub.done.set()

    async def _pump_group(
        self,
        sub: WsApiSubscription,
        cursor: Cursor,
        message: SubscribeMessage,
        task_status: trio.TaskStatus[None],
    ) -> None:
        """A subscription on an explicit cursor is a member of its consumer group: each
        ``events`` frame is leased to it (settle with ``ack``/``nak``/``progress`` and
        ``offsets``); when it goes (unsubscribe, disconnect), its leases are released."""
        visible = EventFilter(self.access, Right.SUBSCRIBE | Right.READ, cursor.topic_filter)
        member = f"ws:{id(self):x}:{sub.id}"
        owner = self.access.owner
        try:
            with self.security.quotas.hold(Quota.SUBSCRIPTIONS, owner):
                await self.send(
                    {
                        "type": "subscribed",
                        "id": message.id,
                        "sub": sub.id,
                        "filter": cursor.topic_filter or "#",
                        "position": cursor.position,
                        "credit": sub.credit,
                        "cursor": cursor.name,
                    }
                )
                task_status.started()
                sub_json = json.dumps(sub.id)
                while batch := await sub.next_leased(cursor, member):
                    kept = visible.keep(batch)
                    if len(kept) != len(batch):
                        shown = {e.offset for e in kept}
                        await cursor.nak([e.offset for e in batch if e.offset not in shown])
                        sub.grant(len(batch) - len(kept))
                        if not kept:
                            continue
                    await self.ws.send_message(
                        f'{{"type":"events","sub":{sub_json},'
                        f'"events":{encode_events(kept, sub.encoding)},'
                        f'"next_offset":{kept[-1].offset + 1}}}'
                    )
        except LogClosedError:
            return
        finally:
            with trio.CancelScope(shield=True), contextlib.suppress(LogClosedError):
                await cursor.release(member)
            sub.done.set()

    async def _commit(self, message: CommitMessage) -> None:
        if (message.sub is None) == (message.cursor is None):
            raise ApiError(400, "bad_request", "a commit names either 'sub' or 'cursor'")
        if message.sub is not None:
            cursor = self._subscription(message.sub).cursor
            if cursor is None:
                raise ApiError(
                    400, "not_durable", f"subscription {message.sub!r} has no cursor to commit"
                )
        else:
            assert message.cursor is not None
            self.security.limits.check_name(Name.CURSOR, message.cursor)
            cursor = await self.broker.cursor(message.cursor, owner=self.access.owner)
        if message.offsets is not None:
            if message.type == "commit":
                raise ApiError(400, "bad_request", "commit takes 'offset'; ack takes 'offsets'")
            if message.type == "ack":
                settled = await cursor.ack(message.offsets)
            elif message.type == "nak":
                settled = await cursor.nak(message.offsets, message.delay)
            else:
                settled = await cursor.progress(message.offsets)
            await self.send(
                {
                    "type": "settled",
                    "id": message.id,
                    "cursor": cursor.name,
                    "action": message.type,
                    "settled": settled,
                    "position": cursor.position,
                }
            )
            return
        if message.offset is None or message.type not in ("commit", "ack"):
            raise ApiError(
                400, "bad_request", f"{message.type} needs 'offsets' (or 'offset' to commit)"
            )
        await cursor.commit(message.offset)
        await self.send(
            {"type": "committed", "id": message.id, "cursor": cursor.name, "offset": message.offset}
        )


async def handle(context: ServerContext, request: trio_websocket.WebSocketRequest) -> None:
    """The ``/v1/ws`` route of the WebSocket listener.

    The handshake is authenticated (docs/security.md): 401 with ``WWW-Authenticate``,
    429 when rate limited, 503 past the connection limits."""
    security = context.security
    address = websocket_peer(request).rsplit(":", 1)[0]
    refusal = security.connections.acquire(address)
    if refusal is not None:
        await reject_websocket(request, 503, "limit_exceeded", LimitExceededError(refusal))
        return
    try:
        access = await authenticate_websocket(security, request, "ws")
        if access is None:
            return
        subprotocol = SUBPROTOCOL if SUBPROTOCOL in request.proposed_subprotocols else None
        ws = await request.accept(subprotocol=subprotocol)
        set_connection_context(protocol="websocket", remote=websocket_peer(request))
        counters = context.traffic
        counters.opened("websocket")
        try:
            await WsApiConnection(context.broker, ws, access, security).run()
        except Exception:
            # a bug must cost this connection only, not the listener
            log.exception("WebSocket connection from %s failed", ws.remote)
            await ws.aclose(CLOSE_INTERNAL_ERROR, "internal error")
        except BaseException as exc:
            if _cancelled(exc):  # the server is shutting down: say so, briefly
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await ws.aclose(CLOSE_GOING_AWAY, "the server is shutting down")
            raise
        finally:
            counters.closed("websocket")
    finally:
        security.connections.release(address)


def _cancelled(exc: BaseException) -> bool:
    """Cancelled, or a group holding nothing else (as trio's nurseries raise it)."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(trio.Cancelled)[1] is None
    return isinstance(exc, trio.Cancelled)
