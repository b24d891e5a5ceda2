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

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tidelog.api.event_json import (
    DEFAULT_READ_BYTES as DEFAULT_READ_BYTES,
)
from tidelog.api.event_json import (
    DEFAULT_READ_LIMIT as DEFAULT_READ_LIMIT,
)
from tidelog.api.event_json import (
    MAX_BATCH_EVENTS as MAX_BATCH_EVENTS,
)
from tidelog.api.event_json import (
    MAX_READ_BYTES as MAX_READ_BYTES,
)
from tidelog.api.event_json import (  # re-exported: the event JSON lives there
    MAX_READ_LIMIT as MAX_READ_LIMIT,
)
from tidelog.api.event_json import (
    MAX_WAIT_MS as MAX_WAIT_MS,
)
from tidelog.api.event_json import (
    Encoding as Encoding,
)
from tidelog.api.event_json import (
    PayloadError as PayloadError,
)
from tidelog.api.event_json import (
    _check_text as _check_text,
)
from tidelog.api.event_json import (
    decode_payload as decode_payload,
)
from tidelog.api.event_json import (
    dumps as dumps,
)
from tidelog.api.event_json import (
    encode_event as encode_event,
)
from tidelog.api.event_json import (
    encode_events as encode_events,
)
from tidelog.api.event_json import (
    event_out as event_out,
)
from tidelog.api.event_json import (
    events_out as events_out,
)
from tidelog.api.event_json import (
    payload_out as payload_out,
)
from tidelog.api.event_json import (
    properties_out as properties_out,
)
from tidelog.storage import NewEvent, Properties


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
    max_leased_per_member: int | None = Field(
        default=None,
        description="explicit: events one member holds leased at once (default: no limit "
        "but max_leased)",
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
    last_offset: int = Field(description="the offset of the topic's newest stored event")
    last_event: EventOut | None = Field(
        default=None,
        description="with last=true: the newest stored event (null if retention just removed it)",
    )


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
    max_leased_per_member: int | None = None
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
