from __future__ import annotations

import datetime as dt

import pytest

from tidelog.engine.positions import Position, parse_position, parse_time
from tidelog.errors import InvalidPositionError


def test_parse_positions() -> None:
    assert parse_position("earliest") == Position("earliest")
    assert parse_position("latest") == Position("latest")
    assert parse_position("offset:42") == Position("offset", 42)
    assert parse_position(7) == Position("offset", 7)
    assert parse_position("time:1700000000000") == Position("time", 1_700_000_000_000)
    assert parse_position("time:2023-11-14T22:13:20Z") == Position("time", 1_700_000_000_000)
    assert parse_position("time:2023-11-14T23:13:20+01:00") == Position("time", 1_700_000_000_000)
    moment = dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC)
    assert parse_position(moment) == Position("time", 1_700_000_000_000)
    assert parse_time("2023-11-14T22:13:20.5Z") == 1_700_000_000_500


@pytest.mark.parametrize(
    "bad", ["", "soon", "offset:", "offset:-1", "offset:x", "time:yesterday", -1, True, 1.5]
)
def test_bad_positions_are_refused(bad: object) -> None:
    with pytest.raises(InvalidPositionError):
        parse_position(bad)  # type: ignore[arg-type]
