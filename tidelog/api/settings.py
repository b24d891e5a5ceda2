"""Settings of the REST listener (``[http]`` in the configuration file)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from tidelog.api.limits import DEFAULT_MAX_BODY_BYTES


@attrs.frozen
class HTTPSettings:
    """What ``ServerConfig.http_options`` holds: the ``[http]`` options but the port
    (``ServerConfig.http_port``). ``tidelog serve`` fills every field from the
    configuration (tidelog/options.py, where ``access_log`` defaults to on); an
    embedded server built in code gets these defaults (no access log)."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """Largest request body; 413 past it."""
    access_log: bool = False
    """One log line per request (logger ``tidelog.access``)."""
    metrics_cursor_labels: bool = False
    """``/metrics`` series per cursor (cursor and owner names; each user sees their own)."""


def http_settings(value: HTTPSettings | Mapping[str, Any]) -> HTTPSettings:
    """``value`` as settings: a mapping of field names (an unknown one is a TypeError
    naming it), or settings as they are (the converter of ``ServerConfig.http_options``)."""
    if isinstance(value, HTTPSettings):
        return value
    return HTTPSettings(**value)
