"""The JSON shapes of the REST and WebSocket APIs, and the conversions to and from events.

An event goes out as::

    {"offset": 7, "timestamp": 1764151200000, "topic": "devices/42/temp",
     "payload": "MjEuNQ==", "encoding": "base64", "qos": 1, "retain": false,
     "properties": {"content_type": "text/plain"}}

Payloads are base64 unless the caller asked for ``encoding=text``; even then a
payload that is not valid UTF-8 goes out as base64 and its ``encoding`` says so,
so a client must always look at ``encoding``. In ``properties``,
``correlation_data`` (bytes) is always base64; everything else is as stored.

Hot paths (reads of thousands of events) build plain dicts and serialize them
with :func:`dumps`; the pydantic models below describe the same shapes for the
OpenAPI document and validate what clients send.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tidelog.storage import Event, NewEvent, Properties

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


class PropertiesIn(BaseModel):
    """MQTT 5 style properties of an event to publish (all optional)."""

    model_config = ConfigDict(extra="forbid")

    payload_format: Annotated[int, Field(ge=0, le=1)] | None = None
    message_expiry: Annotated[int, Field(ge=0, le=0xFFFFFFFF)] | None = None
    content_type: Annotated[str, Field(max_length=65535)] | None = None
    response_topic: Annotated[str, Field(max_length=65535)] | None = None
    correlation_data: Annotated[str, Field(description="base64")] | None = None
    user_properties: list[Annotated[list[str], Field(min_length=2, max_length=2)]] = Field(
        default_factory=list, description="[[key, value], ...]"
    )

    def to_properties(self) -> Properties | None:
        """:class:`Properties`, or None when nothing is set; PayloadError on bad base64."""
        data = self.model_dump(exclude_none=True)
        for key in ("content_type", "response_topic"):
            if key in data:
                _check_text(data[key], key)
        for pair in data.get("user_properties", ()):
            for text in pair:
                _check_text(text, "user property")
        if "correlation_data" in data:
            data["correlation_data"] = decode_payload(data["correlation_data"], "base64")
            if len(data["correlation_data"]) > 65_535:
                raise PayloadError("correlation_data is longer than 65535 bytes")
        if not data.get("user_properties"):
            data.pop("user_properties", None)
        else:
            data["user_properties"] = [tuple(pair) for pair in data["user_properties"]]
        if not data:
            return None
        return Properties.from_dict(data)


class EventIn(BaseModel):
    """One event of a batch publish."""

    model_config = ConfigDict(extra="forbid")

    topic: str
    payload: str
    encoding: Encoding = "base64"
    qos: Annotated[int, Field(ge=0, le=2)] = 0
    retain: bool = False
    properties: PropertiesIn | None = None

    def to_new_event(self) -> NewEvent:
        props = self.properties.to_properties() if self.properties is not None else None
        return NewEvent(
            self.topic, decode_payload(self.payload, self.encoding), self.qos, self.retain, props
        )


class BatchIn(BaseModel):
    """``POST /v1/events``: publish these, all or nothing, in one durable commit."""

    model_config = ConfigDict(extra="forbid")

    events: Annotated[list[EventIn], Field(min_length=1, max_length=MAX_BATCH_EVENTS)]


class CursorIn(BaseModel):
    """``PUT /v1/cursors/{name}``."""

    model_config = ConfigDict(extra="forbid")

    filter: str | None = Field(
        default=None, description="MQTT topic filter; null means every topic"
    )
    start: str = Field(
        default="latest",
        description="earliest, latest, offset:<N> or time:<RFC 3339 | epoch ms>",
    )
    ack_policy: Literal["cumulative", "explicit", "none"] | None = Field(
        default=None,
        description="cumulative (commits move one position; the default), explicit "
        "(fetches lease events to members, settled per event) or none (a fetch moves "
        "the cursor); docs/consumers.md",
    )
    ack_wait: float | None = Field(
        default=None, description="explicit: seconds a fetched event stays leased (30)"
    )
    backoff: list[float] | None = Field(
        default=None,
        description="explicit: seconds an event waits before its n-th redelivery "
        "(the last repeats)",
    )
    max_deliver: int | None = Field(
        default=None, description="explicit: deliveries before an event is a dead letter"
    )
    dead_letter_topic: str | None = Field(
        default=None, description="explicit: where dead letters go ($DLQ/<cursor name>)"
    )
    max_leased: int | None = Field(
        default=None, description="explicit: events handed out and not acknowledged at once"
    )

    def consumer_options(self) -> dict[str, Any] | None:
        """The consumer options given (None when the body names none)."""
        given = self.model_dump(exclude={"filter", "start"}, exclude_unset=True)
        return {k: v for k, v in given.items() if v is not None} if given else None


class OffsetsIn(BaseModel):
    """``POST /v1/cursors/{name}/ack``, ``/nak``, ``/progress``: offsets to settle."""

    model_config = ConfigDict(extra="forbid")

    offsets: Annotated[list[Annotated[int, Field(ge=0, le=2**63 - 1)]], Field(max_length=10_000)]
    delay: float | None = Field(
        default=None,
        ge=0,
        le=365 * 86400,
        description="nak only: seconds before redelivery (default: the backoff)",
    )


class SettledOut(BaseModel):
    settled: int = Field(description="how many of the offsets were pending")
    position: int
    pending: int


class CommitIn(BaseModel):
    """``POST /v1/cursors/{name}/commit``: the next offset to process."""

    model_config = ConfigDict(extra="forbid")

    offset: Annotated[int, Field(ge=0, le=2**63 - 1)]


# -- documented response shapes (the handlers build dicts of the same shape) ---------


class EventOut(BaseModel):
    offset: int
    timestamp: int = Field(description="ms since the epoch, assigned by the broker")
    topic: str
    payload: str
    encoding: Encoding
    qos: int
    retain: bool
    properties: dict[str, Any]


class Stored(BaseModel):
    offset: int
    timestamp: int


class BatchStored(BaseModel):
    events: list[Stored]


class EventsPage(BaseModel):
    events: list[EventOut]
    next_offset: int = Field(description="where the next read continues")


class CursorPage(EventsPage):
    skipped: int = Field(
        description="offsets retention removed before the cursor reached them (this fetch)"
    )


class TopicOut(BaseModel):
    topic: str
    count: int


class TopicsOut(BaseModel):
    topics: list[TopicOut]


class OffsetOut(BaseModel):
    time: int = Field(description="the time asked for, in ms since the epoch")
    offset: int = Field(description="the first offset at or after that time (the end if none)")


class CursorOut(BaseModel):
    name: str
    owner: str = Field(description="the user the cursor belongs to (anonymous clients: anonymous)")
    filter: str | None
    position: int = Field(description="the next offset to process")
    lag: int = Field(description="offsets between the position and the head of the log")
    pending: int = Field(
        description="events matching the filter that are not yet acknowledged "
        "(from the position to the head)"
    )
    ack_policy: str = "cumulative"
    ack_wait: float | None = None
    backoff: list[float] | None = None
    max_deliver: int | None = None
    dead_letter_topic: str | None = None
    max_leased: int | None = None
    leased: int | None = Field(default=None, description="explicit: events leased now")
    redelivered: int | None = Field(default=None, description="explicit: redeliveries so far")
    dead_lettered: int | None = Field(default=None, description="explicit: dead letters so far")


class CursorsOut(BaseModel):
    cursors: list[CursorOut]


class Health(BaseModel):
    status: str


class Problem(BaseModel):
    """RFC 9457 problem details (``application/problem+json``)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str = Field(description="a stable machine-readable error code")
    errors: list[dict[str, Any]] | None = None
