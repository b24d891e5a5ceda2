"""Server-Sent Events: the live tail of a filter as an ``text/event-stream`` response.

Each event is one SSE message whose ``id`` is the event's offset and whose
``data`` is the event's JSON shape on one line::

    id: 42
    data: {"offset":42,"timestamp":1764151200000,"topic":"a/b",...}

A browser's ``EventSource`` sends the last ``id`` it saw as ``Last-Event-ID``
when it reconnects; the endpoint resumes at that offset + 1, so nothing is
missed or repeated. A comment line (``: keepalive``) goes out when nothing
happened for a while, which keeps proxies from timing the stream out and lets
the server notice a client that is gone.

:class:`SnapshotStream` is the other kind: a figure computed every interval
(``GET /v1/stats/stream``), one ``event: <name>`` message per tick.

Resource handling: the stream holds one engine feed, bounded like every feed
(a client that reads slowly makes the feed fall back to reading the log, not
grow); the feed closes when the client disconnects, when the server shuts down
(``closing`` is set) or when the broker closes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any

import trio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tidelog.api.shapes import Encoding, dumps, encode_event
from tidelog.engine import Broker, Position
from tidelog.errors import LogClosedError
from tidelog.storage import Event
from tidelog.traffic import TrafficCounters

HEARTBEAT_SECONDS = 15.0
BATCH_EVENTS = 500


class SseResponse(Response):
    """An endless ``text/event-stream`` response: it runs :meth:`_body` until the
    client goes, the app closes (``closing``) or the broker stops, and counts itself
    among the server's open ``sse`` connections meanwhile."""

    media_type = "text/event-stream"

    def __init__(self, closing: trio.Event, traffic: TrafficCounters) -> None:
        super().__init__(
            content=None,
            status_code=200,
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
            media_type=self.media_type,
        )
        # an endless body: no Content-Length (Response adds one for its empty content)
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.closing = closing
        self.traffic = traffic
        """The server's counters (open ``sse`` streams)."""

    def _held(self) -> AbstractContextManager[None]:
        """Held while the stream runs (a quota slot); nothing by default."""
        return contextlib.nullcontext()

    async def _body(self, send: Send) -> None:
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        counters = self.traffic
        counters.opened("sse")
        try:
            with self._held():
                await self._run(receive, send)
        finally:
            counters.closed("sse")
        # hypercorn ignores sends to a client that is gone
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _run(self, receive: Receive, send: Send) -> None:
        """Stream until the client goes, the app closes or the broker stops."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
            nursery.start_soon(_cancel_on_event, self.closing, nursery.cancel_scope)
            try:
                await self._body(send)
            except LogClosedError:
                return
            finally:
                nursery.cancel_scope.cancel()


class EventStream(SseResponse):
    """A streaming response that subscribes when the response starts."""

    def __init__(
        self,
        broker: Broker,
        topic_filter: str,
        start: Position,
        encoding: Encoding,
        closing: trio.Event,
        traffic: TrafficCounters,
        *,
        heartbeat: float = HEARTBEAT_SECONDS,
        keep: Callable[[list[Event]], list[Event]] | None = None,
        counted: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext,
    ) -> None:
        super().__init__(closing, traffic)
        self.broker = broker
        self.topic_filter = topic_filter
        self.start = start
        self.encoding: Encoding = encoding
        self.heartbeat = heartbeat
        self.keep = keep
        """Drops events the client may not see (the ACL's per-topic check)."""
        self.counted = counted
        """Held while the stream runs (the user's subscription quota)."""

    def _held(self) -> AbstractContextManager[None]:
        return self.counted()

    async def _body(self, send: Send) -> None:
        async def chunk(body: bytes) -> None:
            await send({"type": "http.response.body", "body": body, "more_body": True})

        try:
            async with self.broker.subscribe(
                self.topic_filter, start=self.start, retained=False
            ) as subscriber:
                await chunk(b": subscribed\n\n")  # flushes the headers to the client
                while True:
                    batch: list[Any] = []
                    with trio.move_on_after(self.heartbeat):
                        batch = await subscriber.receive_batch(BATCH_EVENTS)
                    if not batch:
                        await chunk(b": keepalive\n\n")
                        continue
                    if self.keep is not None:
                        batch = self.keep(batch)
                        if not batch:
                            continue
                    await chunk(
                        "".join(
                            [
                                f"id: {e.offset}\ndata: {encode_event(e, self.encoding)}\n\n"
                                for e in batch
                            ]
                        ).encode("utf-8")
                    )
        except LogClosedError:
            return


class SnapshotStream(SseResponse):
    """An SSE response that sends ``snapshot()`` as ``event: <name>`` every ``interval``
    seconds (the first at once) until the client goes or the app closes. Each tick
    computes one snapshot: an idle stream costs one small JSON document per interval."""

    def __init__(
        self,
        snapshot: Callable[[], Awaitable[dict[str, Any]]],
        name: str,
        interval: float,
        closing: trio.Event,
        traffic: TrafficCounters,
    ) -> None:
        super().__init__(closing, traffic)
        self.snapshot = snapshot
        self.name = name
        self.interval = interval

    async def _body(self, send: Send) -> None:
        prefix = f"event: {self.name}\ndata: ".encode()
        while True:
            body = prefix + dumps(await self.snapshot()) + b"\n\n"
            await send({"type": "http.response.body", "body": body, "more_body": True})
            await trio.sleep(self.interval)


async def _cancel_on_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


async def _cancel_on_event(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
