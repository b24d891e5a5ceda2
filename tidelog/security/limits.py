"""Limits on what one client or user may make the broker hold (docs/security.md).

Two kinds, both options of ``[security]`` with defaults:

* **name maxima**: every name a client chooses (topic, filter, cursor name, client
  id, user property key, link and webhook names) has a longest length in UTF-8
  bytes. :meth:`Limits.check_name` raises :class:`NameTooLongError` past it
  (HTTP 400 ``name_too_long``; the MQTT layer maps it to the reason code of
  :attr:`NameTooLongError.reason_code`). The protocols' own maxima (MQTT's
  65,535-byte strings) apply on top.
* **per-user quotas**: cursors, retained messages, live subscriptions and
  persistent sessions one user may hold. :class:`UserQuotas` counts and refuses
  with :class:`QuotaExceededError` (HTTP 429 ``quota_exceeded``, MQTT 0x97
  Quota exceeded). Anonymous clients count as one user, ``anonymous``.

Nothing here does I/O: the listeners (REST, ``/v1/ws``, MQTT) call these checks
where a name or a resource enters, before any state is created.
"""

from __future__ import annotations

import contextlib
import enum
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from tidelog.errors import TidelogError
from tidelog.topics import validate_topic_name

if TYPE_CHECKING:
    from tidelog.security.config import SecurityConfig
    from tidelog.storage import NewEvent

MAX_NAME_BYTES = 65_535
"""No name maximum may be set above MQTT's longest string."""


class Name(enum.Enum):
    """A kind of client-chosen name; the value is its ``max_<value>_bytes`` option."""

    TOPIC = "topic"
    FILTER = "filter"
    CURSOR = "cursor_name"
    CLIENT_ID = "client_id"
    USER_PROPERTY_KEY = "user_property_key"
    LINK = "link_name"
    WEBHOOK = "webhook_name"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


NAME_REASON_CODES = {
    Name.TOPIC: 0x90,  # Topic Name invalid
    Name.FILTER: 0x8F,  # Topic Filter invalid
    Name.CLIENT_ID: 0x85,  # Client Identifier not valid
    Name.USER_PROPERTY_KEY: 0x95,  # Packet too large
}
"""The MQTT 5 reason code for a name past its maximum (0x99 Payload format / others:
the MQTT layer decides where a name does not arrive over MQTT)."""


class Quota(enum.Enum):
    """A per-user quota; the value is its ``max_<value>_per_user`` option."""

    CURSORS = "cursors"
    RETAINED = "retained"
    SUBSCRIPTIONS = "subscriptions"
    SESSIONS = "sessions"


class NameTooLongError(TidelogError, ValueError):
    """A client-chosen name is longer than its configured maximum (HTTP 400)."""

    def __init__(self, kind: Name, size: int, maximum: int) -> None:
        super().__init__(f"the {kind.label} is {size} bytes; the maximum is {maximum}")
        self.kind = kind
        self.size = size
        self.maximum = maximum

    @property
    def reason_code(self) -> int:
        """The MQTT 5 reason code to refuse it with."""
        return NAME_REASON_CODES.get(self.kind, 0x95)


class QuotaExceededError(TidelogError):
    """A user holds the most of something they may (HTTP 429, MQTT 0x97)."""

    reason_code = 0x97

    def __init__(self, quota: Quota, user: str, maximum: int) -> None:
        what = quota.value.replace("_", " ")
        super().__init__(f"user {user!r} holds the maximum of {maximum} {what}")
        self.quota = quota
        self.user = user
        self.maximum = maximum


class Limits:
    """The name maxima and quota sizes of one configuration."""

    def __init__(self, config: SecurityConfig) -> None:
        self._names = {kind: int(getattr(config, f"max_{kind.value}_bytes")) for kind in Name}
        self._quotas = {q: int(getattr(config, f"max_{q.value}_per_user")) for q in Quota}

    def maximum(self, kind: Name) -> int:
        return self._names[kind]

    def quota(self, quota: Quota) -> int:
        return self._quotas[quota]

    def check_name(self, kind: Name, value: str) -> str:
        """``value``, or :class:`NameTooLongError` if it is too long."""
        maximum = self._names[kind]
        if len(value) * 4 > maximum:  # cheap bound first: at most 4 bytes a character
            size = len(value.encode("utf-8", "surrogatepass"))
            if size > maximum:
                raise NameTooLongError(kind, size, maximum)
        return value

    def check_topic(self, topic: str) -> str:
        """A topic to publish to: its length, then that it is a valid topic name (so
        no quota counts a topic that will not be stored)."""
        self.check_name(Name.TOPIC, topic)
        return validate_topic_name(topic)

    def check_event(self, event: NewEvent) -> None:
        """The topic (:meth:`check_topic`) and the user property keys of an event."""
        self.check_topic(event.topic)
        props = event.properties
        if props is not None and props.user_properties:
            for key, _value in props.user_properties:
                self.check_name(Name.USER_PROPERTY_KEY, key)

    def check_events(self, events: Iterable[NewEvent]) -> None:
        for event in events:
            self.check_event(event)


class UserQuotas:
    """Counts what each user holds, per :class:`Quota`, and refuses past the limits.

    Counts live in memory. Cursors and sessions are stored with their owner, so a
    listener counts them from storage and calls :meth:`check` with the count;
    subscriptions are counted here (:meth:`acquire` / :meth:`release`, or
    :meth:`hold`); retained messages are counted here by :meth:`retain`, since the
    broker started (the owner of a retained topic is its last publisher).
    """

    MAX_RETAINED_OWNERS = 1_000_000
    """Retained topics remembered at most (bounded memory; beyond, the oldest owner is
    forgotten and its count released)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._counts: dict[Quota, Counter[str]] = {quota: Counter() for quota in Quota}
        self._retained_owner: dict[str, str] = {}

    def count(self, quota: Quota, user: str) -> int:
        return self._counts[quota][user]

    def check(self, quota: Quota, user: str, count: int | None = None) -> None:
        """Refuse one more if ``user`` holds ``count`` (default: the counted number)."""
        held = self._counts[quota][user] if count is None else count
        maximum = self.limits.quota(quota)
        if held >= maximum:
            raise QuotaExceededError(quota, user, maximum)

    def acquire(self, quota: Quota, user: str) -> None:
        """Count one more for ``user``; :class:`QuotaExceededError` at the limit."""
        self.check(quota, user)
        self._counts[quota][user] += 1

    def release(self, quota: Quota, user: str) -> None:
        counts = self._counts[quota]
        if counts[user] <= 1:
            counts.pop(user, None)
        else:
            counts[user] -= 1

    @contextlib.contextmanager
    def hold(self, quota: Quota, user: str) -> Iterator[None]:
        """:meth:`acquire` for the duration of the block."""
        self.acquire(quota, user)
        try:
            yield
        finally:
            self.release(quota, user)

    @contextlib.contextmanager
    def counted(self, quota: Quota, user: str) -> Iterator[None]:
        """Count one more for the block without refusing (after a :meth:`check` made
        at a point where a refusal could still be answered cleanly)."""
        self._counts[quota][user] += 1
        try:
            yield
        finally:
            self.release(quota, user)

    def retain(self, user: str, events: Iterable[NewEvent]) -> None:
        """Account the retained events of a publish by ``user`` (all or none): a
        retained message sets or replaces a topic's (counted for ``user``), an empty
        one clears it (released for its owner). :class:`QuotaExceededError` if the
        publish would take ``user`` past the quota."""
        new: dict[str, bool] = {}
        for event in events:
            if event.retain:
                new[event.topic] = bool(event.payload)
        if not new:
            return
        owners = self._retained_owner
        gained = sum(1 for topic, sets in new.items() if sets and owners.get(topic) != user)
        held = self._counts[Quota.RETAINED][user]
        maximum = self.limits.quota(Quota.RETAINED)
        if gained and held + gained > maximum:
            raise QuotaExceededError(Quota.RETAINED, user, maximum)
        for topic, sets in new.items():
            previous = owners.pop(topic, None)
            if previous is not None:
                self.release(Quota.RETAINED, previous)
            if sets:
                if len(owners) >= self.MAX_RETAINED_OWNERS:
                    oldest = next(iter(owners))
                    self.release(Quota.RETAINED, owners.pop(oldest))
                owners[topic] = user
                self._counts[Quota.RETAINED][user] += 1
