"""The storage layer: a pluggable, durable event log.

``open_log(url, **options)`` picks a backend by URL scheme:

* ``lmdb:///path`` or ``lmdb://./relative`` — segmented LMDB log (the default,
  ``lmdb://./tidelog-data``);
* ``memory://`` — in memory, same semantics, no durability;
* ``sqlite:///path`` — a single SQLite file (WAL mode);
* ``kafka://host:port[,host:port...]/<log-name>`` — one partition of an Apache
  Kafka topic, shared by every tidelog node that opens the same URL.

Options (see :class:`LogOptions`) come as keyword arguments or URL query
parameters; keyword arguments win. This package imports nothing from the
engine or the protocols.
"""

from __future__ import annotations

import contextlib
import importlib
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import trio

from tidelog.concurrency import background_nursery
from tidelog.errors import InvalidStorageURLError
from tidelog.storage.base import (
    CursorState,
    EventLog,
    FsyncPolicy,
    LogOptions,
    LogState,
    LogStatistics,
    ReadResult,
    RetentionResult,
    TopicInfo,
)
from tidelog.storage.records import Event, NewEvent, Properties, Provenance

DEFAULT_URL = "lmdb://./tidelog-data"

_BACKENDS = {
    "kafka": "tidelog.storage.kafka_log:KafkaLog",
    "lmdb": "tidelog.storage.lmdb_log:LmdbLog",
    "memory": "tidelog.storage.memory:MemoryLog",
    "sqlite": "tidelog.storage.sqlite_log:SqliteLog",
}

__all__ = [
    "DEFAULT_URL",
    "CursorState",
    "Event",
    "EventLog",
    "FsyncPolicy",
    "LogOptions",
    "LogState",
    "LogStatistics",
    "NewEvent",
    "Properties",
    "Provenance",
    "ReadResult",
    "RetentionResult",
    "TopicInfo",
    "open_log",
    "parse_url",
]


def parse_url(url: str) -> tuple[str, str | None, dict[str, str]]:
    """Split a storage URL into ``(scheme, path or None, query options)``."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _BACKENDS:
        raise InvalidStorageURLError(
            f"storage URL {url!r}: unknown scheme {parts.scheme!r}; "
            f"use one of {', '.join(s + '://' for s in sorted(_BACKENDS))}"
        )
    query = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    path = urllib.parse.unquote(parts.netloc + parts.path)
    if scheme == "memory":
        return scheme, None, query
    if not path:
        raise InvalidStorageURLError(f"storage URL {url!r} names no path")
    return scheme, path, query


@contextlib.asynccontextmanager
async def open_log(url: str = DEFAULT_URL, **options: Any) -> AsyncIterator[EventLog]:
    """Open the log at ``url``; close it (flushing everything) on exit.

    Background work the log needs (interval fsync, the retention timer) runs in
    a nursery owned by this context manager.
    """
    scheme, path, query = parse_url(url)
    merged: dict[str, Any] = {**query, **options}
    log_options = LogOptions.from_mapping(merged)
    module_name, _, class_name = _BACKENDS[scheme].partition(":")
    backend = getattr(importlib.import_module(module_name), class_name)
    log: EventLog = await backend.open(path, log_options)
    try:
        async with background_nursery() as nursery:
            if log_options.retention_ms is not None or log_options.retention_bytes is not None:
                nursery.start_soon(_retention_timer, log, log_options.retention_check_ms)
            for task in log.background_tasks():
                nursery.start_soon(task)
            try:
                yield log
            finally:
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await log.aclose()


async def _retention_timer(log: EventLog, every_ms: int) -> None:
    while True:
        await trio.sleep(every_ms / 1000)
        await log.apply_retention()
