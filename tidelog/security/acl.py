"""Topic access control: who may publish, subscribe (live) and read (replay, cursors).

ACL file syntax (one rule a line, ``#`` starts a comment)::

    user alice                  # the rules below apply to user alice
    allow all        alice/#
    deny  read       alice/secret/#
    anonymous                   # ... to clients without a user name
    allow subscribe  public/#
    all                         # ... to every client (anonymous included)
    allow publish,subscribe devices/%c/#

A rule is ``allow|deny RIGHTS PATTERN``: RIGHTS is ``all`` or a comma-separated
list of ``publish``, ``subscribe``, ``read`` and ``link`` (mesh links; ``all``
does not include it); PATTERN is an MQTT topic
filter in which ``%u`` is the user name and ``%c`` the client id. Rules before
the first section header belong to ``all``. The rules that apply to a client
are those of ``all``, plus those of its ``user`` section (or ``anonymous``).

Decisions (documented in docs/security.md):

* A **topic** is allowed for a right when some applicable ``allow`` rule for
  that right matches it and no ``deny`` rule for it matches it (deny wins, the
  order of rules does not matter). Matching is MQTT matching, so a rule ``#``
  does not reach ``$``-topics: those need a rule naming them.
* A **subscription filter** (or read filter) is granted when some ``allow``
  rule *covers* it (every topic the filter can match is matched by the rule:
  compared level by level, ``#`` covers any rest, ``+`` covers one level that
  is not ``#``, a literal only itself) and no ``deny`` rule covers it. When a
  ``deny`` rule merely overlaps the filter, the subscription is granted and
  every event is checked against the topic rule before delivery.
* ``%u`` / ``%c`` substitution: a rule naming a value the client lacks does not
  apply; a value containing ``/``, ``+`` or ``#`` makes an ``allow`` rule not
  apply and a ``deny`` rule apply to every topic (fail closed).
* Without an ACL file everything is allowed except subscribing to or reading
  ``$SYS/...``. In both cases ``SecurityConfig.sys_users`` may read ``$SYS``;
  without ``sys_users``, a server bound to loopback only that allows anonymous
  clients lets every client read it (every client is local there, as with
  mosquitto's default and EMQX's localhost rule; :func:`sys_open_to_all`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from pathlib import Path

import attrs

from tidelog.errors import InvalidTopicError
from tidelog.security.errors import NotAuthorizedError, SecurityConfigError
from tidelog.topics import topic_matches, validate_topic_filter


class Right(enum.Flag):
    PUBLISH = enum.auto()
    SUBSCRIBE = enum.auto()
    """Live delivery of new events (MQTT SUBSCRIBE, WS/SSE from ``latest``)."""
    READ = enum.auto()
    """History: reads and replay from an offset or time, cursors."""
    ALL = PUBLISH | SUBSCRIBE | READ
    """What ``all`` grants in an ACL file (not LINK)."""
    LINK = enum.auto()
    """Mesh links (``tidelog.mesh``): pull the filter's events from this node over a
    link, and push events on those topics into it. Never part of ``all``."""


class Grant(enum.Enum):
    DENIED = 0
    FULL = 1
    """Every topic the filter can match is allowed."""
    PER_TOPIC = 2
    """Granted, but each event's topic must be checked (a deny rule overlaps)."""


@attrs.frozen
class Principal:
    """Who is asking: a user name (None when anonymous) and, where known, a client id."""

    user: str | None = None
    client_id: str | None = None

    def with_client_id(self, client_id: str | None) -> Principal:
        return attrs.evolve(self, client_id=client_id)


ANONYMOUS = Principal()

ALL_SECTION = "all"
ANONYMOUS_SECTION = "anonymous"
SYS_PREFIX = "$SYS"


@attrs.frozen
class Rule:
    allow: bool
    rights: Right
    pattern: str
    line: int = 0


# -- filter geometry ---------------------------------------------------------------------


def _dollar_mismatch(a: list[str], b: list[str]) -> bool:
    """A leading wildcard never meets a ``$`` first level."""
    return (a[0] in ("+", "#") and b[0].startswith("$")) or (
        b[0] in ("+", "#") and a[0].startswith("$")
    )


def covers(pattern: str, topic_filter: str) -> bool:
    """True if every topic matched by ``topic_filter`` is matched by ``pattern``."""
    p, f = pattern.split("/"), topic_filter.split("/")
    if p[0] in ("+", "#") and f[0].startswith("$"):
        return False
    for index, level in enumerate(p):
        if level == "#":
            return True
        if index >= len(f):
            return False
        other = f[index]
        if level == "+":
            if other == "#":
                return False
            continue
        if other in ("+", "#") or other != level:
            return False
    return len(p) == len(f)


def overlaps(a: str, b: str) -> bool:
    """True if some topic is matched by both filters."""
    x, y = a.split("/"), b.split("/")
    if _dollar_mismatch(x, y):
        return False
    for index in range(max(len(x), len(y))):
        left = x[index] if index < len(x) else None
        right = y[index] if index < len(y) else None
        if left == "#" or right == "#":
            return True
        if left is None or right is None:
            return False
        if left == "+" or right == "+" or left == right:
            continue
        return False
    return True


# -- policies ------------------------------------------------------------------------------

_EVERYTHING = object()
"""A substituted deny pattern that matches every topic (fail closed)."""


def _substitute(pattern: str, principal: Principal) -> str | object | None:
    """The pattern for this principal; None if the rule does not apply; _EVERYTHING
    if a substituted value is unsafe (see the module docs)."""
    if "%" not in pattern:
        return pattern
    for marker, value in (("%u", principal.user), ("%c", principal.client_id)):
        if marker in pattern:
            if not value:
                return None
            if any(ch in value for ch in "/+#"):
                return _EVERYTHING
            pattern = pattern.replace(marker, value)
    return pattern


class Policy:
    """Decides topic access. Without an ACL file: everything but reading ``$SYS``."""

    def __init__(self, sys_users: Iterable[str] = (), *, sys_open: bool = False) -> None:
        self.sys_users = frozenset(sys_users)
        self.sys_open = sys_open
        """Every client may read ``$SYS`` (see :func:`sys_open_to_all`)."""

    def _sys_reader(self, principal: Principal, right: Right) -> bool:
        if right not in Right.SUBSCRIBE | Right.READ:
            return False
        return self.sys_open or (principal.user is not None and principal.user in self.sys_users)

    def allows(self, principal: Principal, right: Right, topic: str) -> bool:
        if topic.split("/", 1)[0] == SYS_PREFIX and right in Right.SUBSCRIBE | Right.READ:
            return self._sys_reader(principal, right)
        return True

    def grant(self, principal: Principal, right: Right, topic_filter: str) -> Grant:
        if topic_filter.split("/", 1)[0] == SYS_PREFIX and right in Right.SUBSCRIBE | Right.READ:
            return Grant.FULL if self._sys_reader(principal, right) else Grant.DENIED
        return Grant.FULL


class ACL(Policy):
    """The rules of an ACL file (see the module docs)."""

    def __init__(
        self,
        sections: dict[str, list[Rule]],
        sys_users: Iterable[str] = (),
        *,
        sys_open: bool = False,
    ) -> None:
        super().__init__(sys_users, sys_open=sys_open)
        self.sections = sections

    @classmethod
    def load(
        cls, path: str | Path, sys_users: Iterable[str] = (), *, sys_open: bool = False
    ) -> ACL:
        try:
            text = Path(path).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SecurityConfigError(f"cannot read ACL file {path}: {exc}") from None
        return cls(parse_acl(text, str(path)), sys_users, sys_open=sys_open)

    def _rules(self, principal: Principal, right: Right) -> Iterable[tuple[bool, object]]:
        sections = [self.sections.get(ALL_SECTION, [])]
        if principal.user is None:
            sections.append(self.sections.get(ANONYMOUS_SECTION, []))
        else:
            sections.append(self.sections.get(f"user {principal.user}", []))
        if self._sys_reader(principal, right):
            yield True, f"{SYS_PREFIX}/#"
        for rules in sections:
            for rule in rules:
                if right in rule.rights:
                    pattern = _substitute(rule.pattern, principal)
                    if pattern is None or (pattern is _EVERYTHING and rule.allow):
                        continue
                    yield rule.allow, pattern

    def allows(self, principal: Principal, right: Right, topic: str) -> bool:
        allowed = False
        for allow, pattern in self._rules(principal, right):
            matched = pattern is _EVERYTHING or topic_matches(pattern, topic)  # type: ignore[arg-type]
            if matched:
                if not allow:
                    return False
                allowed = True
        return allowed

    def grant(self, principal: Principal, right: Right, topic_filter: str) -> Grant:
        granted = False
        overlapped = False
        for allow, pattern in self._rules(principal, right):
            if pattern is _EVERYTHING:
                return Grant.DENIED
            assert isinstance(pattern, str)
            if allow:
                granted = granted or covers(pattern, topic_filter)
            elif covers(pattern, topic_filter):
                return Grant.DENIED
            elif overlaps(pattern, topic_filter):
                overlapped = True
        if not granted:
            return Grant.DENIED
        return Grant.PER_TOPIC if overlapped else Grant.FULL


_RIGHT_NAMES = {
    "publish": Right.PUBLISH,
    "subscribe": Right.SUBSCRIBE,
    "read": Right.READ,
    "link": Right.LINK,
}


def parse_acl(text: str, source: str = "<acl>") -> dict[str, list[Rule]]:
    """Sections (``all``, ``anonymous``, ``user NAME``) -> rules; errors name the line."""
    sections: dict[str, list[Rule]] = {}
    current = ALL_SECTION
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip() if raw.lstrip().startswith("#") else raw.strip()
        if not line:
            continue
        words = line.split()
        where = f"{source}:{number}"
        if words[0] == "user":
            if len(words) != 2:
                raise SecurityConfigError(f"{where}: expected 'user NAME'")
            current = f"user {words[1]}"
            sections.setdefault(current, [])
            continue
        if words[0] in (ALL_SECTION, ANONYMOUS_SECTION) and len(words) == 1:
            current = words[0]
            sections.setdefault(current, [])
            continue
        if words[0] not in ("allow", "deny") or len(words) != 3:
            raise SecurityConfigError(
                f"{where}: expected 'allow|deny RIGHTS PATTERN', 'user NAME', "
                f"'anonymous' or 'all', got {line!r}"
            )
        rights = Right(0)
        for name in words[1].split(","):
            if name == "all":
                rights |= Right.ALL
            elif name in _RIGHT_NAMES:
                rights |= _RIGHT_NAMES[name]
            else:
                raise SecurityConfigError(
                    f"{where}: unknown right {name!r} (publish, subscribe, read, link or all)"
                )
        pattern = words[2]
        try:
            validate_topic_filter(pattern.replace("%u", "u").replace("%c", "c"))
        except InvalidTopicError as exc:
            raise SecurityConfigError(f"{where}: {exc}") from None
        sections.setdefault(current, []).append(Rule(words[0] == "allow", rights, pattern, number))
    return sections


ANONYMOUS_USER = "anonymous"
"""The one user every anonymous client is (owner of their cursors, quotas)."""


class Access:
    """One client's view of the policy, with a small cache of per-topic decisions.

    ``admin``: the user is in ``security.admin_users`` (sees and manages every
    user's resources and all metadata).
    """

    CACHE_SIZE = 4096

    def __init__(self, policy: Policy, principal: Principal, *, admin: bool = False) -> None:
        self.policy = policy
        self.principal = principal
        self.admin = admin
        self._open = type(policy) is Policy
        self._cache: dict[tuple[int, str], bool] = {}
        """Decisions by (the right's value, topic): an ``enum.Flag`` member hashes in
        Python (about 200 ns a lookup on every publish), its int value does not."""

    @property
    def user(self) -> str | None:
        return self.principal.user

    @property
    def owner(self) -> str:
        """The user name resources of this client belong to (``anonymous`` without one)."""
        return self.principal.user or ANONYMOUS_USER

    @property
    def sees_all(self) -> bool:
        """True for ``sys_users`` and ``admin_users``: every topic's metadata (names,
        counts) reaches them, whatever the ACL says about the topics' events."""
        user = self.principal.user
        return self.admin or (user is not None and user in self.policy.sys_users)

    def may_manage(self, owner: str) -> bool:
        """True if this client may see and change a resource ``owner`` owns."""
        return self.admin or owner == self.owner

    def sees_topic(self, topic: str) -> bool:
        """True if the topic's name and counts may reach this client (metadata follows
        the ACL's read right)."""
        return self.sees_all or self.allows(Right.READ, topic)

    def allows(self, right: Right, topic: str) -> bool:
        if self._open and not topic.startswith("$"):
            return True
        key = (right._value_, topic)
        decision = self._cache.get(key)
        if decision is None:
            if len(self._cache) >= self.CACHE_SIZE:
                self._cache.clear()
            decision = self._cache[key] = self.policy.allows(self.principal, right, topic)
        return decision

    def grant(self, right: Right, topic_filter: str) -> Grant:
        return self.policy.grant(self.principal, right, topic_filter)

    def check_topic(self, right: Right, topic: str) -> None:
        """Raise :class:`NotAuthorizedError` unless the topic is allowed."""
        if not self.allows(right, topic):
            raise _denied(right, topic)

    def check_filter(self, right: Right, topic_filter: str) -> Grant:
        """The grant for a filter; :class:`NotAuthorizedError` if denied."""
        grant = self.grant(right, topic_filter)
        if grant is Grant.DENIED:
            raise _denied(right, topic_filter)
        return grant


def _denied(right: Right, what: str) -> NotAuthorizedError:
    name = (right.name or "access").lower()
    return NotAuthorizedError(f"not authorized to {name} {what!r}")


def sys_open_to_all(sys_users: Iterable[str], anonymous: bool, loopback_only: bool) -> bool:
    """Whether every client may read ``$SYS``: only when no ``sys_users`` are named, and
    the server allows anonymous clients and listens on loopback only (so whoever
    connects is on this machine). Anywhere else ``$SYS`` stays closed."""
    return not list(sys_users) and anonymous and loopback_only
