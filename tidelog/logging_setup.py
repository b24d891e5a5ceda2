"""Log output of the ``tidelog`` command: standard :mod:`logging`, text or JSON lines.

Connections set their context once (:func:`set_connection_context`: protocol,
remote address, client id); every record logged from that connection's tasks
carries it, because trio tasks inherit the context variables of the task that
started them. Text lines append it as ``[protocol=mqtt remote=... client=...]``;
JSON lines have it as fields.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

_CONTEXT: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "tidelog_connection", default=None
)
_FIELDS = ("protocol", "remote", "client_id")


def set_connection_context(**fields: str) -> None:
    """Add fields (``protocol``, ``remote``, ``client_id``) to the current task's log context."""
    current = dict(_CONTEXT.get() or {})
    current.update({k: v for k, v in fields.items() if v})
    _CONTEXT.set(current)


def connection_context() -> dict[str, str]:
    return dict(_CONTEXT.get() or {})


class ContextFilter(logging.Filter):
    """Copies the connection context onto each record (as ``record.connection``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "connection"):
            record.connection = _CONTEXT.get() or {}
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context: dict[str, str] = getattr(record, "connection", {}) or {}
        if context:
            fields = " ".join(f"{k}={context[k]}" for k in _FIELDS if k in context)
            first, sep, rest = text.partition("\n")
            text = f"{first} [{fields}]{sep}{rest}"
        return text


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context, exception."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(getattr(record, "connection", {}) or {})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure(level: str = "info", fmt: str = "text") -> None:
    """Send every record at ``level`` or above to standard error in ``fmt`` (text or json)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # hypercorn's own error logger would otherwise add a handler of its own
    logging.getLogger("hypercorn.error").propagate = True
