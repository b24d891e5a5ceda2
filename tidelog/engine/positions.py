"""Start and end positions in the log: ``earliest``, ``latest``, ``offset:N``, ``time:T``.

A position names a place in the log without knowing its offset yet. It is
parsed once (:func:`parse_position`, errors are :class:`InvalidPositionError`)
and resolved against a log when used (:func:`resolve_position`), because
``latest`` and ``time:`` depend on what the log holds at that moment.

``time:`` accepts RFC 3339 (``2026-11-26T10:00:00Z``, ``...+01:00``; a time
without zone is UTC) or epoch milliseconds. It resolves to the first offset
whose timestamp is at or after that time (Kafka's ListOffsets), so as an end
position it excludes events at exactly that millisecond and later.
"""

from __future__ import annotations

import datetime as dt

import attrs

from tidelog.errors import InvalidPositionError, OffsetOutOfRangeError
from tidelog.storage import EventLog


@attrs.frozen
class Position:
    """A parsed position: kind is ``earliest``, ``latest``, ``offset`` or ``time``."""

    kind: str
    value: int = 0

    def __str__(self) -> str:
        if self.kind in ("earliest", "latest"):
            return self.kind
        return f"{self.kind}:{self.value}"


PositionLike = str | int | dt.datetime | Position
"""What the public API accepts wherever it takes a position."""

EARLIEST = Position("earliest")
LATEST = Position("latest")


def parse_time(text: str) -> int:
    """RFC 3339 or epoch milliseconds -> epoch milliseconds."""
    text = text.strip()
    if _is_integer(text.removeprefix("-")):
        return _bounded(int(text), f"time {text!r}")
    try:
        moment = dt.datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise InvalidPositionError(
            f"time {text!r}: expected RFC 3339 (2026-11-26T10:00:00Z) or epoch milliseconds"
        ) from None
    return datetime_to_ms(moment)


MAX_INTEGER = 2**63 - 1
"""Offsets and times are signed 64-bit integers in storage."""


def _is_integer(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also accepts ``"³"``), short enough for int()."""
    return 0 < len(text) <= 19 and text.isascii() and text.isdigit()


def _bounded(value: int, what: str) -> int:
    if abs(value) > MAX_INTEGER:
        raise InvalidPositionError(f"{what} is out of range")
    return value


def datetime_to_ms(moment: dt.datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def parse_position(value: PositionLike) -> Position:
    """Parse a position given as text, an int offset, a datetime or a Position."""
    if isinstance(value, Position):
        return value
    if isinstance(value, bool):
        raise InvalidPositionError(f"position {value!r} is not a position")
    if isinstance(value, int):
        if value < 0:
            raise InvalidPositionError(f"offset {value} is negative")
        return Position("offset", _bounded(value, f"offset {value}"))
    if isinstance(value, dt.datetime):
        return Position("time", datetime_to_ms(value))
    if not isinstance(value, str):
        raise InvalidPositionError(f"position {value!r} is not a position")
    text = value.strip()
    if text in ("earliest", "latest"):
        return Position(text)
    kind, sep, rest = text.partition(":")
    if sep and kind == "offset":
        if not _is_integer(rest):
            raise InvalidPositionError(f"position {value!r}: offset must be a non-negative integer")
        return Position("offset", _bounded(int(rest), f"position {value!r}"))
    if sep and kind == "time":
        return Position("time", parse_time(rest))
    raise InvalidPositionError(
        f"position {value!r}: expected earliest, latest, offset:<N> or time:<RFC 3339 | epoch ms>"
    )


async def resolve_position(
    log: EventLog, position: Position, *, latest: int | None = None, end: bool = False
) -> int:
    """The offset a start position names now. ``latest`` overrides the log's end (the
    engine passes the end of what it has fanned out, so a new live subscriber starts there).

    The rule for a start at or past the end, the same in every API (docs/engine.md,
    "Positions"): ``offset:N`` with N at most the log's next offset is kept (N equal to
    it waits for the next event); past it, :class:`OffsetOutOfRangeError`. ``time:T``
    after the last event resolves to the next offset: nothing to replay, the next event
    comes live. An ``end`` position (exclusive) may lie anywhere past the end.
    """
    state = await log.state()
    if position.kind == "offset":
        if position.value > state.next_offset and not end:
            raise OffsetOutOfRangeError(
                f"offset {position.value} is past the end of the log "
                f"(the next event gets offset {state.next_offset})"
            )
        return position.value
    if position.kind == "time":
        return await log.offset_for_time(position.value)
    if position.kind == "earliest":
        return state.first_offset
    return state.next_offset if latest is None else latest
