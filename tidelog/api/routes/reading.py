"""The one read path of the REST API: every page of events a route returns
(``GET /v1/events``, a cursor's fetch) is read, filtered by the client's ACL and
encoded here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio
from fastapi import Request
from fastapi.responses import Response

from tidelog.api.shapes import Encoding, encode_events
from tidelog.concurrency import background_nursery
from tidelog.security.http import EventFilter
from tidelog.storage import ReadResult


def app_closing(request: Request) -> trio.Event:
    """Set when the app shuts down: streams and long-polls end on it."""
    closing: trio.Event = request.app.state.closing
    return closing


async def read_page(
    request: Request,
    read: Callable[[], Awaitable[ReadResult]],
    start: int,
    visible: EventFilter,
    encoding: Encoding,
    extra: Callable[[], dict[str, int]] | None = None,
) -> Response:
    """Every page of events the API returns comes from here: ``read()`` one page (a
    long-poll is cut short with an empty page from ``start`` when the app shuts down,
    so it never holds up shutdown), keep the events the client may read, encode them
    with ``next_offset`` (and the fields ``extra()`` gives once the read is done)."""
    result = ReadResult([], start)
    closing = app_closing(request)
    async with background_nursery() as nursery:

        async def stop_on_close() -> None:
            await closing.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(stop_on_close)
        result = await read()
        nursery.cancel_scope.cancel()
    events = encode_events(visible.keep(result.events), encoding)
    fields = "".join(f',"{name}":{value}' for name, value in (extra() if extra else {}).items())
    body = f'{{"events":{events},"next_offset":{result.next_offset}{fields}}}'
    return Response(body.encode("utf-8"), media_type="application/json")
