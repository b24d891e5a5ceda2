"""A webhook's definition: the contract keys of ``PUT /v1/webhooks/{name}`` and
``[[webhook]]``, validated once, stored as JSON in the log's ``webhooks`` state.

Keys: ``url``, ``filter``, ``start``, ``secret`` (write-only), ``batch``,
``headers``, ``timeout``, ``concurrency``, and the retry schedule ``retries``
and ``retry_backoff``. :meth:`WebhookSpec.public` is what the API shows (never
the secret, and a URL's password masked: ``https://user:********@host/``).
"""

from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs

from tidelog.config import string_list
from tidelog.engine.positions import parse_position
from tidelog.errors import TidelogError
from tidelog.topics import validate_topic_filter
from tidelog.webhooks.signing import parse_secret

NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}")
MAX_BATCH = 1000
MAX_CONCURRENCY = 64
MAX_TIMEOUT = 300.0
MAX_RETRIES = 100
RESERVED_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "host",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "transfer-encoding",
        "connection",
    }
)
KEYS = (
    "url",
    "filter",
    "start",
    "secret",
    "batch",
    "headers",
    "timeout",
    "concurrency",
    "retries",
    "retry_backoff",
)


class WebhookError(TidelogError, ValueError):
    """A webhook definition that is not valid (HTTP 400)."""


def _number(data: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise WebhookError(f"{key} must be a number")
    if not low <= value <= high:
        raise WebhookError(f"{key} must be between {low} and {high}")
    return float(value)


def _integer(data: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise WebhookError(f"{key} must be an integer")
    if not low <= value <= high:
        raise WebhookError(f"{key} must be between {low} and {high}")
    return value


_DEFAULT_PORTS = {"http": 80, "https": 443}
MASK = "********"
_ESCAPES = ("%2e", "%2f", "%5c", "\\", ";")
"""What a path checked against an allow-list prefix may not hold: percent-encoded dots,
slashes and backslashes, backslashes and ``;`` parameters, which servers may decode or
normalise into a path outside the prefix (``/hooks/%2e%2e/admin``)."""


def masked_url(url: str) -> str:
    """``url`` as shown or logged: a password in its userinfo (the webhook's Basic
    credentials) replaced by ``********``, as link passwords are (``LinkConfig.shown``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(
        (parts.scheme, f"{user}:{MASK}@{host}", parts.path, parts.query, parts.fragment)
    )


@attrs.frozen
class AllowedURL:
    """One entry of ``security.webhook_urls``: a scheme, a host (``*.`` in front
    allows its subdomains, not the host itself), a port (default: the scheme's) and
    a path prefix that ends at a ``/`` (``https://h/hooks/`` allows ``/hooks/a``,
    not ``/hooksX``; a bare host allows every path). Below a prefix a path may not
    hold ``.``/``..`` segments, ``%2e``, ``%2f``, ``%5c``, ``\\`` or ``;``
    (:func:`path_escape`): servers may decode them out of the prefix."""

    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, entry: str) -> AllowedURL:
        parts = urlsplit(entry)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"webhook URL allow-list entry {entry!r}: not an http(s) URL")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(
                f"webhook URL allow-list entry {entry!r}: scheme, host, port and path only"
            )
        try:
            port = parts.port or _DEFAULT_PORTS[parts.scheme]
        except ValueError as exc:
            raise ValueError(f"webhook URL allow-list entry {entry!r}: {exc}") from None
        path = parts.path or "/"
        if not path.endswith("/"):
            path += "/"
        return cls(parts.scheme, parts.hostname.lower(), port, path)

    def allows(self, url: str) -> bool:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if self.host.startswith("*."):
            if not host.endswith(self.host[1:]) or host == self.host[2:]:
                return False
        elif host != self.host:
            return False
        try:
            port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)
        except ValueError:
            return False
        path = parts.path or "/"
        return (
            parts.scheme == self.scheme
            and port == self.port
            and (path + "/").startswith(self.path)
            and (self.path == "/" or path_escape(path) is None)
        )


def path_escape(path: str) -> str | None:
    """Why ``path`` could leave an allow-list prefix (None: it cannot): a ``.`` or
    ``..`` segment, or one of :data:`_ESCAPES`."""
    if "/../" in path + "/" or "/./" in path + "/":
        return "a . or .. segment"
    lowered = path.lower()
    for escape in _ESCAPES:
        if escape in lowered:
            return f"{escape!r}"
    return None


def allowed_urls(value: Any) -> list[str]:
    """list of http(s) URL prefixes (TOML array, or comma-separated); empty: any URL"""
    entries = string_list(value)
    for entry in entries:
        AllowedURL.parse(entry)
    return entries


def check_url_allowed(url: str, allowed: list[AllowedURL] | None) -> None:
    """WebhookError unless ``url`` is within the allow-list (None or empty: any URL)."""
    if allowed and not any(entry.allows(url) for entry in allowed):
        shown = masked_url(url)
        escape = path_escape(urlsplit(url).path)
        if escape is not None and any(entry.path != "/" for entry in allowed):
            raise WebhookError(
                f"url {shown!r} is not allowed: its path holds {escape}, which could leave "
                "the path prefixes of security.webhook_urls (write the path plainly)"
            )
        raise WebhookError(
            f"url {shown!r} is not allowed: security.webhook_urls lists where webhooks may point"
        )


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise WebhookError("a webhook name is 1 to 200 of A-Z a-z 0-9 _ . -")
    return name


@attrs.frozen
class WebhookSpec:
    """One webhook, as its owner defined it."""

    name: str
    owner: str
    url: str
    secret: str = attrs.field(repr=False)
    filter: str | None = None
    start: str = "latest"
    batch: int = 1
    """Events per request: 1 sends one event object, more a ``{"events": [...]}``."""
    headers: dict[str, str] = attrs.field(factory=dict)
    timeout: float = 10.0
    concurrency: int = 1
    """Requests in flight at once; 1 delivers in order."""
    retries: int = 8
    """Retries of a request after its first attempt before its events are dead letters."""
    retry_backoff: float = 1.0
    """Seconds before the first retry; doubled each time (with jitter), at most 10 min."""
    disabled: bool = False
    """Set when the endpoint answered 410 Gone; a new PUT enables it again."""

    @classmethod
    def from_dict(cls, name: str, owner: str, data: dict[str, Any]) -> WebhookSpec:
        """Validate a definition (unknown keys and bad values raise WebhookError)."""
        check_name(name)
        if not isinstance(data, dict):
            raise WebhookError("a webhook is a JSON object")
        unknown = set(data) - set(KEYS)
        if unknown:
            raise WebhookError(f"unknown webhook keys: {sorted(unknown)}; known: {list(KEYS)}")
        url = data.get("url")
        if not isinstance(url, str) or len(url) > 4096:
            raise WebhookError("url must be an http or https URL")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WebhookError("url must be an http or https URL")
        if not url.isascii() or any(ch in url for ch in " \r\n\t"):
            raise WebhookError("url: write non-ASCII characters and spaces percent-encoded")
        secret = data.get("secret")
        if secret is None:
            raise WebhookError("secret is required: a Standard Webhooks secret whsec_<base64>")
        try:
            parse_secret(secret)
        except ValueError as exc:
            raise WebhookError(str(exc)) from None
        topic_filter = data.get("filter")
        if topic_filter is not None:
            if not isinstance(topic_filter, str) or topic_filter.startswith("$share/"):
                raise WebhookError("filter must be a topic filter")
            validate_topic_filter(topic_filter)
        start = data.get("start", "latest")
        if not isinstance(start, str | int) or isinstance(start, bool):
            raise WebhookError("start must be a position")
        start = str(parse_position(start))
        headers = data.get("headers") or {}
        if not isinstance(headers, dict) or len(headers) > 50:
            raise WebhookError("headers must be an object of at most 50 strings")
        for key, value in headers.items():
            if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", key):
                raise WebhookError(f"header {key!r}: names are tokens, values strings")
            if key.lower() in RESERVED_HEADERS or "\r" in value or "\n" in value:
                raise WebhookError(f"header {key!r} cannot be set")
        return cls(
            name=name,
            owner=owner,
            url=url,
            secret=secret,
            filter=topic_filter,
            start=start,
            batch=_integer(data, "batch", 1, 1, MAX_BATCH),
            headers=dict(headers),
            timeout=_number(data, "timeout", 10.0, 0.001, MAX_TIMEOUT),
            concurrency=_integer(data, "concurrency", 1, 1, MAX_CONCURRENCY),
            retries=_integer(data, "retries", 8, 0, MAX_RETRIES),
            retry_backoff=_number(data, "retry_backoff", 1.0, 0.0, 3600.0),
        )

    def public(self) -> dict[str, Any]:
        """What the API, the console and the CLI show: every key but the secret, the
        URL's password masked (:func:`masked_url`; the stored spec keeps it)."""
        return {**self._keys(), "url": masked_url(self.url)}

    def _keys(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "owner": self.owner,
            "url": self.url,
            "filter": self.filter,
            "start": self.start,
            "batch": self.batch,
            "headers": self.headers,
            "timeout": self.timeout,
            "concurrency": self.concurrency,
            "retries": self.retries,
            "retry_backoff": self.retry_backoff,
            "disabled": self.disabled,
        }

    def stored(self) -> dict[str, Any]:
        """What the log's state keeps (the secret included: it signs every request)."""
        return {**self._keys(), "secret": self.secret}

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> WebhookSpec:
        return cls(**data)

    @property
    def cursor_name(self) -> str:
        """The webhook's durable cursor (its owner's namespace)."""
        return f"webhook:{self.name}"

    @property
    def dead_letter_topic(self) -> str:
        return f"$DLQ/webhook/{self.name}"


def parse_tables(tables: Any, where: str) -> tuple[dict[str, Any], ...]:
    """``[[webhook]]`` tables of the configuration file, checked (ValueError says which
    one is wrong); each keeps ``name`` and ``owner`` beside the webhook's keys."""
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ValueError(f"{where}: write each webhook as a [[webhook]] table")
    for index, table in enumerate(tables):
        keys = {k: v for k, v in table.items() if k not in ("name", "owner")}
        try:
            WebhookSpec.from_dict(table.get("name", ""), table.get("owner", "anonymous"), keys)
        except ValueError as exc:
            raise ValueError(f"{where} #{index + 1}: {exc}") from None
    return tuple(dict(table) for table in tables)


def shown(table: dict[str, Any]) -> dict[str, Any]:
    """A ``[[webhook]]`` table for ``tidelog config show``: the secret is not shown, a
    URL's password is masked."""
    out = dict(table)
    if "secret" in out:
        out["secret"] = "(set, not shown)"
    if isinstance(out.get("url"), str):
        out["url"] = masked_url(out["url"])
    return out
