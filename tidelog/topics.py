"""MQTT topic names and topic filters: validation and matching.

Shared by the storage layer (filtered reads), the engine (routing) and the
protocol adapters, so it depends on nothing but :mod:`tidelog.errors`.

The rules are those of MQTT 3.1.1 section 4.7 and MQTT 5.0 section 4.7:

* names and filters are non-empty UTF-8, at most 65,535 bytes, without U+0000;
* ``+`` matches exactly one level and must fill its level;
* ``#`` matches its parent level and any number of children, must fill the
  last level;
* topic names carry no wildcards;
* a filter starting with a wildcard does not match a topic starting with ``$``
  (so ``#`` does not deliver ``$SYS/...``).

``$share/<group>/<filter>`` shared subscriptions are parsed by
:func:`parse_shared`; matching only ever sees the inner filter.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from tidelog.errors import InvalidTopicError

MAX_TOPIC_BYTES = 65_535
SHARED_PREFIX = "$share/"


def _check_common(text: str, what: str) -> None:
    if not text:
        raise InvalidTopicError(f"{what} must not be empty")
    if "\x00" in text:
        raise InvalidTopicError(f"{what} must not contain U+0000")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:  # lone surrogates
        raise InvalidTopicError(f"{what} is not valid UTF-8: {exc.reason}") from None
    if size > MAX_TOPIC_BYTES:
        raise InvalidTopicError(f"{what} is {size} bytes long; the limit is {MAX_TOPIC_BYTES}")


def validate_topic_name(topic: str) -> str:
    """Return ``topic`` if it is a valid topic name (no wildcards), else raise."""
    _check_common(topic, "topic name")
    if "+" in topic or "#" in topic:
        raise InvalidTopicError(f"topic name {topic!r} must not contain the wildcards + or #")
    return topic


def validate_topic_filter(topic_filter: str) -> str:
    """Return ``topic_filter`` if it is a valid (non-shared) filter, else raise."""
    _check_common(topic_filter, "topic filter")
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != last):
            raise InvalidTopicError(
                f"topic filter {topic_filter!r}: '#' must be the whole last level"
            )
        if "+" in level and level != "+":
            raise InvalidTopicError(f"topic filter {topic_filter!r}: '+' must fill a whole level")
    return topic_filter


def has_wildcards(topic_filter: str) -> bool:
    """True if the filter contains ``+`` or ``#``."""
    return "+" in topic_filter or "#" in topic_filter


def parse_shared(topic_filter: str) -> tuple[str | None, str]:
    """Split ``$share/<group>/<filter>`` into ``(group, filter)``; ``(None, f)`` otherwise.

    Validates both parts; raises :class:`InvalidTopicError` on a malformed share.
    """
    if not topic_filter.startswith(SHARED_PREFIX):
        return None, validate_topic_filter(topic_filter)
    rest = topic_filter[len(SHARED_PREFIX) :]
    group, sep, inner = rest.partition("/")
    if not sep or not group or not inner:
        raise InvalidTopicError(
            f"shared subscription {topic_filter!r} must be $share/<group>/<filter>"
        )
    if "+" in group or "#" in group:
        raise InvalidTopicError(f"shared subscription group {group!r} must not contain wildcards")
    return group, validate_topic_filter(inner)


Matcher = Callable[[str], bool]


@functools.lru_cache(maxsize=4096)
def compile_filter(topic_filter: str) -> Matcher:
    """Return a fast predicate ``topic -> bool`` for a validated filter.

    Cached: routing and filtered reads ask for the same few filters again and
    again. Exact filters compare strings, ``prefix/#`` compares prefixes, and
    only filters with ``+`` split the topic into levels.
    """
    validate_topic_filter(topic_filter)
    if not has_wildcards(topic_filter):
        return topic_filter.__eq__
    if topic_filter == "#":
        return _not_dollar
    levels = topic_filter.split("/")
    leading_wildcard = levels[0] in ("+", "#")
    if "+" not in topic_filter:  # "a/b/#": the parent "a/b" or anything under "a/b/"
        parent = topic_filter[:-2]
        prefix = topic_filter[:-1]
        return lambda topic: topic == parent or topic.startswith(prefix)
    multi = levels[-1] == "#"
    fixed = levels[:-1] if multi else levels
    count = len(fixed)

    def match(topic: str) -> bool:
        if leading_wildcard and topic.startswith("$"):
            return False
        parts = topic.split("/")
        if multi:
            if len(parts) < count:
                return False
        elif len(parts) != count:
            return False
        for want, have in zip(fixed, parts, strict=False):
            if want != "+" and want != have:
                return False
        return True

    return match


def _not_dollar(topic: str) -> bool:
    return not topic.startswith("$")


def topic_matches(topic_filter: str, topic: str) -> bool:
    """True if ``topic`` (a name) matches ``topic_filter`` (validated, non-shared)."""
    return compile_filter(topic_filter)(topic)


def literal_prefix(topic_filter: str) -> str:
    """The longest prefix every topic matching the filter starts with.

    ``"a/b/"`` for ``"a/b/+/c"``, but ``"a/b"`` for ``"a/b/#"``, which also matches
    the parent level ``"a/b"`` (MQTT 4.7.1.2). It lets an index keyed by topic seek
    straight to the candidates.
    """
    for index, char in enumerate(topic_filter):
        if char == "+":
            return topic_filter[:index]
        if char == "#":
            return topic_filter[: max(index - 1, 0)]
    return topic_filter
