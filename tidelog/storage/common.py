"""Helpers every backend shares: batch preparation, cursor metadata, filtered scans."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tidelog.errors import LogClosedError, OffsetOutOfRangeError, RecordTooLargeError, StorageError
from tidelog.storage.records import NewEvent, encode_records
from tidelog.topics import validate_topic_filter, validate_topic_name

MAX_SCAN_PER_READ = 200_000
"""A filtered read examines at most this many records before returning (it may
return fewer events than ``limit``; ``next_offset`` says where to go on), so a
read for a rare topic never blocks the loop for long."""


_valid_topics: dict[str, bytes] = {}
"""Topic names already validated, with their UTF-8 bytes (bounded): logs repeat a
few topics millions of times."""


def check_event(index: int, event: NewEvent) -> None:
    """Refuse an invalid event (``index``: its place in the batch, for the message)."""
    if not isinstance(event, NewEvent):
        raise TypeError(f"append() takes NewEvent objects, got {type(event).__name__}")
    if event.topic not in _valid_topics:
        validate_topic_name(event.topic)
        if len(_valid_topics) < 100_000:
            _valid_topics[event.topic] = event.topic.encode("utf-8")
    if event.qos not in (0, 1, 2):
        raise ValueError(f"event {index}: qos must be 0, 1 or 2, not {event.qos!r}")


def encode_batch(events: Sequence[NewEvent], timestamp: int, max_record_bytes: int) -> list[bytes]:
    """Validate and encode a batch; raise before anything is stored if one record is bad."""
    records = encode_records(events, timestamp, check_event, _valid_topics)
    if max(map(len, records), default=0) > max_record_bytes:
        for index, record in enumerate(records):
            if len(record) > max_record_bytes:
                raise RecordTooLargeError(
                    f"event {index} on {events[index].topic!r} is {len(record)} bytes encoded; "
                    f"the limit (max_record_bytes) is {max_record_bytes}"
                )
    return records


def check_filter(topic_filter: str | None) -> str | None:
    """Validate an optional read filter (``None`` reads everything, ``$``-topics included)."""
    if topic_filter is None:
        return None
    return validate_topic_filter(topic_filter)


def check_start(start: int, first: int, next_offset: int) -> int:
    """Clamp a read start to the first stored offset; refuse one past the end."""
    if start < 0:
        raise OffsetOutOfRangeError(f"offset {start} is negative")
    if start > next_offset:
        raise OffsetOutOfRangeError(f"offset {start} is past the end of the log ({next_offset})")
    return max(start, first)


def dump_metadata(metadata: dict[str, Any]) -> bytes:
    """Cursor metadata as stored: compact JSON (it is small, and must stay readable)."""
    try:
        return json.dumps(metadata, separators=(",", ":"), sort_keys=True).encode()
    except (TypeError, ValueError) as exc:
        raise StorageError(f"cursor metadata must be JSON-serializable: {exc}") from exc


def load_metadata(raw: bytes) -> dict[str, Any]:
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise StorageError("cursor metadata is not a JSON object")
    return value


def check_open(closed: bool) -> None:
    if closed:
        raise LogClosedError("the log is closed")
