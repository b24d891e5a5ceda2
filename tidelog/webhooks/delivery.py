"""One webhook's delivery task: fetch from its cursor, POST, settle.

Theory of operation
-------------------
A webhook is an explicit-ack cursor (``webhook:<name>``) with one member, the
endpoint. A producer task leases up to ``batch`` events at a time and hands
each batch to one of ``concurrency`` sender tasks, which post them: with one
sender, in order, the next batch already fetched while a request is out (the
fetch and the acknowledgement's durable write overlap the request); with
several, up to ``concurrency`` requests at once, each sender taking the next
batch as soon as its request is settled (no request waits for a slower one).
A request's outcome settles its events:

* 2xx: acknowledged.
* timeout, connection error, 429 (``Retry-After`` honoured) or 5xx: the same
  request again (same ``webhook-id``, so receivers can drop duplicates) after an
  exponential backoff with jitter, up to ``retries`` times; then its events go to
  the dead-letter topic ``$DLQ/webhook/<name>``.
* any other 4xx: dead letters at once (the endpoint refuses them).
* 410 Gone: the webhook is disabled (stored), its events stay in the cursor.

Memory: the webhook leases at most ``batch * (concurrency + 1)`` events (one
batch per sender and the one the producer holds out); an endpoint that is down
holds nothing more, its cursor waits in the log. A
restart releases the stored leases and delivers from the floor again, so
nothing acknowledged is sent twice except a request in flight at the crash.
"""

from __future__ import annotations

import base64
import email.utils
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import attrs
import trio

from tidelog.api.event_json import encode_event, encode_events
from tidelog.engine import Broker, Cursor
from tidelog.engine.consumers import ConsumerOptions
from tidelog.errors import LogClosedError
from tidelog.security import Access, Right
from tidelog.security.http import EventFilter
from tidelog.storage import Event
from tidelog.webhooks.http import Poster, PostError, PostTimeout
from tidelog.webhooks.signing import parse_secret, sign
from tidelog.webhooks.spec import WebhookSpec, masked_url

log = logging.getLogger(__name__)

MEMBER = "webhook"
FETCH_WAIT_SECONDS = 30.0
MAX_RETRY_DELAY = 600.0
MAX_RETRY_AFTER = 3600.0
LEASE_SECONDS = 3600.0
"""The webhook's ack wait: its only member never fetches while a request is out, so the
lease only matters after a restart, which releases it anyway."""


@attrs.define
class WebhookStatus:
    """What ``GET /v1/webhooks/{name}`` and ``/metrics`` show of a webhook's delivery."""

    state: str = "starting"
    """``starting``, ``active``, ``retrying``, ``disabled`` or ``failed``."""
    last_success: int | None = None
    """Broker-clock ms of the last 2xx."""
    last_error: str | None = None
    last_error_at: int | None = None
    attempts: int = 0
    """Requests sent (retries included)."""
    delivered: int = 0
    """Events acknowledged by the endpoint."""
    dead_lettered: int = 0

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


class Disabled(Exception):
    """The endpoint answered 410 Gone."""


def retry_after(value: str | None, now_ms: int) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(0.0, moment.timestamp() - now_ms / 1000), MAX_RETRY_AFTER)


def backoff_delay(spec: WebhookSpec, attempt: int) -> float:
    """Seconds before retry ``attempt`` (1 = the first retry): exponential, at most
    :data:`MAX_RETRY_DELAY`, with equal jitter (half fixed, half random)."""
    delay: float = min(MAX_RETRY_DELAY, spec.retry_backoff * 2.0 ** (attempt - 1))
    return delay / 2 + random.uniform(0, delay / 2)


def request_target(spec: WebhookSpec) -> tuple[str, list[tuple[bytes, bytes]]]:
    """The URL to POST to and the headers every request of ``spec`` carries: its own
    ``headers``, ``content-type``, and Basic authorization for a URL with a user
    (``https://user:password@host/...``), which is taken out of the URL."""
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in spec.headers.items()]
    headers.append((b"content-type", b"application/json"))
    parts = urlsplit(spec.url)
    url = spec.url
    if parts.username is not None:
        user = unquote(parts.username) + ":" + unquote(parts.password or "")
        token = base64.b64encode(user.encode("utf-8")).decode("ascii")
        headers.append((b"authorization", f"Basic {token}".encode("ascii")))
        host = parts.netloc.rpartition("@")[2]
        url = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return url, headers


class WebhookDelivery:
    """Delivers one webhook until cancelled, disabled or deleted."""

    def __init__(
        self,
        broker: Broker,
        spec: WebhookSpec,
        access: Access,
        client: Poster,
        on_disabled: Callable[[WebhookSpec], Awaitable[None]],
    ) -> None:
        self.broker = broker
        self.spec = spec
        self.access = access
        self.client = client
        self.status = WebhookStatus(state="disabled" if spec.disabled else "starting")
        self.cursor: Cursor | None = None
        self._key = parse_secret(spec.secret)
        self._on_disabled = on_disabled
        self._url, self._headers = request_target(spec)

    def consumer_options(self) -> ConsumerOptions:
        spec = self.spec
        return ConsumerOptions(
            ack_policy="explicit",
            ack_wait=LEASE_SECONDS,
            dead_letter_topic=spec.dead_letter_topic,
            max_leased=spec.batch * (spec.concurrency + 1),
        )

    async def open_cursor(self) -> Cursor:
        spec = self.spec
        self.cursor = await self.broker.create_cursor(
            spec.cursor_name,
            spec.filter,
            start=spec.start,
            owner=spec.owner,
            options=self.consumer_options(),
        )
        return self.cursor

    async def run(self) -> None:
        spec = self.spec
        if spec.disabled:
            self.status.state = "disabled"
            return
        cursor = self.cursor or await self.open_cursor()
        await cursor.release(MEMBER)  # leases of an earlier run: deliver them again
        try:
            visible = EventFilter(self.access, Right.READ, spec.filter)
        except Exception as exc:  # the owner lost the right to read the filter
            self._failed(f"not allowed: {exc}")
            self.status.state = "failed"
            return
        self.status.state = "active"
        send, receive = trio.open_memory_channel[list[Event]](0)
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(spec.concurrency):
                    nursery.start_soon(self._send, cursor, receive.clone())
                receive.close()
                await self._produce(cursor, visible, send)
        except* Disabled:
            self.status.state = "disabled"
            await self._on_disabled(spec)
        except* LogClosedError:
            pass  # the broker is closing

    async def _produce(
        self, cursor: Cursor, visible: EventFilter, send: trio.MemorySendChannel[list[Event]]
    ) -> None:
        """Lease batches and hand each to a free sender (waits while none is free)."""
        batch = self.spec.batch
        async with send:
            while True:
                result = await cursor.fetch(batch, FETCH_WAIT_SECONDS, member=MEMBER)
                if not result.events:
                    continue
                kept = visible.keep(result.events)
                if len(kept) != len(result.events):  # the owner may not read these
                    shown = {e.offset for e in kept}
                    await cursor.ack([e.offset for e in result.events if e.offset not in shown])
                if kept:
                    await send.send(kept)

    async def _send(self, cursor: Cursor, receive: trio.MemoryReceiveChannel[list[Event]]) -> None:
        async with receive:
            async for events in receive:
                await self._deliver(cursor, events)

    def body(self, events: list[Event]) -> bytes:
        """One event object, or ``{"events": [...]}`` when ``batch`` is above 1."""
        if self.spec.batch == 1:
            return encode_event(events[0]).encode("utf-8")
        return f'{{"events":{encode_events(events)}}}'.encode()

    def message_id(self, events: list[Event]) -> str:
        """Stable across retries and restarts for the same events."""
        return f"msg_{self.spec.name}_{events[0].offset}_{events[-1].offset}"

    async def _deliver(self, cursor: Cursor, events: list[Event]) -> None:
        spec = self.spec
        offsets = [e.offset for e in events]
        body = self.body(events)
        message_id = self.message_id(events)
        attempt = 0
        while True:
            attempt += 1
            self.status.attempts += 1
            timestamp = self.broker.clock() // 1000
            headers = [
                *self._headers,
                (b"webhook-id", message_id.encode()),
                (b"webhook-timestamp", b"%d" % timestamp),
                (b"webhook-signature", sign(self._key, message_id, timestamp, body).encode()),
            ]
            wait: float | None = None
            try:
                code, retry_header = await self.client.post(self._url, headers, body, spec.timeout)
            except (PostTimeout, PostError) as exc:
                error = str(exc)
            else:
                if 200 <= code < 300:
                    await cursor.ack(offsets)
                    self.status.delivered += len(events)
                    self.status.last_success = self.broker.clock()
                    self.status.state = "active"
                    return
                error = f"HTTP {code}"
                if code == 410:
                    self._failed(error + ": the endpoint is gone; the webhook is disabled")
                    raise Disabled
                if code != 429 and code < 500:
                    self._failed(error)
                    await self._reject(cursor, offsets, error)
                    return
                wait = retry_after(retry_header, self.broker.clock())
            self._failed(error)
            if attempt > spec.retries:
                await self._reject(cursor, offsets, f"{error} after {attempt} attempts")
                return
            self.status.state = "retrying"
            await trio.sleep(backoff_delay(spec, attempt) if wait is None else wait)

    async def _reject(self, cursor: Cursor, offsets: list[int], reason: str) -> None:
        self.status.dead_lettered += await (await cursor.group()).reject(offsets, reason)

    def _failed(self, error: str) -> None:
        self.status.last_error = error
        self.status.last_error_at = self.broker.clock()
        log.warning("webhook %s (%s): %s", self.spec.name, masked_url(self.spec.url), error)
