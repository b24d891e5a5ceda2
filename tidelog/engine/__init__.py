"""The trio core: group commit, routing and fan-out, cursors, replay, retained
messages, sessions and wills. See :mod:`tidelog.engine.broker`."""

from tidelog.engine.broker import (
    Broker,
    BrokerOptions,
    BrokerStatistics,
    Subscriber,
    open_broker,
)
from tidelog.engine.cursors import Cursor
from tidelog.engine.fanout import Delivery, Feed, FeedSubscription
from tidelog.engine.positions import Position, parse_position
from tidelog.engine.sessions import NEVER_EXPIRES, Session, SessionSubscription
from tidelog.errors import CursorExistsError, CursorNotFoundError, InvalidCursorNameError

__all__ = [
    "NEVER_EXPIRES",
    "Broker",
    "BrokerOptions",
    "BrokerStatistics",
    "Cursor",
    "CursorExistsError",
    "CursorNotFoundError",
    "Delivery",
    "Feed",
    "FeedSubscription",
    "InvalidCursorNameError",
    "Position",
    "Session",
    "SessionSubscription",
    "Subscriber",
    "open_broker",
    "parse_position",
]
