"""The event JSON of the REST, WebSocket, SSE and webhook APIs, without pydantic.

An event goes out as::

    {"offset": 7, "timestamp": 1764151200000, "topic": "devices/42/temp",
     "payload": "MjEuNQ==", "encoding": "base64", "qos": 1, "retain": false,
     "properties": {"content_type": "text/plain"}}

Payloads are base64 unless the caller asked for ``encoding=text``; even then a
payload that is not valid UTF-8 goes out as base64 and its ``encoding`` says so,
so a client must always look at ``encoding``. In ``properties``,
``correlation_data`` (bytes) is always base64; everything else is as stored.

Hot paths (reads of thousands of events) build plain dicts and serialize them
with :func:`dumps`. This module imports no pydantic, so that the server (and the
webhooks it runs) start without the REST stack; :mod:`tidelog.api.shapes` holds
the pydantic models of the same shapes and re-exports these names.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Iterable
from typing import Any, Literal

from tidelog.storage import Event, Properties

Encoding = Literal["base64", "text"]

MAX_READ_LIMIT = 10_000
"""The most events one read (GET /v1/events, cursor fetch) returns."""
DEFAULT_READ_LIMIT = 100
MAX_READ_BYTES = 16 * 1024 * 1024
DEFAULT_READ_BYTES = 1024 * 1024
MAX_WAIT_MS = 60_000
"""The longest a long-poll waits (wait_ms is capped here)."""
MAX_BATCH_EVENTS = 10_000
"""The most events one batch publish may carry."""


class PayloadError(ValueError):
    """A payload cannot be decoded as the encoding it claims (bad base64)."""


# -- events out --------------------------------------------------------------------


def payload_out(payload: bytes, encoding: Encoding) -> tuple[str, Encoding]:
    """The payload as JSON text, and the encoding actually used."""
    if encoding == "text":
        try:
            return payload.decode("utf-8"), "text"
        except UnicodeDecodeError:
            pass
    return base64.b64encode(payload).decode("ascii"), "base64"


def properties_out(props: Properties) -> dict[str, Any]:
    out = props.to_dict()
    data = out.get("correlation_data")
    if data is not None:
        out["correlation_data"] = base64.b64encode(data).decode("ascii")
    return out


def event_out(event: Event, encoding: Encoding = "base64") -> dict[str, Any]:
    """One event as its stable JSON shape."""
    payload, used = payload_out(event.payload, encoding)
    props = event.properties
    return {
        "offset": event.offset,
        "timestamp": event.timestamp,
        "topic": event.topic,
        "payload": payload,
        "encoding": used,
        "qos": event.qos,
        "retain": event.retain,
        "properties": {} if props is None else properties_out(props),
    }


def events_out(events: Iterable[Event], encoding: Encoding = "base64") -> list[dict[str, Any]]:
    return [event_out(event, encoding) for event in events]


_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)
_encode_string = json.encoder.encode_basestring


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON (the one serializer both APIs use)."""
    return _encoder.encode(value).encode("utf-8")


@functools.lru_cache(maxsize=65_536)
def _topic_json(topic: str) -> str:
    return _encode_string(topic)


def encode_event(event: Event, encoding: Encoding = "base64") -> str:
    """One event as JSON text: the same document as ``dumps(event_out(event))``, built
    directly (reads of thousands of events spend most of their time here)."""
    payload = event.payload
    payload_json = ""
    if encoding == "text":
        try:
            payload_json = _encode_string(payload.decode("utf-8")) + ',"encoding":"text"'
        except UnicodeDecodeError:
            payload_json = ""  # not UTF-8: base64, and the event says so
    if not payload_json:
        payload_json = '"' + base64.b64encode(payload).decode("ascii") + '","encoding":"base64"'
    props = event.properties
    return (
        f'{{"offset":{event.offset},"timestamp":{event.timestamp},'
        f'"topic":{_topic_json(event.topic)},"payload":{payload_json},"qos":{event.qos},'
        f'"retain":{"true" if event.retain else "false"},'
        f'"properties":{"{}" if props is None else _encoder.encode(properties_out(props))}}}'
    )


def encode_events(events: Iterable[Event], encoding: Encoding = "base64") -> str:
    """A JSON array of events (see :func:`encode_event`)."""
    return "[" + ",".join([encode_event(event, encoding) for event in events]) + "]"


# -- events in ---------------------------------------------------------------------


def decode_payload(payload: str, encoding: Encoding) -> bytes:
    """A payload given as text or base64 -> bytes; :class:`PayloadError` if it is neither."""
    if encoding == "text":
        try:
            return payload.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate escaped in the JSON
            raise PayloadError(f"payload is not valid Unicode text: {exc.reason}") from None
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PayloadError(f"payload is not valid base64: {exc}") from None


def _check_text(text: str, what: str) -> None:
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise PayloadError(f"{what} is not valid Unicode text: {exc.reason}") from None
    if size > 65_535:
        raise PayloadError(f"{what} is {size} bytes long; the limit is 65535")
