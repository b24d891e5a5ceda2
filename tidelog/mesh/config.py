"""``[node]`` and ``[[link]]``: how a node is named and which links it dials.

``[[link]]`` tables come from the TOML file (and later REST), never from the
environment or ``--set`` (CONTRACTS). The contract keys are ``name``, ``url``,
``pull``, ``push`` and ``mode``; the others (credentials, TLS, tuning) are
additions with defaults.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs

from tidelog.errors import InvalidTopicError
from tidelog.security.acl import overlaps
from tidelog.topics import validate_topic_filter

NODE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A node id: 1-64 characters, letters, digits, ``.``, ``_``, ``-`` (no ``/``, so it can
name a hop and an MQTT topic level)."""
MODES = ("local", "transit")
BRIDGES = ("mqtt5", "mqtt311")
DEFAULT_HOP_LIMIT = 8
LINKS_NAMESPACE = "links"
"""State namespace of the links created at run time (REST): name -> ``{"owner", "link"}``
(the link as a ``[[link]]`` table)."""


def node_id(value: Any) -> str:
    """a node id (1-64 of A-Z a-z 0-9 . _ -)"""
    if not isinstance(value, str) or not NODE_ID_PATTERN.fullmatch(value):
        raise ValueError(
            f"a node id is 1-64 letters, digits, '.', '_' or '-' (starting with a letter "
            f"or digit), not {value!r}"
        )
    return value


def optional_node_id(value: Any) -> str | None:
    """a node id, or off (a stable id stored in the data directory)"""
    if value is None or (isinstance(value, str) and value.lower() in ("", "off", "auto")):
        return None
    return node_id(value)


def _filters(value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key} must be a list of topic filters")
    for item in value:
        try:
            validate_topic_filter(item)
        except InvalidTopicError as exc:
            raise ValueError(f"{key}: {exc}") from None
    return tuple(value)


@attrs.frozen
class LinkConfig:
    """One ``[[link]]``: a link this node dials."""

    name: str
    url: str
    """``mqtt://host:port`` or ``mqtts://host:port`` (the remote's MQTT listener)."""
    pull: tuple[str, ...] = ()
    """Filters of the remote's events this node wants (read with this node's position)."""
    push: tuple[str, ...] = ()
    """Filters of this node's events the remote wants (the remote keeps the position)."""
    mode: str = "local"
    """``local``: forward only events that originated on the sending node; ``transit``:
    forward across links too (never back over the link an event came from)."""
    username: str | None = None
    password: str | None = None
    tls_ca: str | None = None
    """PEM file of the CA that signed the remote's certificate (mqtts://); default: the
    system's trust store."""
    tls_cert: str | None = None
    """Client certificate (PEM) for listeners that require one."""
    tls_key: str | None = None
    tls_server_name: str | None = None
    """Name checked against the remote's certificate (default: the URL's host)."""
    local_prefix: str = ""
    """Topic remapping: this node's side of every ``pull``/``push`` filter is
    ``local_prefix + filter`` (default: no prefix)."""
    remote_prefix: str = ""
    """The remote's side of every filter is ``remote_prefix + filter``: a pulled event
    ``remote_prefix + X`` is appended here as ``local_prefix + X``, a pushed one the
    other way round."""
    bridge: str | None = None
    """``mqtt5`` or ``mqtt311``: the remote is a plain MQTT broker (mosquitto, ...), and
    this node is its client (``tidelog.mesh.bridge``); None: a tidelog link."""
    interest: bool = False
    """Live interest: the remote sends, of the ``pull`` filters, only what subscriptions
    on this node (and, over transit links, on the nodes pulling from it) want."""
    push_interest: bool = False
    """Live interest for the push: this node pushes, of the ``push`` filters, only what
    subscriptions at the remote (and behind its transit links) want; off by default,
    since a remote that stores everything pushed for replay wants it all anyway."""
    push_qos: int = 1
    """Bridges: the QoS of what the bridge publishes to the remote (1, or 2: exactly
    once into the remote across reconnects, not across a crash of this node)."""
    hop_limit: int = DEFAULT_HOP_LIMIT
    """The most nodes an event may have passed through before this link (transit)."""
    batch_events: int = 1000
    """The most events in one ``$link/events`` batch."""
    window: int = 8
    """Batches in flight without acknowledgement (the credit each side grants)."""
    heartbeat_seconds: float = 2.0
    reconnect_seconds: float = 1.0
    """The longest wait between reconnect attempts (backoff starts at a tenth of it)."""

    @property
    def remapped(self) -> bool:
        return self.local_prefix != self.remote_prefix

    @property
    def remote_pull(self) -> tuple[str, ...]:
        """The ``pull`` filters in the remote's topics (what the remote reads)."""
        return tuple(self.remote_prefix + f for f in self.pull)

    @property
    def remote_push(self) -> tuple[str, ...]:
        """The ``push`` filters in the remote's topics (what the remote checks rights on)."""
        return tuple(self.remote_prefix + f for f in self.push)

    @property
    def local_pull(self) -> tuple[str, ...]:
        return tuple(self.local_prefix + f for f in self.pull)

    @property
    def local_push(self) -> tuple[str, ...]:
        """The ``push`` filters in this node's topics (what this node's source reads)."""
        return tuple(self.local_prefix + f for f in self.push)

    def to_local(self, topic: str) -> str | None:
        """A remote topic (or filter) as this node names it; None if it has no name here
        (the parent level of a prefix matched by ``prefix/#`` when the other prefix is
        empty)."""
        return remap(topic, self.remote_prefix, self.local_prefix)

    def to_remote(self, topic: str) -> str | None:
        """This node's topic (or filter) as the remote names it (see :meth:`to_local`)."""
        return remap(topic, self.local_prefix, self.remote_prefix)

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    def stored(self) -> dict[str, Any]:
        """The link as a ``[[link]]`` table (password included: what is persisted);
        :func:`parse_link` reads it back."""
        out = {
            field.name: getattr(self, field.name)
            for field in attrs.fields(LinkConfig)
            if getattr(self, field.name) is not None
        }
        out["pull"], out["push"] = list(self.pull), list(self.push)
        return out

    def shown(self) -> dict[str, Any]:
        """The link as ``config show`` and ``GET /v1/links`` show it (no password)."""
        out = self.stored()
        if self.password is not None:
            out["password"] = "********"
        return out


def remap(topic: str, old: str, new: str) -> str | None:
    """``topic`` (a name or filter) under prefix ``old`` moved under prefix ``new``.

    ``a/#`` also matches ``a`` itself, the parent level of prefix ``a/``: it maps to
    the new prefix without its ``/``, or to None when that is empty (no such topic)."""
    if topic.startswith(old):
        return new + topic[len(old) :]
    if old.endswith("/") and topic == old[:-1]:
        return new[:-1] if new.endswith("/") and len(new) > 1 else None
    return None


def _prefix(value: Any, key: str) -> str:
    """A topic prefix: no wildcards; prefix + a filter must be a valid filter."""
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    if "+" in value or "#" in value or "\x00" in value:
        raise ValueError(f"{key} {value!r}: a prefix has no wildcards")
    if value:
        try:
            validate_topic_filter(value + "x")
        except InvalidTopicError as exc:
            raise ValueError(f"{key}: {exc}") from None
    return value


_STRINGS = ("username", "password", "tls_ca", "tls_cert", "tls_key", "tls_server_name")


def parse_link(table: Any, where: str) -> LinkConfig:
    """One ``[[link]]`` table; ``ValueError`` names the key."""
    if not isinstance(table, Mapping):
        raise ValueError(f"{where}: expected a table")
    known = {field.name for field in attrs.fields(LinkConfig)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]} (known: {', '.join(sorted(known))})")
    for key in ("name", "url"):
        if not isinstance(table.get(key), str) or not table[key]:
            raise ValueError(f"{where}: {key} is required (a string)")
    name = table["name"]
    if not NODE_ID_PATTERN.fullmatch(name):
        raise ValueError(f"{where}: name {name!r}: 1-64 letters, digits, '.', '_' or '-'")
    url = urlsplit(table["url"])
    if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
        raise ValueError(f"{where}: url must be mqtt://host:port or mqtts://host:port")
    try:
        url.port  # noqa: B018  (raises on a bad port)
    except ValueError as exc:
        raise ValueError(f"{where}: url: {exc}") from None
    if url.username is not None or url.password is not None:
        # credentials in the URL would be shown in logs and GET /v1/links
        raise ValueError(
            f"{where}: url must not contain user:password@; use the username and password keys"
        )
    values: dict[str, Any] = {"name": name, "url": table["url"]}
    values["pull"] = _filters(table.get("pull", []), f"{where}: pull")
    values["push"] = _filters(table.get("push", []), f"{where}: push")
    mode = table.get("mode", "local")
    if mode not in MODES:
        raise ValueError(f"{where}: mode must be 'local' or 'transit', not {mode!r}")
    values["mode"] = mode
    for key in _STRINGS:
        if key in table:
            if not isinstance(table[key], str):
                raise ValueError(f"{where}: {key} must be a string")
            values[key] = table[key]
    for key, low, high in (
        ("hop_limit", 1, 64),
        ("batch_events", 1, 100_000),
        ("window", 1, 1000),
        ("push_qos", 1, 2),
    ):
        if key in table:
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{where}: {key} must be an integer {low}-{high}")
            values[key] = value
    for key in ("local_prefix", "remote_prefix"):
        if key in table:
            values[key] = _prefix(table[key], f"{where}: {key}")
    for key in ("interest", "push_interest"):
        if key in table:
            if not isinstance(table[key], bool):
                raise ValueError(f"{where}: {key} must be true or false")
            values[key] = table[key]
    if "bridge" in table:
        if table["bridge"] not in BRIDGES:
            raise ValueError(
                f"{where}: bridge must be 'mqtt5' or 'mqtt311', not {table['bridge']!r}"
            )
        for key in ("interest", "push_interest"):
            if values.get(key):
                raise ValueError(f"{where}: {key} needs a tidelog remote, not a bridge")
        values["bridge"] = table["bridge"]
        local_prefix = values.get("local_prefix", "")
        for pull in values["pull"]:
            if (local_prefix + pull).startswith("$"):
                raise ValueError(
                    f"{where}: pull {pull!r}: a bridge appends no '$' topics here "
                    "(local_prefix + pull must not start with '$')"
                )
        if table["bridge"] == "mqtt311":
            for pull in values["pull"]:
                for push in values["push"]:
                    if overlaps(pull, push):
                        raise ValueError(
                            f"{where}: pull {pull!r} overlaps push {push!r}: MQTT 3.1.1 has no "
                            "No-Local, so the remote would echo what the bridge pushes"
                        )
    elif values.get("push_qos", 1) != 1:
        raise ValueError(f"{where}: push_qos is for bridges (a tidelog link is exactly once)")
    for key in ("heartbeat_seconds", "reconnect_seconds"):
        if key in table:
            value = table[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{where}: {key} must be a positive number of seconds")
            values[key] = float(value)
    return LinkConfig(**values)


def parse_links(tables: Any, where: str = "[[link]]") -> tuple[LinkConfig, ...]:
    """Every ``[[link]]`` table; names must be unique on the node."""
    if not isinstance(tables, list):
        raise ValueError(f"{where}: expected an array of tables ([[link]])")
    links = tuple(parse_link(table, f"{where} #{index + 1}") for index, table in enumerate(tables))
    names = [link.name for link in links]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"{where}: link name {name!r} is used twice")
    return links
